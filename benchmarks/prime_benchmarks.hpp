// The prime-search baselines shared by bench_pool and bench_fork_map: the limit (environment
// variable MPROC_BENCH_PRIMES, default 10,000,000) and the OpenMP schedule(dynamic) count.
#pragma once

#include "../examples/workloads.hpp"

#include <benchmark/benchmark.h>

#include <cstdint>
#include <cstdlib>
#include <utility>

namespace bench {

inline std::uint64_t prime_limit() {
    const char* env = std::getenv("MPROC_BENCH_PRIMES");
    return env ? std::strtoull(env, nullptr, 10) : 10'000'000;
}

#ifdef MPROC_HAVE_OPENMP
/// Primes below the limit, OpenMP schedule(dynamic, 1000).
inline std::uint64_t count_primes_openmp() {
    const auto n = static_cast<std::int64_t>(prime_limit());
    std::uint64_t count = 0;
#pragma omp parallel for schedule(dynamic, 1000) reduction(+ : count)
    for (std::int64_t i = 0; i < n; ++i) count += example::is_prime(static_cast<std::uint64_t>(i));
    return count;
}

/// The process's first parallel region: OpenMP creates its threads inside it, as a cold Pool
/// forks its workers inside its timing. Registered first, so it runs first; once only (later
/// regions find the threads made).
inline void Primes_OpenMP_first_region(benchmark::State& state) {
    static bool ran = false;
    for (auto _ : state) {
        if (std::exchange(ran, true)) {
            state.SkipWithError("OpenMP's threads exist already: only the first region is cold");
            break;
        }
        benchmark::DoNotOptimize(count_primes_openmp());
    }
}
BENCHMARK(Primes_OpenMP_first_region)->Unit(benchmark::kMillisecond)->UseRealTime()->Iterations(1)->Repetitions(1);

inline void Primes_OpenMP_dynamic(benchmark::State& state) {
    for (auto _ : state) benchmark::DoNotOptimize(count_primes_openmp());
}
BENCHMARK(Primes_OpenMP_dynamic)->Unit(benchmark::kMillisecond)->UseRealTime()->Iterations(1);
#endif

}  // namespace bench

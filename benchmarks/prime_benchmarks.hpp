// The prime-search baselines shared by bench_pool and bench_fork_map: the limit (environment
// variable MPROC_BENCH_PRIMES, default 10,000,000) and the OpenMP schedule(dynamic) count.
#pragma once

#include "../examples/workloads.hpp"

#include <benchmark/benchmark.h>

#include <cstdint>
#include <cstdlib>

namespace bench {

inline std::uint64_t prime_limit() {
    const char* env = std::getenv("MPROC_BENCH_PRIMES");
    return env ? std::strtoull(env, nullptr, 10) : 10'000'000;
}

#ifdef MPROC_HAVE_OPENMP
inline void Primes_OpenMP_dynamic(benchmark::State& state) {
    const auto n = static_cast<std::int64_t>(prime_limit());
    for (auto _ : state) {
        std::uint64_t count = 0;
#pragma omp parallel for schedule(dynamic, 1000) reduction(+ : count)
        for (std::int64_t i = 0; i < n; ++i) count += example::is_prime(static_cast<std::uint64_t>(i));
        benchmark::DoNotOptimize(count);
    }
}
BENCHMARK(Primes_OpenMP_dynamic)->Unit(benchmark::kMillisecond)->UseRealTime()->Iterations(1);
#endif

}  // namespace bench

// The Pool side by side with its baselines, in one binary:
//   primes below N (trial division): serial loop, Pool::map, OpenMP schedule(dynamic)
//   1,000,000 tiny items (x -> x*x): Pool::map vs a raw shared-memory data path
//   chunksize=1 map of 100,000 tiny tasks; submit+get vs a raw futex round trip
//   factorials of every n < 12,000 with GMP (bit lengths): serial vs Pool::map
// Run: ./bench_pool --benchmark_repetitions=5 --benchmark_report_aggregates_only=true
// MPROC_BENCH_PRIMES sets N (default 10,000,000).
#include "prime_benchmarks.hpp"
#include "raw_baselines.hpp"

#include <mproc/pool.hpp>

#include <benchmark/benchmark.h>

#ifdef MPROC_HAVE_GMP
#include <gmpxx.h>
#endif

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <numeric>
#include <ranges>
#include <vector>

namespace {
using example::is_prime;


mproc::Pool& warm_pool() {
    static mproc::Pool pool;
    return pool;
}

std::vector<std::int64_t> iota_input(std::size_t n) {
    std::vector<std::int64_t> v(n);
    std::iota(v.begin(), v.end(), 0);
    return v;
}
}  // namespace

static void Primes_Serial(benchmark::State& state) {
    const std::uint64_t n = bench::prime_limit();
    for (auto _ : state) {
        std::uint64_t count = 0;
        for (std::uint64_t i = 0; i < n; ++i) count += is_prime(i);
        benchmark::DoNotOptimize(count);
    }
}
BENCHMARK(Primes_Serial)->Unit(benchmark::kMillisecond)->UseRealTime()->Iterations(1);

static void Primes_Pool(benchmark::State& state) {
    const std::uint64_t n = bench::prime_limit();
    for (auto _ : state) {
        mproc::Pool pool;  // included: starting the workers is part of the cost
        auto flags = pool.map(is_prime, std::views::iota(std::uint64_t{0}, n));
        benchmark::DoNotOptimize(std::count(flags.begin(), flags.end(), true));
    }
    state.counters["workers"] = mproc::cpu_count();
}
BENCHMARK(Primes_Pool)->Unit(benchmark::kMillisecond)->UseRealTime()->Iterations(1);

// Primes_OpenMP_dynamic comes from prime_benchmarks.hpp.

static void TinyMap_1M_Pool(benchmark::State& state) {
    const auto input = iota_input(1'000'000);
    auto& pool = warm_pool();
    for (auto _ : state) {
        auto r = pool.map([](std::int64_t x) { return x * x; }, input);
        benchmark::DoNotOptimize(r.data());
    }
    state.counters["ns_per_item"] = benchmark::Counter(
        static_cast<double>(input.size()), benchmark::Counter::kIsIterationInvariantRate | benchmark::Counter::kInvert);
}
BENCHMARK(TinyMap_1M_Pool)->Unit(benchmark::kMillisecond)->UseRealTime();

static void TinyMap_1M_RawSharedMemory(benchmark::State& state) {
    const auto input = iota_input(1'000'000);
    raw::SharedMemoryMap raw_map(mproc::cpu_count(), input.size());
    const std::size_t chunk = input.size() / (mproc::cpu_count() * 64);
    for (auto _ : state) {
        auto r = raw_map.map(input, chunk);
        benchmark::DoNotOptimize(r.data());
    }
    state.counters["ns_per_item"] = benchmark::Counter(
        static_cast<double>(input.size()), benchmark::Counter::kIsIterationInvariantRate | benchmark::Counter::kInvert);
}
BENCHMARK(TinyMap_1M_RawSharedMemory)->Unit(benchmark::kMillisecond)->UseRealTime();

static void Chunksize1_100k_Pool(benchmark::State& state) {
    const auto input = iota_input(100'000);
    auto& pool = warm_pool();
    for (auto _ : state) {
        auto r = pool.map([](std::int64_t x) { return x + 1; }, input, 1);
        benchmark::DoNotOptimize(r.data());
    }
    state.counters["ns_per_task"] = benchmark::Counter(
        static_cast<double>(input.size()), benchmark::Counter::kIsIterationInvariantRate | benchmark::Counter::kInvert);
}
BENCHMARK(Chunksize1_100k_Pool)->Unit(benchmark::kMillisecond)->UseRealTime();

static void SubmitGet_RoundTrip_Pool(benchmark::State& state) {
    auto& pool = warm_pool();
    int i = 0;
    for (auto _ : state) benchmark::DoNotOptimize(pool.submit([](int x) { return x + 1; }, ++i).get());
}
BENCHMARK(SubmitGet_RoundTrip_Pool)->Unit(benchmark::kMicrosecond)->UseRealTime();

static void Raw_Futex_RoundTrip(benchmark::State& state) {
    raw::FutexPingPong ping;
    for (auto _ : state) ping.round_trip();
}
BENCHMARK(Raw_Futex_RoundTrip)->Unit(benchmark::kMicrosecond)->UseRealTime();

#ifdef MPROC_HAVE_GMP
namespace {
std::uint64_t factorial_bits(std::uint64_t n) {
    mpz_class f;
    mpz_fac_ui(f.get_mpz_t(), n);
    return mpz_sizeinbase(f.get_mpz_t(), 2);
}
}  // namespace

static void Factorials_12000_Serial(benchmark::State& state) {
    for (auto _ : state) {
        std::uint64_t total = 0;
        for (std::uint64_t n = 0; n < 12000; ++n) total += factorial_bits(n);
        benchmark::DoNotOptimize(total);
    }
}
BENCHMARK(Factorials_12000_Serial)->Unit(benchmark::kMillisecond)->UseRealTime();

static void Factorials_12000_Pool(benchmark::State& state) {
    auto& pool = warm_pool();
    for (auto _ : state) {
        auto bits = pool.map(factorial_bits, std::views::iota(std::uint64_t{0}, std::uint64_t{12000}));
        benchmark::DoNotOptimize(bits.data());
    }
}
BENCHMARK(Factorials_12000_Pool)->Unit(benchmark::kMillisecond)->UseRealTime();
#endif

BENCHMARK_MAIN();

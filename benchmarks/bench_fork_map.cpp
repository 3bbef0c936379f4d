// fork_map beside Pool::map and OpenMP, in one binary:
//   primes below N (trial division): fork_map, Pool::map, OpenMP schedule(dynamic)
//   a map that reads a 1 GiB input in 1 MiB blocks: fork_map (shared by copy-on-write, nothing
//   encoded) vs Pool::map (each block must be sent to a worker)
//   max_tasks_per_child=1: the cost of a fresh worker per task
// Run: ./bench_fork_map --benchmark_repetitions=3 --benchmark_report_aggregates_only=true
// MPROC_BENCH_PRIMES sets N (default 10,000,000).
#include "prime_benchmarks.hpp"

#include <mproc/fork_map.hpp>
#include <mproc/pool.hpp>

#include <benchmark/benchmark.h>

#include <cstdint>
#include <cstdlib>
#include <numeric>
#include <ranges>
#include <vector>

namespace {

constexpr std::size_t block_bytes = std::size_t{1} << 20;
constexpr std::size_t blocks = 1024;  // 1 GiB

const std::vector<std::uint8_t>& big_input() {
    static const std::vector<std::uint8_t> data = [] {
        std::vector<std::uint8_t> v(blocks * block_bytes);
        std::iota(v.begin(), v.end(), std::uint8_t{0});
        return v;
    }();
    return data;
}

std::uint64_t sum_block(const std::uint8_t* p) { return std::accumulate(p, p + block_bytes, std::uint64_t{0}); }
}  // namespace

static void Primes_ForkMap(benchmark::State& state) {
    const std::uint64_t n = bench::prime_limit();
    for (auto _ : state) {
        auto flags = mproc::fork_map(example::is_prime, std::views::iota(std::uint64_t{0}, n));
        benchmark::DoNotOptimize(flags.size());
    }
}
BENCHMARK(Primes_ForkMap)->Unit(benchmark::kMillisecond)->UseRealTime()->Iterations(1);

static void Primes_PoolMap(benchmark::State& state) {
    const std::uint64_t n = bench::prime_limit();
    for (auto _ : state) {
        mproc::Pool pool;
        auto flags = pool.map(example::is_prime, std::views::iota(std::uint64_t{0}, n));
        benchmark::DoNotOptimize(flags.size());
    }
}
BENCHMARK(Primes_PoolMap)->Unit(benchmark::kMillisecond)->UseRealTime()->Iterations(1);

// Primes_OpenMP_dynamic comes from prime_benchmarks.hpp.

static void BigInput_1GiB_ForkMap(benchmark::State& state) {
    const auto& data = big_input();
    for (auto _ : state) {
        auto sums = mproc::fork_map([&data](std::size_t b) { return sum_block(data.data() + b * block_bytes); },
                                    std::views::iota(std::size_t{0}, blocks));
        benchmark::DoNotOptimize(sums.data());
    }
}
BENCHMARK(BigInput_1GiB_ForkMap)->Unit(benchmark::kMillisecond)->UseRealTime()->Iterations(1);

static void BigInput_1GiB_PoolMap(benchmark::State& state) {
    const auto& data = big_input();
    std::vector<std::vector<std::uint8_t>> pieces;  // what a Pool user must hand over: the data
    for (std::size_t b = 0; b < blocks; ++b)
        pieces.emplace_back(data.begin() + static_cast<std::ptrdiff_t>(b * block_bytes),
                            data.begin() + static_cast<std::ptrdiff_t>((b + 1) * block_bytes));
    mproc::Pool pool;
    for (auto _ : state) {
        auto sums = pool.map([](const std::vector<std::uint8_t>& v) { return sum_block(v.data()); }, pieces);
        benchmark::DoNotOptimize(sums.data());
    }
}
BENCHMARK(BigInput_1GiB_PoolMap)->Unit(benchmark::kMillisecond)->UseRealTime()->Iterations(1);

static void MaxTasksPerChild1_200tasks(benchmark::State& state) {
    mproc::PoolOptions opts;
    opts.max_tasks_per_child = 1;
    mproc::Pool pool(opts);
    for (auto _ : state) {
        auto r = pool.map([](int x) { return x + 1; }, std::views::iota(0, 200), 1);
        benchmark::DoNotOptimize(r.data());
    }
    state.counters["per_task"] = benchmark::Counter(200, benchmark::Counter::kIsIterationInvariantRate | benchmark::Counter::kInvert);
}
BENCHMARK(MaxTasksPerChild1_200tasks)->Unit(benchmark::kMillisecond)->UseRealTime();

BENCHMARK_MAIN();

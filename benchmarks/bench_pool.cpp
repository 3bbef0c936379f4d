// The Pool side by side with its baselines, in one binary:
//   primes below N (trial division): serial loop, Pool::map, OpenMP schedule(dynamic)
//   1,000,000 tiny items (x -> x*x): Pool::map vs a raw shared-memory data path
//   chunksize=1 map of 100,000 tiny tasks; submit+get vs a raw futex round trip, also at 1, 2,
//   8 and 16 workers (more workers than cores on purpose: the round trip must not grow with N)
//   a cold Pool: start, one tiny map, teardown, at 2 and 16 workers, from a small caller and from
//   one with 80 MB resident (fork copies page tables in proportion), and one mapping 10 MB of
//   results (a new arena's pages), and the prime search's cold pool cut into its serial parts
//   (start, results copied after the last item, teardown); an idle pool's CPU use
//   factorials of every n < 12,000 with GMP (bit lengths): serial vs Pool::map
// Run: ./bench_pool --benchmark_repetitions=5 --benchmark_report_aggregates_only=true
// MPROC_BENCH_PRIMES sets N (default 10,000,000). Primes_OpenMP_first_region is OpenMP's cold
// run (its threads are made in it): the peer of Primes_Pool, which makes its pool in its timing.
#include "prime_benchmarks.hpp"
#include "raw_baselines.hpp"

#include <mproc/pool.hpp>

#include <benchmark/benchmark.h>

#ifdef MPROC_HAVE_GMP
#include <gmpxx.h>
#endif

#include <sys/mman.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <fstream>
#include <functional>
#include <sstream>
#include <string>
#include <thread>
#include <cstdlib>
#include <new>
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

// The same round trip on a pool of N workers, built outside the timing: with more workers than
// cores, a task that rotates through every worker finds each one cold (or descheduled).
static void SubmitGet_RoundTrip_Workers(benchmark::State& state) {
    mproc::Pool pool(static_cast<unsigned>(state.range(0)));
    int i = 0;
    for (int k = 0; k < 64; ++k) benchmark::DoNotOptimize(pool.submit([](int x) { return x + 1; }, ++i).get());
    for (auto _ : state) benchmark::DoNotOptimize(pool.submit([](int x) { return x + 1; }, ++i).get());
    state.counters["workers"] = static_cast<double>(state.range(0));
}
BENCHMARK(SubmitGet_RoundTrip_Workers)->Arg(1)->Arg(2)->Arg(8)->Arg(16)->Unit(benchmark::kMicrosecond)->UseRealTime();

namespace {
// Memory the caller holds while it starts a pool: fork copies its page tables.
std::vector<char>& resident_ballast(std::size_t megabytes) {
    static std::vector<char> ballast;
    if (ballast.size() != megabytes << 20) {
        ballast.assign(megabytes << 20, 1);  // touched: resident, not just reserved
    }
    return ballast;
}
}  // namespace

// A pool built, used for one tiny map (one item per worker) and torn down, all inside the timing:
// the fixed cost a cold Pool adds to a short program. Args: workers, caller's resident MB.
static void ColdPool_StartMapStop(benchmark::State& state) {
    const auto workers = static_cast<unsigned>(state.range(0));
    benchmark::DoNotOptimize(resident_ballast(static_cast<std::size_t>(state.range(1))).data());
    for (auto _ : state) {
        mproc::Pool pool(workers);
        auto r = pool.map([](std::int64_t x) { return x + 1; }, std::views::iota(std::int64_t{0}, std::int64_t{workers}), 1);
        benchmark::DoNotOptimize(r.data());
    }
    resident_ballast(0);
}
BENCHMARK(ColdPool_StartMapStop)->Args({2, 0})->Args({16, 0})->Args({16, 80})->Unit(benchmark::kMillisecond)->UseRealTime();

// A cold pool whose one map moves 10 MB of results (10,000,000 cheap items into bools, as the
// prime search does, without its compute): the cost of a new arena's pages, which every worker
// and the parent map for themselves. Arg: workers.
static void ColdPool_Map10MBools(benchmark::State& state) {
    const auto workers = static_cast<unsigned>(state.range(0));
    for (auto _ : state) {
        mproc::Pool pool(workers);
        auto flags = pool.map([](std::uint64_t x) { return (x & 3) == 1; }, std::views::iota(std::uint64_t{0}, std::uint64_t{10'000'000}));
        benchmark::DoNotOptimize(flags.size());
    }
}
BENCHMARK(ColdPool_Map10MBools)->Arg(2)->Arg(16)->Unit(benchmark::kMillisecond)->UseRealTime();

namespace {
// Times the workers stamp on a page shared with the parent (mapped before the pool forks them):
// when the first item started and when the last one ended, in monotonic_ns.
struct item_stamps {
    std::atomic<std::int64_t> first{INT64_MAX};
    std::atomic<std::int64_t> last{0};
};
item_stamps* shared_stamps() {
    static item_stamps* stamps = new (::mmap(nullptr, sizeof(item_stamps), PROT_READ | PROT_WRITE,
                                             MAP_SHARED | MAP_ANONYMOUS, -1, 0)) item_stamps;
    return stamps;
}
// Moves `word` to `now` if `now` is further in the direction `further` says.
template <class Further>
void keep_furthest(std::atomic<std::int64_t>& word, std::int64_t now, Further further) {
    std::int64_t seen = word.load(std::memory_order_relaxed);
    while (further(now, seen) && !word.compare_exchange_weak(seen, now)) {
    }
}
// is_prime, stamping every 256th item's start and end (a clock read for every item would add,
// by estimate, a tenth to the CPU); the last stamp is at most 255 items early.
bool stamped_is_prime(std::uint64_t x) {
    item_stamps& stamps = *shared_stamps();
    if (x % 256 == 0) keep_furthest(stamps.first, mproc::detail::monotonic_ns(), std::less<>());
    const bool prime = is_prime(x);
    if (x % 256 == 255) keep_furthest(stamps.last, mproc::detail::monotonic_ns(), std::greater<>());
    return prime;
}
}  // namespace

// Primes_Pool's cold pool cut into its serial parts, the time no worker computes: start (pool
// construction to the first item), tail (the last item's end to map's return: the results copy
// not yet done) and teardown, in ms as counters. At many cores the compute shrinks and these
// do not. Arg: workers.
static void ColdPool_Primes_SerialPath(benchmark::State& state) {
    const std::uint64_t n = bench::prime_limit();
    const auto workers = static_cast<unsigned>(state.range(0));
    item_stamps& stamps = *shared_stamps();
    for (auto _ : state) {
        stamps.first = INT64_MAX;
        stamps.last = 0;
        const std::int64_t begun = mproc::detail::monotonic_ns();
        std::int64_t returned = 0;
        {
            mproc::Pool pool(workers);
            auto flags = pool.map(stamped_is_prime, std::views::iota(std::uint64_t{0}, n));
            returned = mproc::detail::monotonic_ns();
            benchmark::DoNotOptimize(flags.size());
        }
        const std::int64_t ended = mproc::detail::monotonic_ns();
        state.counters["start_ms"] = static_cast<double>(stamps.first - begun) / 1e6;
        state.counters["tail_ms"] = static_cast<double>(returned - stamps.last) / 1e6;
        state.counters["teardown_ms"] = static_cast<double>(ended - returned) / 1e6;
        state.counters["serial_ms"] = static_cast<double>((stamps.first - begun) + (ended - stamps.last)) / 1e6;
    }
}
BENCHMARK(ColdPool_Primes_SerialPath)->Arg(2)->Arg(16)->Unit(benchmark::kMillisecond)->UseRealTime()->Iterations(1);

namespace {
// utime + stime of a process, in clock ticks (/proc/<pid>/stat fields 14 and 15).
long cpu_ticks(pid_t pid) {
    std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
    std::string line;
    std::getline(in, line);
    std::istringstream fields(line.substr(line.rfind(')') + 2));
    std::string skip;
    for (int f = 3; f < 14; ++f) fields >> skip;
    long utime = 0, stime = 0;
    fields >> utime >> stime;
    return utime + stime;
}
}  // namespace

// CPU time an idle pool of 16 workers burns in a second, just after a burst of round trips
// (workers spin briefly after a task: that spin must end). Reported as ms of CPU per second.
static void IdlePool_CpuPerSecond(benchmark::State& state) {
    mproc::Pool pool(16);
    for (auto _ : state) {
        for (int k = 0; k < 100; ++k) benchmark::DoNotOptimize(pool.submit([](int x) { return x + 1; }, k).get());
        long before = 0, after = 0;
        for (pid_t p : pool.pids()) before += cpu_ticks(p);
        std::this_thread::sleep_for(std::chrono::seconds(1));
        for (pid_t p : pool.pids()) after += cpu_ticks(p);
        state.counters["worker_cpu_ms_per_s"] = 1000.0 * static_cast<double>(after - before) / static_cast<double>(::sysconf(_SC_CLK_TCK));
    }
}
BENCHMARK(IdlePool_CpuPerSecond)->Unit(benchmark::kMillisecond)->UseRealTime()->Iterations(1);

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

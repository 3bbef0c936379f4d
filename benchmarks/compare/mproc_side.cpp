// The mproc half of benchmarks/compare: the workloads of compare.py, written with mproc, with the
// sizes compare.py passes (key=value arguments). Prints one line per workload:
// "key seconds value", the best wall-clock time of `repeat` runs and the value computed, which
// compare.py checks against Python's; "key n/a" when a workload is not built in (GMP missing).
//
//   mproc_side workers=2 repeat=3 primes=2000000 factorials=12000 squares=10000000 tiny=1000000
//              messages=100000 round_trips=10000 increments=100000 processes=100
#include "example_util.hpp"  // the examples' is_prime, sum_of_squares and Stopwatch

#include <mproc/pipe.hpp>
#include <mproc/pool.hpp>
#include <mproc/process.hpp>
#include <mproc/queue.hpp>
#include <mproc/shared.hpp>
#include <mproc/sync.hpp>

#include <fmt/core.h>

#ifdef MPROC_HAVE_GMP
#include <gmpxx.h>
#endif

#include <algorithm>
#include <charconv>
#include <cstdint>
#include <limits>
#include <map>
#include <mutex>
#include <numeric>
#include <ranges>
#include <string>
#include <string_view>
#include <vector>

namespace {
using u64 = std::uint64_t;

std::map<std::string, u64, std::less<>> sizes = {
    {"workers", 0},          {"repeat", 3},       {"primes", 2'000'000}, {"factorials", 12'000},
    {"squares", 10'000'000}, {"tiny", 1'000'000}, {"messages", 100'000}, {"round_trips", 10'000},
    {"increments", 100'000}, {"processes", 100}};

u64 sum(const std::vector<u64>& v) { return std::reduce(v.begin(), v.end(), u64{0}); }

mproc::Pool make_pool() { return mproc::Pool(static_cast<unsigned>(sizes["workers"])); }

u64 primes() {
    const std::vector<bool> flags =
        make_pool().map(example::is_prime, std::views::iota(u64{0}, sizes["primes"]));
    return static_cast<u64>(std::ranges::count(flags, true));
}

#ifdef MPROC_HAVE_GMP
u64 factorial_bits(u64 n) {
    mpz_class f;
    mpz_fac_ui(f.get_mpz_t(), n);
    return mpz_sizeinbase(f.get_mpz_t(), 2);
}
u64 factorials() {
    return sum(make_pool().map(factorial_bits, std::views::iota(u64{0}, sizes["factorials"])));
}
#endif

u64 sum_squares() {
    const u64 n = sizes["squares"];
    return sum(make_pool().map(example::sum_of_squares, std::vector<u64>{n, n + 1, n + 2, n + 3}));
}

u64 tiny_map() {
    return sum(
        make_pool().map([](u64 x) { return x * x; }, std::views::iota(u64{0}, sizes["tiny"])));
}

u64 queue() {
    const u64 n = sizes["messages"];
    mproc::Queue<u64> q;
    mproc::Process producer([q, n]() mutable {
        for (u64 i = 0; i < n; ++i) q.put(i);
    });
    producer.start();
    u64 total = 0;
    for (u64 i = 0; i < n; ++i) total += q.get();
    producer.join();
    return total;
}

u64 pipe() {
    const u64 n = sizes["round_trips"];
    auto [here, there] = mproc::Pipe<u64>();
    mproc::Process echo(
        [n](mproc::Connection<u64> c) {
            for (u64 i = 0; i < n; ++i) c.send(c.recv());
        },
        std::move(there));
    echo.start();
    u64 total = 0;
    for (u64 i = 0; i < n; ++i) {
        here.send(i);
        total += here.recv();
    }
    echo.join();
    return total;
}

u64 counter() {
    const u64 n = sizes["increments"];
    mproc::SharedValue<std::int64_t> value(0);
    std::vector<mproc::Process<void>> procs;
    for (int p = 0; p < 4; ++p)
        procs.emplace_back([value, n]() mutable {
            for (u64 i = 0; i < n; ++i) {
                std::lock_guard hold(value.get_lock());
                value.value() += 1;
            }
        });
    for (auto& p : procs) p.start();
    for (auto& p : procs) p.join();
    return static_cast<u64>(value.get());
}

u64 start_join() {
    const u64 n = sizes["processes"];
    for (u64 i = 0; i < n; ++i) {
        mproc::Process p([] {});
        p.start();
        p.join();
    }
    return n;
}

void report(std::string_view key, u64 (*workload)()) {
    double best = std::numeric_limits<double>::infinity();
    u64 value = 0;
    for (u64 r = 0; r < std::max<u64>(sizes["repeat"], 1); ++r) {
        example::Stopwatch clock;
        value = workload();
        best = std::min(best, clock.seconds());
    }
    fmt::print("{} {:.6f} {}\n", key, best, value);
    std::fflush(stdout);
}
}  // namespace

int main(int argc, char** argv) {
    for (int i = 1; i < argc; ++i) {
        const std::string_view arg = argv[i];
        const auto eq = arg.find('=');
        const auto it = sizes.find(arg.substr(0, eq));
        if (eq == std::string_view::npos || it == sizes.end() ||
            std::from_chars(arg.data() + eq + 1, arg.data() + arg.size(), it->second).ec !=
                std::errc{}) {
            fmt::print(stderr, "mproc_side: unknown argument {} (expected key=number)\n", arg);
            return 2;
        }
    }
    if (sizes["workers"] == 0) sizes["workers"] = mproc::cpu_count();

    report("primes", primes);
#ifdef MPROC_HAVE_GMP
    report("factorials", factorials);
#else
    fmt::print("factorials n/a\n");
#endif
    report("sum_squares", sum_squares);
    report("tiny_map", tiny_map);
    report("queue", queue);
    report("pipe", pipe);
    report("counter", counter);
    report("start_join", start_join);
}

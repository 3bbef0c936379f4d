// The demo: count the primes below N (10,000,000 by default) by trial division, serially and then
// over every usable core, and print both times, the speedup, the worker count and both counts.
//
// Work is split into small blocks dealt round-robin (block b goes to worker b % workers), so the
// costlier numbers near N are shared evenly. The Pool (a later part of mproc) will pull chunks
// dynamically instead; this example then moves to Pool::map.
#include <mproc/process.hpp>

#include <fmt/core.h>

#include <charconv>
#include <chrono>
#include <cstdint>
#include <string_view>
#include <vector>

namespace {
bool is_prime(std::uint64_t n) {
    if (n < 2) return false;
    if (n % 2 == 0) return n == 2;
    if (n % 3 == 0) return n == 3;
    for (std::uint64_t d = 5; d * d <= n; d += 6)
        if (n % d == 0 || n % (d + 2) == 0) return false;
    return true;
}

constexpr std::uint64_t block = 10'000;

std::uint64_t count_primes_in_blocks(std::uint64_t limit, unsigned worker, unsigned workers) {
    std::uint64_t count = 0;
    for (std::uint64_t start = worker * block; start < limit; start += workers * block)
        for (std::uint64_t n = start; n < std::min(start + block, limit); ++n) count += is_prime(n);
    return count;
}

double seconds_since(std::chrono::steady_clock::time_point t0) {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}
}  // namespace

int main(int argc, char** argv) {
    std::uint64_t limit = 10'000'000;
    for (int i = 1; i < argc; ++i) {
        std::string_view arg = argv[i];
        if (arg == "--short") limit = 1'000'000;
        else std::from_chars(arg.data(), arg.data() + arg.size(), limit);
    }
    const unsigned workers = mproc::cpu_count();

    auto t0 = std::chrono::steady_clock::now();
    const std::uint64_t serial = count_primes_in_blocks(limit, 0, 1);
    const double serial_s = seconds_since(t0);

    t0 = std::chrono::steady_clock::now();
    std::vector<mproc::Process<std::uint64_t>> procs;
    for (unsigned w = 0; w < workers; ++w) procs.emplace_back(count_primes_in_blocks, limit, w, workers);
    for (auto& p : procs) p.start();
    std::uint64_t parallel = 0;
    for (auto& p : procs) parallel += p.result();
    const double parallel_s = seconds_since(t0);

    fmt::print("primes below {}: {} (serial), {} (parallel)\n", limit, serial, parallel);
    fmt::print("serial:   {:.3f} s\n", serial_s);
    fmt::print("parallel: {:.3f} s on {} worker processes\n", parallel_s, workers);
    fmt::print("speedup:  {:.2f}x\n", serial_s / parallel_s);
    return serial == parallel ? 0 : 1;
}

// The demo: count the primes below N (10,000,000 by default) by trial division, serially and then
// with Pool::map over every usable core, and print both times, the speedup, the worker count and
// both counts. The numbers near N cost more than the small ones; the Pool's idle workers pull
// chunks as they go, so no core waits for another.
#include "example_util.hpp"

#include <mproc/pool.hpp>

#include <fmt/core.h>

#include <algorithm>
#include <charconv>
#include <cstdint>
#include <ranges>
#include <string_view>
#include <vector>

int main(int argc, char** argv) {
    std::uint64_t limit = 10'000'000;
    for (int i = 1; i < argc; ++i) {
        std::string_view arg = argv[i];
        if (arg == "--short")
            limit = 1'000'000;
        else
            std::from_chars(arg.data(), arg.data() + arg.size(), limit);
    }
    const unsigned workers = mproc::cpu_count();

    const auto numbers = std::views::iota(std::uint64_t{0}, limit);

    example::Stopwatch clock;
    std::uint64_t serial = 0;
    for (std::uint64_t n : numbers) serial += example::is_prime(n);
    const double serial_s = clock.lap();

    mproc::Pool pool;  // one worker per usable core
    const std::vector<bool> flags = pool.map(example::is_prime, numbers);
    const auto parallel = static_cast<std::uint64_t>(std::count(flags.begin(), flags.end(), true));
    const double parallel_s = clock.seconds();

    fmt::print("primes below {}: {} (serial), {} (parallel)\n", limit, serial, parallel);
    fmt::print("serial:   {:.3f} s\n", serial_s);
    fmt::print("parallel: {:.3f} s on {} worker processes\n", parallel_s, workers);
    fmt::print("speedup:  {:.2f}x\n", serial_s / parallel_s);
    return serial == parallel ? 0 : 1;
}

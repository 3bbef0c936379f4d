// Primes from 1 to 1,000,000, three ways: serially; on Pool(4) with the tutorial's manual
// chunks (four ranges, one task each, counted in the worker); and with Pool::map over every
// number, letting the pool cut the chunks. map balances uneven work by itself (idle workers pull
// the next chunk), but every number travels to a worker and every flag comes back; the manual
// ranges send two numbers per task and get one count back, which wins when each item is as
// cheap as a trial division below 10^6.
#include "example_util.hpp"

#include <mproc/pool.hpp>

#include <algorithm>
#include <cstdint>
#include <numeric>
#include <ranges>
#include <utility>
#include <vector>

namespace {
// Primes in [lo, hi).
std::uint64_t count_primes(std::uint64_t lo, std::uint64_t hi) {
    std::uint64_t count = 0;
    for (std::uint64_t n = lo; n < hi; ++n) count += example::is_prime(n);
    return count;
}
}  // namespace

int main(int argc, char** argv) {
    const std::uint64_t limit = example::is_short(argc, argv) ? 200'000 : 1'000'000;
    constexpr std::uint64_t chunks = 4;

    example::Stopwatch clock;
    const std::uint64_t serial = count_primes(1, limit + 1);
    const double serial_s = clock.lap();

    mproc::Pool pool(4);
    const double start_s = clock.lap();

    std::vector<std::pair<std::uint64_t, std::uint64_t>> ranges;
    for (std::uint64_t c = 0; c < chunks; ++c)
        ranges.emplace_back(1 + c * limit / chunks, 1 + (c + 1) * limit / chunks);
    const std::vector<std::uint64_t> counts = pool.starmap(count_primes, ranges);
    const std::uint64_t manual = std::reduce(counts.begin(), counts.end(), std::uint64_t{0});
    const double manual_s = clock.lap();

    const std::vector<bool> flags =
        pool.map(example::is_prime, std::views::iota(std::uint64_t{1}, limit + 1));
    const auto mapped = static_cast<std::uint64_t>(std::ranges::count(flags, true));
    const double map_s = clock.lap();

    fmt::print("primes in 1..{}: {}\n", limit, serial);
    fmt::print("serial:                 {:.3f} s\n", serial_s);
    fmt::print("Pool(4) started in      {:.3f} s\n", start_s);
    fmt::print("4 manual chunks:        {:.3f} s  ({:.2f}x)\n", manual_s, serial_s / manual_s);
    fmt::print("map's own chunks:       {:.3f} s  ({:.2f}x)\n", map_s, serial_s / map_s);
    return manual == serial && mapped == serial ? 0 : 1;
}

// Factorials of 12,000 numbers with GMP, serially and on Pool(5), with times and the speedup.
// A worker's result must cross back to the parent by value, so each task returns the bit length
// of its factorial rather than the number; the digit count of the largest is computed once more
// in the parent.
#include "example_util.hpp"

#include <mproc/pool.hpp>

#include <gmpxx.h>

#include <cstdint>
#include <numeric>
#include <ranges>
#include <vector>

namespace {
mpz_class factorial(unsigned long n) {
    mpz_class f;
    mpz_fac_ui(f.get_mpz_t(), n);
    return f;
}

std::uint64_t factorial_bits(unsigned long n) {
    return mpz_sizeinbase(factorial(n).get_mpz_t(), 2);
}
}  // namespace

int main(int argc, char** argv) {
    const unsigned long count = example::is_short(argc, argv) ? 2'000 : 12'000;
    const auto numbers = std::views::iota(1UL, count + 1);

    example::Stopwatch clock;
    std::vector<std::uint64_t> serial;
    for (unsigned long n : numbers) serial.push_back(factorial_bits(n));
    const double serial_s = clock.lap();

    const std::vector<std::uint64_t> parallel = mproc::Pool(5).map(factorial_bits, numbers);
    const double parallel_s = clock.lap();

    const std::size_t digits = factorial(count).get_str().size();
    fmt::print("factorials of 1..{}: {} bits in all\n", count,
               std::reduce(parallel.begin(), parallel.end(), std::uint64_t{0}));
    fmt::print("{}! has {} decimal digits\n", count, digits);
    fmt::print("serial:  {:.3f} s\n", serial_s);
    fmt::print("Pool(5): {:.3f} s\n", parallel_s);
    fmt::print("speedup: {:.2f}x\n", serial_s / parallel_s);
    return parallel == serial ? 0 : 1;
}

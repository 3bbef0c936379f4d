// The two workloads the tutorials time, shared by the examples, the benchmarks and the
// comparison with Python: trial-division primes and sums of squares. No dependencies.
#pragma once

#include <cstdint>

namespace example {

/// Trial division by 2, 3 and 6k +- 1: the tutorials' CPU-bound test.
[[nodiscard]] inline bool is_prime(std::uint64_t n) {
    if (n < 2) return false;
    if (n % 2 == 0) return n == 2;
    if (n % 3 == 0) return n == 3;
    for (std::uint64_t d = 5; d * d <= n; d += 6)
        if (n % d == 0 || n % (d + 2) == 0) return false;
    return true;
}

/// sum(i * i for i in range(n)), modulo 2^64.
[[nodiscard]] inline std::uint64_t sum_of_squares(std::uint64_t n) {
    std::uint64_t total = 0;
    for (std::uint64_t i = 0; i < n; ++i) total += i * i;
    return total;
}

}  // namespace example

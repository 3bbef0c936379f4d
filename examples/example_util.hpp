// What several examples share: the --short switch, a stopwatch, printing that keeps the order of
// lines from several processes, and the two workloads the tutorials time (trial-division primes
// and sums of squares).
#pragma once

#include <fmt/core.h>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <string_view>
#include <utility>

namespace example {

/// True when the program was started with --short (the quick run CI uses).
[[nodiscard]] inline bool is_short(int argc, char** argv) {
    for (int i = 1; i < argc; ++i)
        if (std::string_view(argv[i]) == "--short") return true;
    return false;
}

/// Wall-clock seconds since it was made (or since the last lap()).
class Stopwatch {
public:
    [[nodiscard]] double seconds() const {
        return std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
    }
    /// The seconds so far, and starts again from zero.
    double lap() {
        const double s = seconds();
        start_ = std::chrono::steady_clock::now();
        return s;
    }

private:
    std::chrono::steady_clock::time_point start_ = std::chrono::steady_clock::now();
};

/// fmt::print, then a flush: a child's stdout is a buffered pipe under ctest or `| less`, and
/// without the flush its lines would all come out when it exits, out of order with the others.
template <class... Args>
void say(fmt::format_string<Args...> format, Args&&... args) {
    fmt::print(format, std::forward<Args>(args)...);
    std::fflush(stdout);
}

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

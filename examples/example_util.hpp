// What several examples share: the --short switch, a stopwatch, printing that keeps the order of
// lines from several processes, and (from workloads.hpp) the two workloads the tutorials time.
#pragma once

#include "workloads.hpp"

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

}  // namespace example

// Four jobs of sum(i*i for i < 10^7): serially, then one process each, with both times.
#include <mproc/process.hpp>

#include <fmt/core.h>

#include <chrono>
#include <cstdint>
#include <string_view>
#include <vector>

namespace {
std::uint64_t sum_of_squares(std::uint64_t n) {
    std::uint64_t total = 0;
    for (std::uint64_t i = 0; i < n; ++i) total += i * i;
    return total;
}

double seconds_since(std::chrono::steady_clock::time_point t0) {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}
}  // namespace

int main(int argc, char** argv) {
    const bool is_short = argc > 1 && std::string_view(argv[1]) == "--short";
    const std::uint64_t n = is_short ? 1'000'000 : 10'000'000;
    constexpr int jobs = 4;

    auto t0 = std::chrono::steady_clock::now();
    std::uint64_t serial = 0;
    for (int j = 0; j < jobs; ++j) serial += sum_of_squares(n + static_cast<std::uint64_t>(j));
    const double serial_s = seconds_since(t0);

    t0 = std::chrono::steady_clock::now();
    std::vector<mproc::Process<std::uint64_t>> procs;
    for (int j = 0; j < jobs; ++j)
        procs.emplace_back(sum_of_squares, n + static_cast<std::uint64_t>(j));
    for (auto& p : procs) p.start();
    std::uint64_t parallel = 0;
    for (auto& p : procs) parallel += p.result();
    const double parallel_s = seconds_since(t0);

    fmt::print("serial:    {:.3f} s  (sum {})\n", serial_s, serial);
    fmt::print("processes: {:.3f} s  (sum {})\n", parallel_s, parallel);
    return serial == parallel ? 0 : 1;
}

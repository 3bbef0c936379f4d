// Four jobs of sum(i*i for i < 10^7), the four ways the tutorial times them: serially, one
// Process per job, Pool(2).map, and joblib's `Parallel(n_jobs=4)(delayed(task)(i, n) for i in
// range(4))` as Pool(4).starmap over (i, n) pairs.
#include "example_util.hpp"

#include <mproc/pool.hpp>
#include <mproc/process.hpp>

#include <cstdint>
#include <numeric>
#include <ranges>
#include <tuple>
#include <vector>

namespace {
constexpr int jobs = 4;

// joblib's task(i, n): job i sums the squares below n + i.
std::uint64_t task(int i, std::uint64_t n) {
    return example::sum_of_squares(n + static_cast<std::uint64_t>(i));
}

std::uint64_t total(const std::vector<std::uint64_t>& sums) {
    return std::reduce(sums.begin(), sums.end(), std::uint64_t{0});
}
}  // namespace

int main(int argc, char** argv) {
    const std::uint64_t n = example::is_short(argc, argv) ? 1'000'000 : 10'000'000;
    std::vector<std::uint64_t> limits;
    for (int i = 0; i < jobs; ++i) limits.push_back(n + static_cast<std::uint64_t>(i));

    example::Stopwatch clock;
    std::uint64_t serial = 0;
    for (std::uint64_t limit : limits) serial += example::sum_of_squares(limit);
    const double serial_s = clock.lap();

    std::vector<mproc::Process<std::uint64_t>> procs;
    for (std::uint64_t limit : limits) procs.emplace_back(example::sum_of_squares, limit);
    for (auto& p : procs) p.start();
    std::uint64_t by_process = 0;
    for (auto& p : procs) by_process += p.result();
    const double process_s = clock.lap();

    const std::uint64_t by_pool = total(mproc::Pool(2).map(example::sum_of_squares, limits));
    const double pool_s = clock.lap();

    std::vector<std::tuple<int, std::uint64_t>> calls;  // delayed(task)(i, n) for i in range(4)
    for (int i = 0; i < jobs; ++i) calls.emplace_back(i, n);
    const std::uint64_t by_starmap = total(mproc::Pool(4).starmap(task, calls));
    const double starmap_s = clock.lap();

    fmt::print("serial:                {:.3f} s  (sum {})\n", serial_s, serial);
    fmt::print("one Process per job:   {:.3f} s  (sum {})\n", process_s, by_process);
    fmt::print("Pool(2).map:           {:.3f} s  (sum {})\n", pool_s, by_pool);
    fmt::print("Pool(4).starmap(i, n): {:.3f} s  (sum {})\n", starmap_s, by_starmap);
    const bool same = by_process == serial && by_pool == serial && by_starmap == serial;
    return same ? 0 : 1;
}

// Threads or processes? Five tasks that wait (sleep, as I/O does) and five that compute, each
// set run on five std::threads and on five mproc::Processes.
//
// Python's lesson is that threads win for waiting and processes win for computing, because the
// GIL lets one Python thread compute at a time. C++ threads have no GIL: they compute in
// parallel too. What processes cost is the fork; what they buy is isolation (a crash, a leak or
// a global in one task cannot touch the others).
#include "example_util.hpp"

#include <mproc/process.hpp>

#include <chrono>
#include <cstdint>
#include <thread>
#include <vector>

namespace {
constexpr int tasks = 5;

template <class Task>
double with_threads(Task task) {
    example::Stopwatch clock;
    std::vector<std::thread> threads;
    for (int i = 0; i < tasks; ++i) threads.emplace_back(task);
    for (auto& t : threads) t.join();
    return clock.seconds();
}

template <class Task>
double with_processes(Task task) {
    example::Stopwatch clock;
    std::vector<mproc::Process<void>> procs;
    for (int i = 0; i < tasks; ++i) procs.emplace_back(task);
    for (auto& p : procs) p.start();
    for (auto& p : procs) p.join();
    return clock.seconds();
}
}  // namespace

int main(int argc, char** argv) {
    const bool is_short = example::is_short(argc, argv);
    const auto nap = std::chrono::milliseconds(is_short ? 100 : 1000);
    const std::uint64_t n = is_short ? 2'000'000 : 20'000'000;
    auto wait = [nap] { std::this_thread::sleep_for(nap); };
    auto compute = [n] {
        volatile std::uint64_t sink = example::sum_of_squares(n);  // keep the work
        (void)sink;
    };

    example::Stopwatch clock;
    for (int i = 0; i < tasks; ++i) compute();
    const double serial_compute = clock.seconds();

    fmt::print("{} tasks of waiting {} ms:\n", tasks, nap.count());
    fmt::print("  threads:   {:.3f} s\n", with_threads(wait));
    fmt::print("  processes: {:.3f} s\n", with_processes(wait));
    fmt::print("{} tasks of computing (one takes {:.3f} s):\n", tasks, serial_compute / tasks);
    fmt::print("  serial:    {:.3f} s\n", serial_compute);
    fmt::print("  threads:   {:.3f} s\n", with_threads(compute));
    fmt::print("  processes: {:.3f} s\n", with_processes(compute));
}

// A heartbeat process prints every second while the parent computes; the parent stops it when
// its work is done.
#include <mproc/process.hpp>

#include <fmt/core.h>

#include <chrono>
#include <cmath>
#include <string_view>
#include <thread>

int main(int argc, char** argv) {
    const bool is_short = argc > 1 && std::string_view(argv[1]) == "--short";
    mproc::Process heartbeat([] {
        for (int beat = 1;; ++beat) {
            fmt::print("heartbeat {}\n", beat);
            std::fflush(stdout);
            std::this_thread::sleep_for(std::chrono::seconds(1));
        }
    });
    heartbeat.start();

    const auto work_until = std::chrono::steady_clock::now() + std::chrono::seconds(is_short ? 2 : 4);
    double x = 0;
    long rounds = 0;
    while (std::chrono::steady_clock::now() < work_until) {
        for (int i = 1; i < 100'000; ++i) x += std::sqrt(static_cast<double>(i));
        ++rounds;
    }
    fmt::print("work done: {} rounds (checksum {:.0f})\n", rounds, x);
    heartbeat.terminate();
    heartbeat.join();
    fmt::print("heartbeat stopped (exitcode {})\n", heartbeat.exitcode().value_or(0));
}

// The heartbeat as two processes: one works, the other prints a heartbeat every second until the
// worker is done (an Event tells it so), and the parent joins both.
#include "example_util.hpp"

#include <mproc/process.hpp>
#include <mproc/sync.hpp>

#include <chrono>
#include <cmath>

int main(int argc, char** argv) {
    const auto work_for = std::chrono::seconds(example::is_short(argc, argv) ? 2 : 4);
    mproc::Event done;

    mproc::Process heartbeat([done]() mutable {
        for (int beat = 1; !done.wait_for(std::chrono::seconds(1)); ++beat)
            example::say("heartbeat {}\n", beat);
        example::say("heartbeat: the worker is done\n");
    });
    mproc::Process worker([done, work_for]() mutable {
        const auto until = std::chrono::steady_clock::now() + work_for;
        double x = 0;
        long rounds = 0;
        while (std::chrono::steady_clock::now() < until) {
            for (int i = 1; i < 100'000; ++i) x += std::sqrt(static_cast<double>(i));
            ++rounds;
        }
        example::say("worker: {} rounds (checksum {:.0f})\n", rounds, x);
        done.set();
        return rounds;
    });
    heartbeat.start();
    worker.start();
    const long rounds = worker.result();
    heartbeat.join();
    fmt::print("both joined; exit codes {} and {}\n", heartbeat.exitcode().value_or(-1),
               worker.exitcode().value_or(-1));
    return rounds > 0 ? 0 : 1;
}

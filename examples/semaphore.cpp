// Python's `Semaphore(2)` guarding a section that six workers enter: each prints when it enters
// and leaves, and exactly two are inside at the busiest moment (never more; and the first one in
// waits for a second, so a semaphore that admitted one at a time would fail the run too).
#include "example_util.hpp"

#include <mproc/process.hpp>
#include <mproc/shared.hpp>
#include <mproc/sync.hpp>

#include <algorithm>
#include <chrono>
#include <mutex>
#include <thread>
#include <vector>

int main(int argc, char** argv) {
    const auto stay = std::chrono::milliseconds(example::is_short(argc, argv) ? 50 : 500);
    mproc::Semaphore slots(2);
    mproc::SharedValue<int> inside(0);
    mproc::SharedValue<int> most(0);     // the most workers seen inside at once
    mproc::SharedValue<int> entered(0);  // how many have come in so far

    std::vector<mproc::Process<void>> workers;
    for (int id = 0; id < 6; ++id)
        workers.emplace_back([=]() mutable {
            std::lock_guard hold(slots);  // Python: `with sem:`
            const int now = inside.fetch_add(1) + 1;
            {
                std::lock_guard g(most.get_lock());
                most.value() = std::max(most.value(), now);
            }
            example::say("worker {} enters ({} inside)\n", id, now);
            if (entered.fetch_add(1) == 0) {  // the first one in stays until a second joins it
                const auto give_up = std::chrono::steady_clock::now() + std::chrono::seconds(10);
                while (inside.get() < 2 && std::chrono::steady_clock::now() < give_up)
                    std::this_thread::sleep_for(std::chrono::milliseconds(1));
            }
            std::this_thread::sleep_for(stay);
            inside.fetch_sub(1);
            example::say("worker {} leaves\n", id);
        });
    for (auto& w : workers) w.start();
    for (auto& w : workers) w.join();
    fmt::print("at most {} workers were inside at once\n", most.get());
    return most.get() == 2 ? 0 : 1;
}

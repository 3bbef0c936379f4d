// Python's `Value('i', 0)` with its lock: four processes add 1 a hundred thousand times each.
// With the lock the total is exactly 400,000; without it, increments that overlap are lost.
#include "example_util.hpp"

#include <mproc/process.hpp>
#include <mproc/shared.hpp>
#include <mproc/sync.hpp>

#include <mutex>
#include <vector>

namespace {
constexpr int processes = 4;
constexpr int increments = 100'000;

// Runs `add_one` increments times in each of four processes, started together.
template <class AddOne>
int count_with(AddOne add_one) {
    mproc::SharedValue<int> counter(0);
    mproc::Barrier start_line(processes);  // so that the four really overlap
    std::vector<mproc::Process<void>> workers;
    for (int p = 0; p < processes; ++p)
        workers.emplace_back([counter, start_line, add_one]() mutable {
            start_line.wait();
            for (int i = 0; i < increments; ++i) add_one(counter);
        });
    for (auto& w : workers) w.start();
    for (auto& w : workers) w.join();
    return counter.get();
}
}  // namespace

int main() {
    const int locked = count_with([](mproc::SharedValue<int>& c) {
        std::lock_guard hold(c.get_lock());  // Python: `with counter.get_lock():`
        c.value() += 1;
    });
    fmt::print("with the lock:    {}\n", locked);

    // Python's unlocked `counter.value += 1` reads, adds and writes back as separate steps; the
    // atomic load and store spell out those steps (a plain `c.value() += 1` loop may be folded
    // by the optimizer into one addition of 100,000, which would hide the race).
    const int unlocked = count_with([](mproc::SharedValue<int>& c) {
        c.store(c.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
    });
    fmt::print("without the lock: {} ({} updates lost)\n", unlocked,
               processes * increments - unlocked);

    // No lock is needed for an atomic read-modify-write.
    const int atomic = count_with([](mproc::SharedValue<int>& c) { c.fetch_add(1); });
    fmt::print("with fetch_add:   {}\n", atomic);
    return locked == processes * increments && atomic == processes * increments ? 0 : 1;
}

// Python's `ProcessPoolExecutor().map(handler, range(4))`: four tasks on a pool of processes,
// results printed in input order. Later tasks finish first here (they sleep less), yet map
// returns the results in the order of the inputs, as Python's executor does.
#include <mproc/pool.hpp>

#include <fmt/core.h>

#include <chrono>
#include <ranges>
#include <string>
#include <thread>

#include <unistd.h>

namespace {
std::string handler(int i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(40 * (4 - i)));
    return fmt::format("worker {} done (pid {})", i, ::getpid());
}
}  // namespace

int main() {
    mproc::Pool pool;  // like ProcessPoolExecutor(): one worker per usable core
    for (const std::string& line : pool.map(handler, std::views::iota(0, 4)))
        fmt::print("{}\n", line);
}

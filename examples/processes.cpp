// Four processes each print their id and pid; the parent joins them and prints "all done".
#include <mproc/process.hpp>

#include <fmt/core.h>

#include <unistd.h>

#include <vector>

int main() {
    std::vector<mproc::Process<void>> workers;
    for (int id = 0; id < 4; ++id)
        workers.emplace_back([id] { fmt::print("process {} has pid {}\n", id, ::getpid()); });
    for (auto& w : workers) w.start();
    for (auto& w : workers) w.join();
    fmt::print("all done\n");
}

// A two-way Pipe: two processes exchange greetings.
#include <mproc/pipe.hpp>
#include <mproc/process.hpp>

#include <fmt/core.h>

#include <unistd.h>

#include <string>

int main() {
    auto [left, right] = mproc::Pipe<std::string>();
    mproc::Process child(
        [](mproc::Connection<std::string> end) {
            fmt::print("child {} got: {}\n", ::getpid(), end.recv());
            end.send(fmt::format("hello from the child ({})", ::getpid()));
        },
        std::move(right));
    child.start();
    left.send(fmt::format("hello from the parent ({})", ::getpid()));
    fmt::print("parent {} got: {}\n", ::getpid(), left.recv());
    child.join();
}

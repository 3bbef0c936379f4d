// The README's quick start, kept compiling and running by CI.
#include <mproc/mproc.hpp>
#include <cstdio>
#include <stdexcept>

int main() {
    mproc::Process square([](int n) { return n * n; }, 12);   // mproc::Process<int>
    square.start();                                           // fork: runs in a child
    std::printf("12 * 12 = %d\n", square.result());          // joins, returns the child's value

    mproc::Process fails([]() -> int { throw std::invalid_argument("no such input"); });
    fails.start();
    try { (void)fails.result(); }
    catch (const mproc::RemoteError& e) { std::printf("child raised %s\n", e.what()); }

    auto [reader, writer] = mproc::Pipe<std::string>(/*duplex=*/false);
    mproc::Process sender([](mproc::Connection<std::string> out) { out.send("hello"); },
                          std::move(writer));
    sender.start();
    std::printf("got %s\n", reader.recv().c_str());
    sender.join();
}

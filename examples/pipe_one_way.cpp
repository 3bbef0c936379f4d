// A one-way Pipe: the sender sends four strings, the receiver prints until end of stream.
#include <mproc/pipe.hpp>
#include <mproc/process.hpp>

#include <fmt/core.h>

#include <string>

int main() {
    auto [reader, writer] = mproc::Pipe<std::string>(/*duplex=*/false);
    mproc::Process sender(
        [](mproc::Connection<std::string> out) {
            for (const char* word : {"one", "two", "three", "four"}) out.send(word);
        },
        std::move(writer));  // the parent's copy closes when the child starts
    sender.start();
    try {
        for (;;) fmt::print("received: {}\n", reader.recv());
    } catch (const mproc::EndOfStream&) {
        fmt::print("end of stream\n");
    }
    sender.join();
}

// Uses Process and Pipe through the umbrella header; exits 0 when both work.
#include <mproc/mproc.hpp>

#include <cstdio>
#include <string>

int main() {
    mproc::Process p([](int a, int b) { return a * b; }, 6, 7);
    p.start();
    auto [reader, writer] = mproc::Pipe<std::string>(false);
    writer.send("consumer ok");
    const int product = p.result();
    const std::string text = reader.recv();
    std::printf("%s: %d\n", text.c_str(), product);
    return product == 42 && text == "consumer ok" ? 0 : 1;
}

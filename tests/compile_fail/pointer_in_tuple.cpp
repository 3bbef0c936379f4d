// Must not compile: a pointer inside a tuple, reached through a Decoder.
#include <mproc/codec.hpp>

#include <tuple>

int main() {
    mproc::Decoder d(std::span<const std::byte>{});
    auto t = mproc::decode<std::tuple<int, const char*>>(d);
    return std::get<0>(t);
}

// Must not compile: a std::function cannot cross a process boundary.
#include <mproc/codec.hpp>

#include <functional>

int main() {
    std::function<int()> f = [] { return 1; };
    auto bytes = mproc::encode(f);
    return static_cast<int>(bytes.size());
}

// Must not compile: a smart pointer inside a container is refused, naming the pointer.
#include <mproc/codec.hpp>

#include <memory>
#include <vector>

int main() {
    std::vector<std::unique_ptr<int>> v;
    auto bytes = mproc::encode(v);
    return static_cast<int>(bytes.size());
}

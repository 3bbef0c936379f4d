// Must not compile: a struct that is not trivially copyable (it holds a std::string) and has no
// serialize has no encoding; the error says what to add.
#include <mproc/codec.hpp>

#include <string>

struct Named {
    std::string name;
    int id;
};

int main() {
    auto value = mproc::decode<Named>(std::span<const std::byte>{});
    return value.id;
}

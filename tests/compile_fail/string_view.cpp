// Must not compile: a std::string_view member named in serialize is a non-owning view.
#include <mproc/codec.hpp>

#include <string_view>

struct Message {
    std::string_view text;
    template <class Ar>
    void serialize(Ar& ar) {
        ar(text);
    }
};

int main() {
    auto bytes = mproc::encode(Message{});
    return static_cast<int>(bytes.size());
}

// libFuzzer target for mproc::codec: the first byte picks a type, the rest is decoded as that
// type. Decoding may fail only with mproc::DecodeError; a value that does decode must survive
// encode -> decode unchanged. Sanitizers (address, undefined) catch everything else.
#include <mproc/codec.hpp>

#include <array>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <deque>
#include <list>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <tuple>
#include <unordered_map>
#include <variant>
#include <vector>

namespace {

enum class Flag : bool { off, on };
enum class Color : std::uint16_t { red, green };

struct Point {  // bitwise
    std::int32_t x;
    std::int32_t y;
    bool operator==(const Point&) const = default;
};

struct Node {  // recursive, member serialize
    std::int32_t value = 0;
    std::optional<std::string> label;
    std::vector<Node> children;
    template <class Ar>
    void serialize(Ar& ar) {
        ar(value, label, children);
    }
    bool operator==(const Node&) const = default;
};

struct Empty {
    template <class Ar>
    void serialize(Ar&) {}
    bool operator==(const Empty&) const = default;
};

using T0 = std::map<std::string, std::vector<std::optional<std::variant<int, std::string, bool>>>>;
using T1 = std::tuple<std::vector<bool>, std::set<int>, std::unordered_map<std::string, std::int64_t>,
                      std::deque<std::string>>;
using T2 = std::vector<Node>;
using T3 = std::vector<std::variant<std::monostate, std::tuple<>, std::list<std::int16_t>,
                                    std::array<std::string, 2>, Empty>>;
using T4 = std::pair<std::vector<double>, std::map<int, std::vector<Point>>>;
using T5 = std::tuple<Flag, Color, std::chrono::milliseconds, std::optional<std::set<std::tuple<>>>,
                      std::array<Flag, 3>, std::u16string>;
using T6 = std::list<std::map<std::int8_t, std::vector<std::vector<std::uint8_t>>>>;

[[noreturn]] void fail(const char* what) {
    std::fprintf(stderr, "fuzz_decode: %s\n", what);
    std::abort();
}

template <class T>
void check(std::span<const std::byte> bytes) {
    T value;
    try {
        value = mproc::decode<T>(bytes);
    } catch (const mproc::DecodeError&) {
        return;  // the only acceptable failure
    }
    // Re-encoding a decoded value must give bytes that decode to the same value. Values are
    // compared through their encodings: NaN != NaN would make == reject a faithful round trip.
    const auto again = mproc::encode(value);
    T copy;
    try {
        copy = mproc::decode<T>(again);
    } catch (const mproc::DecodeError&) {
        fail("the encoding of a decoded value does not decode");
    }
    if constexpr (requires { value == copy; } && !std::is_same_v<T, T4>) {
        if (!(copy == value)) fail("round trip changed the value");
    } else {
        if (mproc::encode(copy) != again) fail("round trip changed the encoding");
    }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    if (size == 0) return 0;
    const std::span<const std::byte> rest(reinterpret_cast<const std::byte*>(data) + 1, size - 1);
    switch (data[0] % 7) {
    case 0: check<T0>(rest); break;
    case 1: check<T1>(rest); break;
    case 2: check<T2>(rest); break;
    case 3: check<T3>(rest); break;
    case 4: check<T4>(rest); break;
    case 5: check<T5>(rest); break;
    default: check<T6>(rest); break;
    }
    return 0;
}

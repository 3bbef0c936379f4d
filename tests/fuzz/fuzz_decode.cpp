// libFuzzer target for mproc::codec: the first byte picks a type, the rest is decoded as that
// type. Decoding may fail only with mproc::DecodeError; a value that does decode must survive
// encode -> decode unchanged. Sanitizers (address, undefined) catch everything else, and
// libFuzzer's -malloc_limit_mb (scripts/fuzz.sh) catches an allocation far beyond the message.
// With MPROC_FUZZ_WRITE_SEEDS=<dir> it writes a seed corpus instead (valid encodings of each
// type, nested values included) and exits.
#include <mproc/codec.hpp>

#include <array>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <limits>
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

template <class T>
void write_seed(const char* dir, unsigned type, int& counter, const T& value) {
    const auto bytes = mproc::encode(value);
    // A seed that did not decode would only teach the fuzzer the DecodeError path.
    try {
        (void)mproc::decode<T>(bytes);
    } catch (const mproc::DecodeError&) {
        fail("a seed does not decode");
    }
    std::ofstream out(std::string(dir) + "/seed-" + std::to_string(type) + "-" + std::to_string(counter++),
                      std::ios::binary);
    const char tag = static_cast<char>(type);
    out.write(&tag, 1);
    out.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
    if (!out) fail("cannot write a seed");
}

void write_seeds(const char* dir) {
    int n = 0;
    write_seed(dir, 0, n, T0{});
    write_seed(dir, 0, n, T0{{"a", {std::nullopt, 1, std::string("two"), true}}, {"", {}}});
    write_seed(dir, 1, n, T1{});
    write_seed(dir, 1, n, T1{{true, false, true}, {-1, 0, 7}, {{"k", -5}, {"long key", 1ll << 40}}, {"x", ""}});
    write_seed(dir, 2, n, T2{});
    Node leaf{3, "leaf", {}};
    Node middle{2, std::nullopt, {leaf, leaf}};
    write_seed(dir, 2, n, T2{Node{1, "root", {middle, leaf}}, leaf});
    write_seed(dir, 3, n, T3{std::monostate{}, std::tuple<>{}, std::list<std::int16_t>{1, -2, 3},
                             std::array<std::string, 2>{"p", "q"}, Empty{}});
    write_seed(dir, 4, n, T4{{1.5, -0.0, std::numeric_limits<double>::infinity()}, {{1, {{1, 2}, {3, 4}}}, {-9, {}}}});
    write_seed(dir, 5, n, T5{Flag::on, Color::green, std::chrono::milliseconds(1234),
                             std::set<std::tuple<>>{std::tuple<>{}}, {Flag::off, Flag::on, Flag::off}, u"utf-16"});
    write_seed(dir, 6, n, T6{{{1, {{1, 2, 3}, {}}}, {-1, {{255}}}}, {}});
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
    if (const char* dir = std::getenv("MPROC_FUZZ_WRITE_SEEDS")) {
        write_seeds(dir);
        std::exit(0);
    }
    return 0;
}

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

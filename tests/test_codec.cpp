// Tests of mproc::codec: round trips of every supported type, user types, the wire rules, and
// hostile input (truncation, byte flips, huge counts, bad tags, repeated keys).
#include <mproc/codec.hpp>

#include <catch2/catch.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <limits>
#include <list>
#include <map>
#include <new>
#include <optional>
#include <random>
#include <set>
#include <string>
#include <tuple>
#include <unordered_map>
#include <unordered_set>
#include <variant>
#include <vector>

// ---- allocation watch: the largest single allocation while a test looks -------------------
// Replacing the global operator new clashes with the sanitizers' own (ASan reports
// alloc-dealloc mismatches), so sanitizer builds skip the watch; ASan aborts on a huge
// allocation by itself there.

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define MPROC_TEST_WATCH_ALLOCATIONS 0
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define MPROC_TEST_WATCH_ALLOCATIONS 0
#endif
#endif
#ifndef MPROC_TEST_WATCH_ALLOCATIONS
#define MPROC_TEST_WATCH_ALLOCATIONS 1
#endif

namespace {
std::atomic<bool> watching{false};
std::atomic<std::size_t> largest_allocation{0};

[[maybe_unused]] void* counted_alloc(std::size_t n) {
    if (watching.load(std::memory_order_relaxed)) {
        std::size_t seen = largest_allocation.load(std::memory_order_relaxed);
        while (n > seen && !largest_allocation.compare_exchange_weak(seen, n)) {
        }
    }
    if (void* p = std::malloc(n == 0 ? 1 : n)) return p;
    throw std::bad_alloc();
}

/// Runs f and returns the size of the largest single allocation it made.
template <class F>
std::size_t largest_allocation_in(F&& f) {
    largest_allocation = 0;
    watching = true;
    try {
        f();
    } catch (...) {
        watching = false;
        throw;
    }
    watching = false;
    return largest_allocation;
}
}  // namespace

#if MPROC_TEST_WATCH_ALLOCATIONS
void* operator new(std::size_t n) { return counted_alloc(n); }
void* operator new[](std::size_t n) { return counted_alloc(n); }
void operator delete(void* p) noexcept { std::free(p); }
void operator delete[](void* p) noexcept { std::free(p); }
void operator delete(void* p, std::size_t) noexcept { std::free(p); }
void operator delete[](void* p, std::size_t) noexcept { std::free(p); }
#endif

// ---- helpers and test types -----------------------------------------------------------------

namespace {

using bytes_t = std::vector<std::byte>;

template <class T>
T round_trip(const T& value) {
    return mproc::decode<T>(mproc::encode(value));
}

template <class T>
void check_round_trip(const T& value) {
    CHECK(round_trip(value) == value);
}

/// Appends raw little-endian bytes of v to a hand-built message.
template <class T>
void put(bytes_t& out, T v) {
    const auto* p = reinterpret_cast<const std::byte*>(&v);
    out.insert(out.end(), p, p + sizeof v);
}

enum class Color : std::uint8_t { red, green, blue };
enum Plain { plain_a, plain_b = 1000 };
enum class Flag : bool { off, on };

struct Point {  // bitwise: trivially copyable, no serialize
    int x;
    double y;
    bool operator==(const Point&) const = default;
};

struct NoDefault {  // bitwise, but not default-constructible
    explicit NoDefault(int v) : value(v) {}
    int value;
    bool operator==(const NoDefault&) const = default;
};

struct Person {  // member serialize, cereal style
    std::string name;
    int age = 0;
    std::vector<std::string> tags;
    std::optional<Point> home;
    int scores[3] = {};
    std::string notes[2];
    template <class Ar>
    void serialize(Ar& ar) {
        ar(name, age, tags, home, scores, notes);
    }
    bool operator==(const Person& o) const {
        return name == o.name && age == o.age && tags == o.tags && home == o.home &&
               std::equal(scores, scores + 3, o.scores) && std::equal(notes, notes + 2, o.notes);
    }
};

class Secret {  // private serialize, reached through codec_access
public:
    Secret() = default;
    explicit Secret(std::string s) : s_(std::move(s)) {}
    bool operator==(const Secret&) const = default;

private:
    friend struct mproc::codec_access;
    template <class Ar>
    void serialize(Ar& ar) {
        ar(s_);
    }
    std::string s_;
};

struct Bitwise3 {  // trivially copyable but has serialize: serialize wins
    int a = 0, b = 0, c = 0;
    template <class Ar>
    void serialize(Ar& ar) {
        ar(a, c);  // deliberately skips b
    }
};

struct EmptySerialize {
    template <class Ar>
    void serialize(Ar&) {}
    bool operator==(const EmptySerialize&) const = default;
};

struct Node {  // recursive through a vector
    int value = 0;
    std::vector<Node> children;
    template <class Ar>
    void serialize(Ar& ar) {
        ar(value, children);
    }
    bool operator==(const Node&) const = default;
};

struct Money {  // codec specialization
    long cents = 0;
    std::string currency;
    bool operator==(const Money&) const = default;
};

struct Thrower {  // encoding fails halfway
    int value = 0;
    bool operator==(const Thrower&) const = default;
};

}  // namespace

template <>
struct mproc::codec<Money> {
    static void encode(Encoder& e, const Money& m) { e(m.currency, m.cents); }
    static Money decode(Decoder& d) {
        Money m;
        d(m.currency, m.cents);
        return m;
    }
};

template <>
struct mproc::codec<Thrower> {
    static void encode(Encoder& e, const Thrower& t) {
        e(t.value);
        throw std::runtime_error("refusing to encode");
    }
    static Thrower decode(Decoder& d) { return Thrower{mproc::decode<int>(d)}; }
};

// ---- compile-time facts -----------------------------------------------------------------------

static_assert(mproc::Encodable<int>);
static_assert(mproc::Encodable<std::map<std::string, std::vector<std::optional<Point>>>>);
static_assert(mproc::Encodable<Person>);
static_assert(mproc::Encodable<Money>);
static_assert(mproc::Encodable<Node>);
static_assert(mproc::Encodable<std::variant<std::monostate, int, std::string>>);
static_assert(!mproc::Encodable<int*>);
static_assert(!mproc::Encodable<const char*>);
static_assert(!mproc::Encodable<std::nullptr_t>);
static_assert(!mproc::Encodable<int Point::*>);
static_assert(!mproc::Encodable<std::unique_ptr<int>>);
static_assert(!mproc::Encodable<std::shared_ptr<int>>);
static_assert(!mproc::Encodable<std::string_view>);
static_assert(!mproc::Encodable<std::span<int>>);
static_assert(!mproc::Encodable<std::function<void()>>);
static_assert(!mproc::Encodable<std::vector<std::unique_ptr<int>>>);
static_assert(!mproc::Encodable<std::map<int, std::string_view>>);
static_assert(!mproc::Encodable<std::tuple<int, std::function<void()>>>);
static_assert(mproc::detail::bitwise_v<Point>);
static_assert(mproc::detail::bitwise_v<std::array<double, 3>>);
static_assert(mproc::detail::bitwise_v<std::chrono::milliseconds>);
static_assert(!mproc::detail::bitwise_v<bool>);
static_assert(!mproc::detail::bitwise_v<Flag>);
static_assert(!mproc::detail::bitwise_v<Bitwise3>);
static_assert(!mproc::detail::bitwise_v<std::optional<int>>);  // trivially copyable, flag checked
static_assert(mproc::detail::min_wire_size_v<std::string> == 8);
static_assert(mproc::detail::min_wire_size_v<std::tuple<int, std::optional<double>>> == 5);
static_assert(mproc::detail::min_wire_size_v<std::variant<std::monostate, double>> == 1);
static_assert(mproc::detail::min_wire_size_v<std::array<int, 0>> == 0);

// ---- round trips ------------------------------------------------------------------------------

TEST_CASE("Codec.roundtrip.arithmetic") {
    check_round_trip(true);
    check_round_trip(false);
    check_round_trip('x');
    check_round_trip(static_cast<signed char>(-5));
    check_round_trip(static_cast<unsigned char>(250));
    check_round_trip(u8'a');
    check_round_trip(u'\u1234');
    check_round_trip(U'\U0001F600');
    check_round_trip(L'w');
    check_round_trip(std::numeric_limits<short>::min());
    check_round_trip(std::numeric_limits<unsigned short>::max());
    check_round_trip(std::numeric_limits<int>::min());
    check_round_trip(std::numeric_limits<unsigned>::max());
    check_round_trip(std::numeric_limits<long>::min());
    check_round_trip(std::numeric_limits<long long>::max());
    check_round_trip(std::numeric_limits<unsigned long long>::max());
    check_round_trip(3.25f);
    check_round_trip(-1e300);
    check_round_trip(std::numeric_limits<double>::infinity());
    check_round_trip(1.5L);
    const double nan = round_trip(std::numeric_limits<double>::quiet_NaN());
    CHECK(nan != nan);
    CHECK(mproc::encode(std::int32_t{-2}).size() == 4);
    CHECK(mproc::encode(true) == bytes_t{std::byte{1}});
}

TEST_CASE("Codec.roundtrip.enum") {
    check_round_trip(Color::blue);
    check_round_trip(plain_b);
    check_round_trip(Flag::on);
    check_round_trip(std::byte{0xAB});
    CHECK(mproc::encode(Color::green) == bytes_t{std::byte{1}});
}

TEST_CASE("Codec.roundtrip.string") {
    check_round_trip(std::string());
    check_round_trip(std::string("hello"));
    check_round_trip(std::string("with\0nul", 8));
    check_round_trip(std::string(100000, 'z'));
    check_round_trip(std::u16string(u"wide"));
    check_round_trip(std::u8string(u8"utf8"));
    CHECK(mproc::encode(std::string("ab")).size() == 8 + 2);
}

TEST_CASE("Codec.roundtrip.vector") {
    check_round_trip(std::vector<int>{});
    check_round_trip(std::vector<int>{1, -2, 3});
    check_round_trip(std::vector<double>{1.5, 2.5});
    check_round_trip(std::vector<std::string>{"a", "", "ccc"});
    check_round_trip(std::vector<std::vector<int>>{{}, {1}, {2, 3}});
    check_round_trip(std::vector<std::byte>{std::byte{1}, std::byte{2}});
    check_round_trip(std::vector<unsigned char>{1, 2, 255});
    check_round_trip(std::vector<Color>{Color::red, Color::blue});
    check_round_trip(std::vector<Point>{{1, 2.0}, {3, 4.0}});
    check_round_trip(std::vector<NoDefault>{NoDefault(1), NoDefault(2)});
    check_round_trip(std::vector<std::array<float, 3>>{{1, 2, 3}, {4, 5, 6}});
    check_round_trip(std::vector<Flag>{Flag::on, Flag::off});
    CHECK(mproc::encode(std::vector<double>(3)).size() == 8 + 3 * 8);
}

TEST_CASE("Codec.roundtrip.vector_bool") {
    for (std::size_t n : {0, 1, 7, 8, 9, 63, 64, 65, 1000, 5000}) {
        std::vector<bool> v(n);
        for (std::size_t i = 0; i < n; ++i) v[i] = (i * 7 + n) % 3 == 0;
        check_round_trip(v);
        CHECK(mproc::encode(v).size() == 8 + (n + 7) / 8);
    }
}

// The wire form spelled out bit by bit, to hold the word-at-a-time paths to.
std::vector<std::byte> reference_bits(const std::vector<bool>& v) {
    std::vector<std::byte> out((v.size() + 7) / 8);
    for (std::size_t i = 0; i < v.size(); ++i)
        if (v[i]) out[i / 8] |= std::byte{static_cast<unsigned char>(1u << (i % 8))};
    return out;
}

TEST_CASE("Codec.vector_bool.wire_form_bit_by_bit") {
    std::mt19937 rng(7);
    for (std::size_t n = 0; n < 300; ++n) {
        std::vector<bool> v(n);
        for (std::size_t i = 0; i < n; ++i) v[i] = (rng() & 1u) != 0;
        const auto bytes = mproc::encode(v);
        REQUIRE(bytes.size() == 8 + (n + 7) / 8);
        const auto expected = reference_bits(v);
        CHECK(std::equal(expected.begin(), expected.end(), bytes.begin() + 8));
        CHECK(mproc::decode<std::vector<bool>>(bytes) == v);
    }
}

TEST_CASE("Codec.vector_bool.stale_bits_past_the_end_are_not_sent") {
    std::vector<bool> v(70, true);
    v.resize(65);  // the storage word still holds the five dropped ones
    const auto bytes = mproc::encode(v);
    REQUIRE(bytes.size() == 8 + 9);
    CHECK(bytes.back() == std::byte{1});
    CHECK(mproc::decode<std::vector<bool>>(bytes) == v);
}

TEST_CASE("Codec.vector_bool.pack8_every_pattern") {
    for (unsigned pattern = 0; pattern < 256; ++pattern) {
        bool eight[8];
        for (unsigned b = 0; b < 8; ++b) eight[b] = ((pattern >> b) & 1u) != 0;
        CHECK(mproc::detail::pack8_bools(eight) == pattern);
    }
}

TEST_CASE("Codec.vector_bool.append_bools_at_any_offset") {
    std::mt19937 rng(11);
    for (bool words : {true, false}) {
        for (std::size_t at : {0, 1, 31, 63, 64, 100}) {
            for (std::size_t n : {0, 1, 7, 8, 9, 63, 64, 65, 127, 128, 129, 1000}) {
                std::vector<bool> out(at);
                for (std::size_t i = 0; i < at; ++i) out[i] = (rng() & 1u) != 0;
                std::vector<bool> expected = out;
                std::vector<unsigned char> src(n);  // bytes of 0 or 1, read as bools
                for (auto& b : src) b = static_cast<unsigned char>(rng() & 1u);
                for (auto b : src) expected.push_back(b != 0);
                bool flags[1000];
                if (n != 0) std::memcpy(flags, src.data(), n);
                mproc::detail::append_bools(out, flags, n, words);
                INFO("words " << words << ", at " << at << ", n " << n);
                CHECK(out == expected);
            }
        }
    }
}

TEST_CASE("Codec.roundtrip.array") {
    check_round_trip(std::array<int, 4>{1, 2, 3, 4});
    check_round_trip(std::array<std::string, 2>{"x", "yy"});
    check_round_trip(std::array<int, 0>{});
    check_round_trip(std::array<NoDefault, 2>{NoDefault(5), NoDefault(6)});
    check_round_trip(std::array<std::optional<int>, 2>{std::nullopt, 3});
    check_round_trip(std::array<bool, 3>{true, false, true});
    CHECK(mproc::encode(std::array<std::int16_t, 3>{}).size() == 6);
}

TEST_CASE("Codec.roundtrip.deque_list") {
    check_round_trip(std::deque<int>{});
    check_round_trip(std::deque<std::string>{"a", "b"});
    check_round_trip(std::list<double>{1, 2, 3});
    check_round_trip(std::list<std::vector<int>>{{1}, {}});
}

TEST_CASE("Codec.roundtrip.pair_tuple") {
    check_round_trip(std::pair<int, std::string>{1, "one"});
    check_round_trip(std::tuple<>{});
    check_round_trip(std::tuple<int, double, std::string>{1, 2.5, "s"});
    check_round_trip(std::tuple<std::tuple<int>>{std::tuple<int>{7}});
    check_round_trip(std::tuple<std::pair<int, int>, std::tuple<>, Color>{{1, 2}, {}, Color::red});
    CHECK(mproc::encode(std::tuple<>{}).empty());
}

TEST_CASE("Codec.roundtrip.optional_variant") {
    check_round_trip(std::optional<int>{});
    check_round_trip(std::optional<int>{5});
    check_round_trip(std::optional<std::string>{"s"});
    check_round_trip(std::optional<std::optional<int>>{std::optional<int>{}});
    using V = std::variant<std::monostate, int, std::string, std::vector<double>>;
    check_round_trip(V{});
    check_round_trip(V{42});
    check_round_trip(V{std::string("str")});
    check_round_trip(V{std::vector<double>{1, 2}});
    check_round_trip(std::variant<int, int>{std::in_place_index<1>, 3});
    check_round_trip(std::monostate{});
    CHECK(mproc::encode(std::monostate{}).empty());
    CHECK(mproc::encode(V{42}).size() == 1 + 4);
}

TEST_CASE("Codec.roundtrip.maps_sets") {
    check_round_trip(std::map<int, std::string>{});
    check_round_trip(std::map<std::string, int>{{"a", 1}, {"b", 2}, {"c", 3}});
    check_round_trip(std::unordered_map<int, std::vector<int>>{{1, {1}}, {2, {}}, {3, {3, 3}}});
    check_round_trip(std::set<std::string>{"x", "y"});
    check_round_trip(std::unordered_set<int>{1, 2, 3, 4, 5});
    check_round_trip(std::map<int, int, std::greater<>>{{1, 1}, {2, 2}});
    std::map<int, int> big;
    for (int i = 0; i < 10000; ++i) big[i * 3] = i;
    check_round_trip(big);
}

TEST_CASE("Codec.roundtrip.chrono") {
    check_round_trip(std::chrono::milliseconds(1234));
    check_round_trip(std::chrono::duration<double>(1.5));
    check_round_trip(std::chrono::nanoseconds::min());
    check_round_trip(std::chrono::system_clock::now());
    check_round_trip(std::chrono::steady_clock::now());
    check_round_trip(std::vector<std::chrono::seconds>{std::chrono::seconds(1), std::chrono::seconds(2)});
}

TEST_CASE("Codec.roundtrip.nested") {
    using Deep = std::map<std::string,
                          std::vector<std::optional<std::variant<int, std::tuple<std::string, std::list<
                                                                         std::set<long>>>>>>>;
    Deep deep;
    deep["one"] = {std::nullopt, 5, std::tuple<std::string, std::list<std::set<long>>>{"t", {{1, 2}, {}}}};
    deep["two"] = {};
    check_round_trip(deep);
    check_round_trip(std::vector<std::vector<std::vector<std::vector<std::string>>>>{{{{"a"}}}, {}});
}

TEST_CASE("Codec.roundtrip.large") {
    std::vector<char> big(64u << 20);
    for (std::size_t i = 0; i < big.size(); i += 4096) big[i] = static_cast<char>(i / 4096);
    const auto bytes = mproc::encode(big);
    CHECK(bytes.size() == 8 + big.size());
    CHECK(mproc::decode<std::vector<char>>(bytes) == big);

    std::vector<double> doubles(1u << 17);
    for (std::size_t i = 0; i < doubles.size(); ++i) doubles[i] = static_cast<double>(i) * 0.5;
    check_round_trip(doubles);
}

TEST_CASE("Codec.roundtrip.zero_size_elements") {
    // Elements that encode to nothing get a one-byte marker in a counted container.
    check_round_trip(std::vector<std::monostate>(1000));
    CHECK(mproc::encode(std::vector<std::monostate>(3)).size() == 8 + 3);
    check_round_trip(std::vector<std::tuple<>>(5));
    check_round_trip(std::list<std::array<int, 0>>(4));
    check_round_trip(std::vector<EmptySerialize>(6));
    check_round_trip(std::map<std::monostate, std::tuple<>>{{std::monostate{}, {}}});
    check_round_trip(std::set<std::tuple<>>{std::tuple<>{}});
    check_round_trip(std::vector<std::variant<std::monostate, int>>{std::monostate{}, 1});
    // A fixed-size array of empty things needs no marker: its count is in the type.
    CHECK(mproc::encode(std::array<std::monostate, 3>{}).empty());
}

// ---- user types -------------------------------------------------------------------------------

TEST_CASE("Codec.user.serialize") {
    Person p{"Ada", 36, {"math", "engines"}, Point{1, 2.0}, {1, 2, 3}, {"n1", "n2"}};
    check_round_trip(p);
    check_round_trip(Person{});
    check_round_trip(std::vector<Person>{p, Person{}, p});
    check_round_trip(std::map<std::string, Person>{{"ada", p}});
    check_round_trip(Secret("hidden"));

    Bitwise3 b{1, 2, 3};
    const auto decoded = round_trip(b);
    CHECK(decoded.a == 1);
    CHECK(decoded.b == 0);  // serialize skips b: it wins over the bitwise rule
    CHECK(decoded.c == 3);
    CHECK(mproc::encode(b).size() == 8);
}

TEST_CASE("Codec.user.specialization") {
    check_round_trip(Money{1999, "EUR"});
    check_round_trip(std::vector<Money>{{1, "a"}, {2, "b"}});
    check_round_trip(std::optional<Money>{Money{5, "USD"}});
}

TEST_CASE("Codec.user.bitwise_struct") {
    check_round_trip(Point{-1, 0.25});
    check_round_trip(NoDefault(77));
    CHECK(mproc::encode(Point{}).size() == sizeof(Point));
    check_round_trip(std::tuple<Point, NoDefault>{Point{1, 1}, NoDefault(2)});
}

TEST_CASE("Codec.user.recursive") {
    Node root{1, {}};
    Node* cur = &root;
    for (int i = 0; i < 200; ++i) {  // well inside Decoder::max_depth
        cur->children.push_back(Node{i, {}});
        cur = &cur->children.back();
    }
    root.children.push_back(Node{-1, {Node{-2, {}}}});
    check_round_trip(root);

    // A hostile chain nested a million deep: refused, not a stack overflow.
    bytes_t hostile;
    for (int i = 0; i < 1000000; ++i) {
        put<std::int32_t>(hostile, i);
        put<std::uint64_t>(hostile, 1);
    }
    CHECK_THROWS_AS(mproc::decode<Node>(hostile), mproc::DecodeError);
}

// ---- envelopes and the byte streams --------------------------------------------------------------

TEST_CASE("Codec.envelope.tag_then_value") {
    bytes_t buf{std::byte{0xEE}};  // something already there: encode_into appends
    mproc::Encoder e(buf);
    e(std::uint8_t{3});
    e(std::map<std::string, int>{{"k", 1}});
    mproc::encode_into(buf, std::string("tail"));
    CHECK(buf[0] == std::byte{0xEE});

    mproc::Decoder d(std::span<const std::byte>(buf).subspan(1));
    std::uint8_t tag = 0;
    d(tag);
    CHECK(tag == 3);
    CHECK(mproc::decode<std::map<std::string, int>>(d) == std::map<std::string, int>{{"k", 1}});
    CHECK(mproc::decode<std::string>(d) == "tail");
    CHECK(d.remaining() == 0);
    CHECK_THROWS_AS(mproc::decode<std::uint8_t>(d), mproc::DecodeError);
}

TEST_CASE("Codec.envelope.raw_bytes") {
    bytes_t buf;
    mproc::Encoder e(buf);
    const char text[] = "raw";
    e.write_bytes(text, 3);
    CHECK(e.size() == 3);
    mproc::Decoder d(buf);
    char out[3];
    d.read_bytes(out, 3);
    CHECK(std::memcmp(out, "raw", 3) == 0);
    CHECK_THROWS_AS(d.read_bytes(out, 1), mproc::DecodeError);
}

TEST_CASE("Codec.encode_into.failure_leaves_buffer") {
    bytes_t buf{std::byte{1}, std::byte{2}};
    CHECK_THROWS_AS(mproc::encode_into(buf, std::vector<Thrower>{Thrower{}}), std::runtime_error);
    CHECK(buf == bytes_t{std::byte{1}, std::byte{2}});
}

// ---- encoded_size and encode_to ------------------------------------------------------------------

namespace {

/// encoded_size is exactly encode().size(); encode_to writes encode()'s bytes into a span of that
/// size, and refuses a span one byte short.
template <class T>
void check_size_and_span(const T& value) {
    const bytes_t bytes = mproc::encode(value);
    CHECK(mproc::encoded_size(value) == bytes.size());
    bytes_t into(bytes.size() + 3, std::byte{0xEE});
    CHECK(mproc::encode_to(std::span<std::byte>(into.data(), bytes.size()), value) == bytes.size());
    CHECK(std::equal(bytes.begin(), bytes.end(), into.begin()));
    CHECK(into[bytes.size()] == std::byte{0xEE});  // nothing written past the span
    if (!bytes.empty())
        CHECK_THROWS_AS(mproc::encode_to(std::span<std::byte>(into.data(), bytes.size() - 1), value), mproc::Error);
}

template <class... Ts>
void check_sizes_and_spans(const Ts&... values) {
    (check_size_and_span(values), ...);
}

}  // namespace

TEST_CASE("Codec.encoded_size.matches_encode_for_every_supported_type") {
    using namespace std::chrono_literals;
    check_sizes_and_spans(true, false, char{'c'}, std::int8_t{-1}, std::uint16_t{7}, -3, 5u, -9L, 11ULL, 1.5f, 2.5,
                          3.5L, std::byte{9}, Color::blue, plain_b, Flag::on);
    check_sizes_and_spans(std::string(), std::string("hello"), std::string(1000, 'x'), std::u16string(u"wide"),
                          std::vector<double>{}, std::vector<double>(100, 1.0), std::vector<std::string>{"a", "", "bcd"},
                          std::vector<bool>{}, std::vector<bool>(13, true), std::vector<Point>{{1, 2.0}, {3, 4.0}});
    check_sizes_and_spans(std::array<int, 3>{1, 2, 3}, std::array<std::string, 2>{"x", "yz"}, std::array<int, 0>{},
                          std::deque<int>{1, 2}, std::list<std::string>{"p", "q"});
    check_sizes_and_spans(std::pair<int, std::string>{1, "one"}, std::tuple<>{},
                          std::tuple<int, std::optional<double>, std::string>{1, 2.0, "t"});
    check_sizes_and_spans(std::optional<int>{}, std::optional<std::string>{"o"}, std::monostate{},
                          std::variant<std::monostate, int, std::string>{}, std::variant<std::monostate, int, std::string>{"v"});
    check_sizes_and_spans(std::map<std::string, int>{{"a", 1}, {"b", 2}}, std::unordered_map<int, std::string>{{1, "x"}},
                          std::set<int>{3, 1, 2}, std::unordered_set<std::string>{"s", "t"});
    check_sizes_and_spans(250ms, std::chrono::nanoseconds(-5), std::chrono::system_clock::time_point(123s));
    check_sizes_and_spans(std::vector<std::monostate>(3), std::vector<std::tuple<>>(2), std::vector<EmptySerialize>(4),
                          std::array<std::monostate, 3>{});
    Person person{"Ada", 36, {"math", "engines"}, Point{1, 2.0}, {7, 8, 9}, {"n1", "n2"}};
    Node tree{1, {Node{2, {}}, Node{3, {Node{4, {}}}}}};
    check_sizes_and_spans(person, Secret("s"), Bitwise3{1, 2, 3}, EmptySerialize{}, tree, Money{250, "EUR"}, Point{5, 6.0},
                          NoDefault(4));
    check_size_and_span(std::map<std::string, std::vector<std::optional<std::variant<int, std::string, bool>>>>{
        {"alpha", {1, std::nullopt, std::string("x"), true}}, {"beta", {}}});
    check_sizes_and_spans(std::vector<Person>{person, Person{}}, std::map<int, std::vector<std::optional<Point>>>{{1, {std::nullopt, Point{}}}});
}

TEST_CASE("Codec.encode_to.a_throwing_codec_throws_through") {
    bytes_t into(64);
    CHECK_THROWS_AS(mproc::encoded_size(std::vector<Thrower>{Thrower{}}), std::runtime_error);
    CHECK_THROWS_AS(mproc::encode_to(into, std::vector<Thrower>{Thrower{}}), std::runtime_error);
}

// ---- hostile input ----------------------------------------------------------------------------

namespace {

template <class T>
void check_truncations(const T& value) {
    const auto bytes = mproc::encode(value);
    for (std::size_t n = 0; n < bytes.size(); ++n) {
        INFO("prefix of " << n << " of " << bytes.size() << " bytes");
        CHECK_THROWS_AS(mproc::decode<T>(std::span<const std::byte>(bytes.data(), n)),
                        mproc::DecodeError);
    }
}

/// Flips random bytes of a valid message: each decode either fails with DecodeError or gives a
/// value that round-trips; nothing else may happen (ASan and UBSan builds watch for the rest).
template <class T>
void check_byte_flips(const T& value, std::uint32_t seed) {
    const auto original = mproc::encode(value);
    std::mt19937 rng(seed);
    int failures = 0;
    for (int trial = 0; trial < 3000; ++trial) {
        auto bytes = original;
        const int flips = 1 + static_cast<int>(rng() % 3);
        for (int f = 0; f < flips; ++f)
            bytes[rng() % bytes.size()] ^= static_cast<std::byte>(1 + rng() % 255);
        try {
            const T decoded = mproc::decode<T>(bytes);
            REQUIRE(round_trip(decoded) == decoded);
        } catch (const mproc::DecodeError&) {
            ++failures;
        }
    }
    CHECK(failures > 0);
}

using Sample = std::map<std::string, std::vector<std::optional<std::variant<int, std::string, bool>>>>;

Sample sample() {
    return Sample{{"alpha", {1, std::nullopt, std::string("x"), true}},
                  {"beta", {}},
                  {"gamma", {std::string(""), false, -7}}};
}

}  // namespace

TEST_CASE("Codec.garbage.truncation") {
    check_truncations(sample());
    check_truncations(std::vector<std::string>{"a", "bc", ""});
    check_truncations(std::vector<double>{1, 2, 3});
    check_truncations(std::vector<bool>{true, false, true, true, false, true, false, true, true});
    check_truncations(Person{"Ada", 36, {"x"}, Point{1, 2.0}, {1, 2, 3}, {"p", "q"}});
    check_truncations(std::tuple<int, std::set<int>, std::unordered_map<int, std::string>>{
        1, {1, 2}, {{3, "three"}}});
    check_truncations(std::vector<std::monostate>(4));
    check_truncations(Money{5, "EUR"});
}

TEST_CASE("Codec.garbage.byte_flips") {
    check_byte_flips(sample(), 1);
    check_byte_flips(std::vector<std::string>{"abc", "", "de", "fghij"}, 2);
    check_byte_flips(std::tuple<std::set<int>, std::unordered_set<std::string>, std::vector<bool>>{
                         {1, 5, 9}, {"a", "b"}, {true, false, true}},
                     3);
    check_byte_flips(std::vector<std::variant<std::monostate, std::tuple<>, std::list<int>>>{
                         std::monostate{}, std::tuple<>{}, std::list<int>{1, 2}},
                     4);
    check_byte_flips(std::vector<Person>{Person{"Ada", 36, {"x"}, std::nullopt, {}, {"a", "b"}}}, 5);
}

TEST_CASE("Codec.garbage.hostile_counts") {
    const auto refused_without_allocating = [](const bytes_t& bytes, auto type_tag) {
        using T = typename decltype(type_tag)::type;
        const std::size_t largest = largest_allocation_in([&] {
            CHECK_THROWS_AS(mproc::decode<T>(bytes), mproc::DecodeError);
        });
        if (MPROC_TEST_WATCH_ALLOCATIONS) CHECK(largest < 4096);
    };
    const auto with_count = [](std::uint64_t n, std::size_t padding) {
        bytes_t b;
        put(b, n);
        b.resize(b.size() + padding, std::byte{0});
        return b;
    };
    const std::uint64_t huge = std::uint64_t{1} << 62;
    refused_without_allocating(with_count(huge, 64), std::type_identity<std::vector<std::string>>{});
    refused_without_allocating(with_count(huge, 64), std::type_identity<std::string>{});
    refused_without_allocating(with_count(~std::uint64_t{0}, 64), std::type_identity<std::string>{});
    refused_without_allocating(with_count(std::uint64_t{1} << 61, 64),  // n * 8 overflows
                               std::type_identity<std::vector<double>>{});
    refused_without_allocating(with_count(~std::uint64_t{0}, 64), std::type_identity<std::vector<bool>>{});
    refused_without_allocating(with_count(huge, 64), std::type_identity<std::map<int, int>>{});
    refused_without_allocating(with_count(huge, 64), std::type_identity<std::unordered_map<int, int>>{});
    refused_without_allocating(with_count(huge, 64), std::type_identity<std::unordered_set<int>>{});
    refused_without_allocating(with_count(huge, 64), std::type_identity<std::deque<int>>{});
    refused_without_allocating(with_count(huge, 64), std::type_identity<std::vector<std::monostate>>{});
    refused_without_allocating(with_count(huge, 64), std::type_identity<std::vector<std::tuple<>>>{});
    refused_without_allocating(with_count(huge, 64), std::type_identity<std::vector<EmptySerialize>>{});
    refused_without_allocating(with_count(huge, 64), std::type_identity<std::list<std::array<int, 0>>>{});
    // 64 bytes hold at most 64 zero-size elements (each costs its marker byte) ...
    refused_without_allocating(with_count(65, 64), std::type_identity<std::vector<std::monostate>>{});
    // ... and exactly 64 of them decode.
    CHECK(mproc::decode<std::vector<std::monostate>>(with_count(64, 64)).size() == 64);
    // Elements far larger in memory than on the wire (an empty optional is one byte): a count
    // that the bytes could hold is not reserved in full before the elements prove it.
    {
        using Big = std::vector<std::optional<std::array<double, 1000>>>;
        bytes_t bytes = with_count(1 << 16, 1 << 16);
        std::fill(bytes.begin() + 8 + 16, bytes.end(), std::byte{2});  // a bad flag after 16
        const std::size_t largest = largest_allocation_in(
            [&] { CHECK_THROWS_AS(mproc::decode<Big>(bytes), mproc::DecodeError); });
        if (MPROC_TEST_WATCH_ALLOCATIONS) CHECK(largest <= 4 * bytes.size() + 4096);
    }
    // Counts that fit but whose elements do not: 8 strings claimed, 64 bytes hold the 8 lengths
    // of 0 each, so this one is valid; 9 is not.
    CHECK(mproc::decode<std::vector<std::string>>(with_count(8, 64)).size() == 8);
    refused_without_allocating(with_count(9, 64), std::type_identity<std::vector<std::string>>{});
}

TEST_CASE("Codec.garbage.trailing_bytes") {
    auto bytes = mproc::encode(std::string("abc"));
    bytes.push_back(std::byte{0});
    CHECK_THROWS_AS(mproc::decode<std::string>(bytes), mproc::DecodeError);
    CHECK_THROWS_AS(mproc::decode<int>(mproc::encode(std::int64_t{1})), mproc::DecodeError);
    CHECK_THROWS_AS(mproc::decode<std::tuple<>>(bytes_t{std::byte{0}}), mproc::DecodeError);
}

TEST_CASE("Codec.garbage.bad_tags") {
    CHECK_THROWS_AS(mproc::decode<bool>(bytes_t{std::byte{2}}), mproc::DecodeError);
    CHECK_THROWS_AS(mproc::decode<Flag>(bytes_t{std::byte{7}}), mproc::DecodeError);
    CHECK_THROWS_AS(mproc::decode<std::optional<int>>(bytes_t{std::byte{2}, {}, {}, {}, {}}),
                    mproc::DecodeError);
    CHECK(mproc::decode<std::optional<int>>(bytes_t{std::byte{0}}) == std::nullopt);
    using V = std::variant<int, std::string>;
    CHECK_THROWS_AS(mproc::decode<V>(bytes_t{std::byte{2}, {}, {}, {}, {}}), mproc::DecodeError);
    CHECK_THROWS_AS(mproc::decode<V>(bytes_t{std::byte{255}, {}, {}, {}, {}}), mproc::DecodeError);
    // Unused bits of a vector<bool>'s last byte must be clear.
    bytes_t bits;
    put<std::uint64_t>(bits, 3);
    bits.push_back(std::byte{0x0F});
    CHECK_THROWS_AS(mproc::decode<std::vector<bool>>(bits), mproc::DecodeError);
    // The marker after an empty element must be zero.
    bytes_t marks;
    put<std::uint64_t>(marks, 1);
    marks.push_back(std::byte{1});
    CHECK_THROWS_AS(mproc::decode<std::vector<std::monostate>>(marks), mproc::DecodeError);
}

TEST_CASE("Codec.garbage.duplicate_keys") {
    bytes_t map_bytes;
    put<std::uint64_t>(map_bytes, 2);
    put<std::int32_t>(map_bytes, 5);
    put<std::int32_t>(map_bytes, 1);
    put<std::int32_t>(map_bytes, 5);
    put<std::int32_t>(map_bytes, 2);
    CHECK_THROWS_AS((mproc::decode<std::map<int, int>>(map_bytes)), mproc::DecodeError);
    CHECK_THROWS_AS((mproc::decode<std::unordered_map<int, int>>(map_bytes)), mproc::DecodeError);

    bytes_t set_bytes;
    put<std::uint64_t>(set_bytes, 3);
    put<std::int32_t>(set_bytes, 1);
    put<std::int32_t>(set_bytes, 2);
    put<std::int32_t>(set_bytes, 1);
    CHECK_THROWS_AS(mproc::decode<std::set<int>>(set_bytes), mproc::DecodeError);
    CHECK_THROWS_AS(mproc::decode<std::unordered_set<int>>(set_bytes), mproc::DecodeError);

    // Keys out of order are accepted (only repeats are corruption).
    bytes_t unordered;
    put<std::uint64_t>(unordered, 2);
    put<std::int32_t>(unordered, 9);
    put<std::int32_t>(unordered, 1);
    CHECK(mproc::decode<std::set<int>>(unordered) == std::set<int>{1, 9});
}

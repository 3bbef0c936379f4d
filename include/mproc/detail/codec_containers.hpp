// mproc::codec specializations for the std library containers: strings, sequences, maps, sets.
// Include <mproc/codec.hpp> rather than this file.
#pragma once

#include <mproc/detail/bool_bits.hpp>
#include <mproc/detail/codec_default.hpp>

#include <array>
#include <bit>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <deque>
#include <iterator>
#include <list>
#include <map>
#include <set>
#include <string>
#include <type_traits>
#include <unordered_map>
#include <unordered_set>
#include <utility>
#include <vector>

MPROC_NAMESPACE_BEGIN
namespace detail {

/// Types whose objects may be read straight out of the std::byte buffer through a pointer
/// (the aliasing rule allows char, unsigned char and std::byte), so a range constructor can copy.
template <class T>
inline constexpr bool byte_like_v = std::is_same_v<T, char> || std::is_same_v<T, unsigned char> ||
                                    std::is_same_v<T, std::byte>;

/// Reads T's out of unaligned bytes with memcpy; only for bitwise T that are not
/// default-constructible (the others resize and memcpy in one go, which is faster).
template <class T>
struct unaligned_reader {
    using iterator_category = std::forward_iterator_tag;
    using value_type = T;
    using difference_type = std::ptrdiff_t;
    using pointer = const T*;
    using reference = T;

    const std::byte* p;
    T operator*() const {
        std::array<std::byte, sizeof(T)> raw;
        std::memcpy(raw.data(), p, sizeof(T));
        return std::bit_cast<T>(raw);
    }
    unaligned_reader& operator++() {
        p += sizeof(T);
        return *this;
    }
    unaligned_reader operator++(int) {
        auto old = *this;
        p += sizeof(T);
        return old;
    }
    bool operator==(const unaligned_reader&) const = default;
};

/// A contiguous container of bitwise T (vector, basic_string) from n elements' bytes: one copy.
template <class Container, class T>
Container bulk_decode(Decoder& d) {
    const std::size_t n = d.read_count(sizeof(T));
    const std::byte* p = d.take(n * sizeof(T)).data();
    if constexpr (byte_like_v<T>) {
        const auto* first = reinterpret_cast<const T*>(p);
        return Container(first, first + n);
    } else if constexpr (std::is_default_constructible_v<T>) {
        Container c;
        c.resize(n);
        if (n != 0) std::memcpy(c.data(), p, n * sizeof(T));
        return c;
    } else {
        return Container(unaligned_reader<T>{p}, unaligned_reader<T>{p + n * sizeof(T)});
    }
}

/// Reserves room for n elements of `bytes_each` bytes, but never more than a few times the
/// bytes left in the message: n is bounded by the bytes left already, but an element can be far
/// larger in memory than on the wire (std::optional<std::array<double, 1000>> takes one byte when
/// empty), and the count is not yet proven by the elements. Past the cap the container grows as
/// elements really arrive.
template <class Container>
void reserve_bounded(Container& c, std::size_t n, std::size_t bytes_each, const Decoder& d) {
    if constexpr (requires { c.reserve(n); }) {
        const std::size_t cap = add_sat(mul_sat(d.remaining(), 4), 4096) / bytes_each;
        c.reserve(n < cap ? n : cap);
    }
}

/// The encoding shared by every counted sequence: a u64 count, then the elements.
template <class Seq>
void encode_sequence(Encoder& e, const Seq& seq) {
    write_count(e, seq.size());
    for (const auto& element : seq) encode_element(e, element);
}

template <class Seq>
Seq decode_sequence(Decoder& d) {
    using T = typename Seq::value_type;
    const std::size_t n = d.read_count(min_wire_size_v<T>);
    Seq seq;
    reserve_bounded(seq, n, sizeof(T), d);
    for (std::size_t i = 0; i < n; ++i) seq.push_back(decode_element<T>(d));
    return seq;
}

/// Maps: a u64 count, then key and value of each entry. A repeated key is corruption.
template <class Map>
Map decode_map(Decoder& d) {
    using K = typename Map::key_type;
    using V = typename Map::mapped_type;
    constexpr std::size_t entry_min = add_sat(min_wire_size_v<K>, min_wire_size_v<V>);
    const std::size_t n = d.read_count(entry_min);
    Map map;
    reserve_bounded(map, n, sizeof(void*), d);  // an unordered map's bucket array
    for (std::size_t i = 0; i < n; ++i) {
        decode_marked<entry_min>(d, [&] {
            K key = decode_one<K>(d);
            V value = decode_one<V>(d);
            const std::size_t before = map.size();
            // The encoder writes ordered maps in order, so the hint makes decoding linear.
            map.emplace_hint(map.end(), std::move(key), std::move(value));
            if (map.size() == before) throw_decode("a repeated key in a map");
        });
    }
    return map;
}

template <class Map>
void encode_map(Encoder& e, const Map& map) {
    using K = typename Map::key_type;
    using V = typename Map::mapped_type;
    write_count(e, map.size());
    for (const auto& entry : map)
        encode_marked<add_sat(min_wire_size_v<K>, min_wire_size_v<V>)>(e, [&] {
            encode_one(e, entry.first);
            encode_one(e, entry.second);
        });
}

template <class Set>
Set decode_set(Decoder& d) {
    using K = typename Set::key_type;
    const std::size_t n = d.read_count(min_wire_size_v<K>);
    Set set;
    reserve_bounded(set, n, sizeof(void*), d);
    for (std::size_t i = 0; i < n; ++i) {
        const std::size_t before = set.size();
        set.emplace_hint(set.end(), decode_element<K>(d));
        if (set.size() == before) throw_decode("a repeated element in a set");
    }
    return set;
}

/// Sequences and maps: a u64 count, so at least 8 bytes.
struct counted_base {
    static constexpr std::size_t mproc_min_size = sizeof(std::uint64_t);
};

}  // namespace detail

// ---- strings and sequences ----------------------------------------------------------------

/// std::basic_string: a u64 length, then the characters in one copy.
template <class C, class Traits, class A>
struct codec<std::basic_string<C, Traits, A>> : detail::counted_base {
    using mproc_elements = detail::type_list<C>;
    using S = std::basic_string<C, Traits, A>;
    static void encode(Encoder& e, const S& s) {
        detail::write_count(e, s.size());
        e.write_bytes(s.data(), s.size() * sizeof(C));
    }
    static S decode(Decoder& d) { return detail::bulk_decode<S, C>(d); }
};

/// std::vector: a u64 count, then the elements; bitwise elements in one copy.
template <class T, class A>
struct codec<std::vector<T, A>> : detail::counted_base {
    using mproc_elements = detail::type_list<T>;
    using V = std::vector<T, A>;
    static void encode(Encoder& e, const V& v) {
        if constexpr (detail::bitwise_v<T>) {
            detail::write_count(e, v.size());
            e.write_bytes(v.data(), v.size() * sizeof(T));
        } else {
            detail::encode_sequence(e, v);
        }
    }
    static V decode(Decoder& d) {
        if constexpr (detail::bitwise_v<T>)
            return detail::bulk_decode<V, T>(d);
        else
            return detail::decode_sequence<V>(d);
    }
};

/// std::vector<bool>: a u64 count of bits, then the bits packed eight to a byte, first bit in
/// the lowest. Unused high bits of the last byte must be zero.
template <class A>
struct codec<std::vector<bool, A>> : detail::counted_base {
    using V = std::vector<bool, A>;
    static void encode(Encoder& e, const V& v) {
        detail::write_count(e, v.size());
        detail::pack_bits(v, [&e](const std::byte* bytes, std::size_t n) { e.write_bytes(bytes, n); });
    }
    static V decode(Decoder& d) {
        std::uint64_t n = 0;
        d.read_bytes(&n, sizeof n);
        const std::uint64_t nbytes = n / 8 + (n % 8 != 0 ? 1 : 0);
        if (nbytes > d.remaining()) detail::throw_decode("a count exceeds the bytes left");
        const auto bytes = d.take(static_cast<std::size_t>(nbytes));
        if (n % 8 != 0 && (std::to_integer<unsigned>(bytes.back()) >> (n % 8)) != 0)
            detail::throw_decode("stray bits after a vector<bool>");
        V v(static_cast<std::size_t>(n));
        detail::unpack_bits(v, bytes.data());
        return v;
    }
};

/// std::array: the N elements, no count; bitwise elements in one copy.
template <class T, std::size_t N>
struct codec<std::array<T, N>> {
    using mproc_elements = detail::type_list<T>;
    using Arr = std::array<T, N>;
    static constexpr bool mproc_bitwise =
        N != 0 && detail::bitwise_v<T> && sizeof(Arr) == N * sizeof(T);
    static constexpr std::size_t mproc_min_size = detail::mul_sat(N, detail::min_wire_size_v<T>);
    static void encode(Encoder& e, const Arr& a) {
        if constexpr (N != 0 && detail::bitwise_v<T>)
            e.write_bytes(a.data(), N * sizeof(T));
        else
            for (const auto& element : a) detail::encode_one(e, element);
    }
    static Arr decode(Decoder& d) {
        if constexpr (N == 0) {
            return Arr{};
        } else if constexpr (std::is_default_constructible_v<T>) {
            Arr a;
            if constexpr (detail::bitwise_v<T>)
                d.read_bytes(a.data(), N * sizeof(T));
            else
                for (auto& element : a) element = detail::decode_one<T>(d);
            return a;
        } else {
            return [&]<std::size_t... I>(std::index_sequence<I...>) {
                // Braced initializers are evaluated in order, so element I reads the I-th value.
                return Arr{{(static_cast<void>(I), detail::decode_one<T>(d))...}};
            }(std::make_index_sequence<N>{});
        }
    }
};

/// std::deque: a u64 count, then the elements.
template <class T, class A>
struct codec<std::deque<T, A>> : detail::counted_base {
    using mproc_elements = detail::type_list<T>;
    static void encode(Encoder& e, const std::deque<T, A>& v) { detail::encode_sequence(e, v); }
    static std::deque<T, A> decode(Decoder& d) {
        return detail::decode_sequence<std::deque<T, A>>(d);
    }
};

/// std::list: a u64 count, then the elements.
template <class T, class A>
struct codec<std::list<T, A>> : detail::counted_base {
    using mproc_elements = detail::type_list<T>;
    static void encode(Encoder& e, const std::list<T, A>& v) { detail::encode_sequence(e, v); }
    static std::list<T, A> decode(Decoder& d) {
        return detail::decode_sequence<std::list<T, A>>(d);
    }
};

// ---- maps and sets: a u64 count, then the entries; a repeated key is corruption ----------

template <class K, class V, class Cmp, class A>
struct codec<std::map<K, V, Cmp, A>> : detail::counted_base {
    using mproc_elements = detail::type_list<K, V>;
    using M = std::map<K, V, Cmp, A>;
    static void encode(Encoder& e, const M& m) { detail::encode_map(e, m); }
    static M decode(Decoder& d) { return detail::decode_map<M>(d); }
};

template <class K, class V, class H, class Eq, class A>
struct codec<std::unordered_map<K, V, H, Eq, A>> : detail::counted_base {
    using mproc_elements = detail::type_list<K, V>;
    using M = std::unordered_map<K, V, H, Eq, A>;
    static void encode(Encoder& e, const M& m) { detail::encode_map(e, m); }
    static M decode(Decoder& d) { return detail::decode_map<M>(d); }
};

template <class K, class Cmp, class A>
struct codec<std::set<K, Cmp, A>> : detail::counted_base {
    using mproc_elements = detail::type_list<K>;
    using S = std::set<K, Cmp, A>;
    static void encode(Encoder& e, const S& s) { detail::encode_sequence(e, s); }
    static S decode(Decoder& d) { return detail::decode_set<S>(d); }
};

template <class K, class H, class Eq, class A>
struct codec<std::unordered_set<K, H, Eq, A>> : detail::counted_base {
    using mproc_elements = detail::type_list<K>;
    using S = std::unordered_set<K, H, Eq, A>;
    static void encode(Encoder& e, const S& s) { detail::encode_sequence(e, s); }
    static S decode(Decoder& d) { return detail::decode_set<S>(d); }
};

MPROC_NAMESPACE_END

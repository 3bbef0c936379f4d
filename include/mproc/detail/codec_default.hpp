// The codec's default encodings (arithmetic, enums, bitwise structs, member serialize), the
// compile-time refusals with their sentences, and the dispatch every value goes through.
// Include <mproc/codec.hpp> rather than this file.
#pragma once

#include <mproc/detail/codec_core.hpp>

#include <array>
#include <bit>
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <type_traits>

MPROC_NAMESPACE_BEGIN

namespace detail {

template <class... Ts>
struct type_list {};

/// Why the primary codec refuses a type; each reason has its own compile-time sentence.
enum class codec_refusal { no_encoding, raw_pointer, smart_pointer, view, callable };

template <codec_refusal R>
struct refused_codec {
    static constexpr codec_refusal mproc_refusal = R;
};

template <class T>
concept has_member_serialize = requires(T& value, Encoder& e, Decoder& d) {
    codec_access::serialize(value, e);
    codec_access::serialize(value, d);
};

/// Arithmetic types other than bool: the object's bytes.
template <class T>
struct arithmetic_codec {
    static constexpr bool mproc_bitwise = true;
    static constexpr std::size_t mproc_min_size = sizeof(T);
    static void encode(Encoder& e, const T& value) { e.write_bytes(&value, sizeof value); }
    static T decode(Decoder& d) {
        T value;
        d.read_bytes(&value, sizeof value);
        return value;
    }
};

/// bool: one byte, 0 or 1; anything else is corruption (and loading it would be UB).
struct bool_codec {
    static constexpr std::size_t mproc_min_size = 1;
    static void encode(Encoder& e, bool value) {
        const std::uint8_t byte = value ? 1 : 0;
        e.write_bytes(&byte, 1);
    }
    static bool decode(Decoder& d) {
        std::uint8_t byte = 0;
        d.read_bytes(&byte, 1);
        if (byte > 1) throw_decode("a bool is neither 0 nor 1");
        return byte == 1;
    }
};

/// Enums travel as their underlying type (validated when that is bool).
template <class E>
struct enum_codec {
    using underlying = std::underlying_type_t<E>;
    static constexpr bool mproc_bitwise = !std::is_same_v<underlying, bool>;
    static constexpr std::size_t mproc_min_size = sizeof(E);
    static void encode(Encoder& e, const E& value) {
        encode_one(e, static_cast<underlying>(value));
    }
    static E decode(Decoder& d) { return static_cast<E>(decode_one<underlying>(d)); }
};

/// Trivially copyable class types without serialize: the object's bytes, padding included.
template <class T>
struct bitwise_codec {
    static constexpr bool mproc_bitwise = true;
    static constexpr std::size_t mproc_min_size = sizeof(T);
    static void encode(Encoder& e, const T& value) { e.write_bytes(&value, sizeof value); }
    static T decode(Decoder& d) {
        // bit_cast rather than `T value;`: T need not be default-constructible.
        std::array<std::byte, sizeof(T)> raw;
        d.read_bytes(raw.data(), sizeof(T));
        return std::bit_cast<T>(raw);
    }
};

/// Types with a member `template <class Ar> void serialize(Ar& ar) { ar(a, b); }`.
template <class T>
struct serialize_codec {
    static void encode(Encoder& e, const T& value) {
        // One function serves both directions; the Encoder only reads the members.
        codec_access::serialize(const_cast<T&>(value), e);
    }
    static T decode(Decoder& d) {
        static_assert(std::is_default_constructible_v<T>,
                      "mproc::codec: a type decoded through its member serialize(Ar&) must be "
                      "default-constructible");
        T value{};
        codec_access::serialize(value, d);
        return value;
    }
};

template <class T>
consteval auto select_default_codec() {
    if constexpr (std::is_pointer_v<T> || std::is_member_pointer_v<T> ||
                  std::is_null_pointer_v<T>)
        return refused_codec<codec_refusal::raw_pointer>{};
    else if constexpr (has_member_serialize<T>)
        return serialize_codec<T>{};
    else if constexpr (std::is_same_v<T, bool>)
        return bool_codec{};
    else if constexpr (std::is_arithmetic_v<T>)
        return arithmetic_codec<T>{};
    else if constexpr (std::is_enum_v<T>)
        return enum_codec<T>{};
    else if constexpr ((std::is_class_v<T> || std::is_union_v<T>) &&
                       std::is_trivially_copyable_v<T>)
        return bitwise_codec<T>{};
    else
        return refused_codec<codec_refusal::no_encoding>{};
}

}  // namespace detail

/// @cond
/// The primary template: picks the default encoding of T (see select_default_codec), or marks T
/// as refused so that using it fails to compile with a sentence that says what to add.
template <class T, class Enable>
struct codec : decltype(detail::select_default_codec<T>()) {};
/// @endcond

namespace detail {

template <class T>
using codec_of = codec<std::remove_cv_t<T>>;

template <class C>
consteval bool refused() {
    return requires { C::mproc_refusal; };
}

/// True when T's encoding is exactly its sizeof(T) object bytes, so a contiguous run of T's is
/// encoded and decoded with one memcpy.
template <class T>
consteval bool bitwise() {
    using C = codec_of<T>;
    if constexpr (requires { C::mproc_bitwise; })
        return C::mproc_bitwise;
    else
        return false;
}
template <class T>
inline constexpr bool bitwise_v = bitwise<T>();

/// The fewest bytes a T can take on the wire; 0 when unknown (user codecs, serialize types).
template <class T>
consteval std::size_t min_wire_size() {
    using C = codec_of<T>;
    if constexpr (requires { C::mproc_min_size; })
        return C::mproc_min_size;
    else
        return 0;
}
template <class T>
inline constexpr std::size_t min_wire_size_v = min_wire_size<T>();

/// a + b, saturating: minimum sizes are only used as lower bounds.
constexpr std::size_t add_sat(std::size_t a, std::size_t b) {
    return a > std::numeric_limits<std::size_t>::max() - b ? std::numeric_limits<std::size_t>::max()
                                                           : a + b;
}
constexpr std::size_t mul_sat(std::size_t a, std::size_t b) {
    return b != 0 && a > std::numeric_limits<std::size_t>::max() / b
               ? std::numeric_limits<std::size_t>::max()
               : a * b;
}

template <class T>
consteval bool encodable();

template <class... Ts>
consteval bool all_encodable(type_list<Ts...>) {
    return (encodable<Ts>() && ...);
}

template <class T>
consteval bool encodable() {
    if constexpr (std::is_array_v<T>) {
        return std::extent_v<T> != 0 && encodable<std::remove_extent_t<T>>();
    } else {
        using C = codec_of<T>;
        if constexpr (refused<C>()) {
            return false;
        } else if constexpr (!requires(Encoder& e, Decoder& d, const T& v) {
                                 C::encode(e, v);
                                 { C::decode(d) } -> std::convertible_to<std::remove_cv_t<T>>;
                             }) {
            return false;
        } else if constexpr (requires { typename C::mproc_elements; }) {
            // A library container is encodable when its elements are.
            return all_encodable(typename C::mproc_elements{});
        } else {
            return true;
        }
    }
}

/// Fails to compile, with one sentence, when C refuses its type.
template <class T, class C>
constexpr void diagnose() {
    if constexpr (refused<C>()) {
        constexpr codec_refusal why = C::mproc_refusal;
        static_assert(why != codec_refusal::raw_pointer,
                      "mproc::codec: raw pointers cannot cross a process boundary; send the "
                      "pointee");
        static_assert(why != codec_refusal::smart_pointer,
                      "mproc::codec: smart pointers cannot cross a process boundary; send the "
                      "pointee (or a std::optional of it)");
        static_assert(why != codec_refusal::view,
                      "mproc::codec: non-owning views (std::string_view, std::span, "
                      "std::reference_wrapper) cannot cross a process boundary; send an owning "
                      "std::string or std::vector");
        static_assert(why != codec_refusal::callable,
                      "mproc::codec: std::function cannot cross a process boundary; send data "
                      "that selects the function instead");
        static_assert(why != codec_refusal::no_encoding,
                      "mproc::codec: no encoding for this type; give it a member "
                      "serialize(Ar&) or specialize mproc::codec<T>");
    }
}

}  // namespace detail

/// True when values of T can be encoded and decoded: an arithmetic type, an enum, a supported
/// std library type of encodable elements, a trivially copyable struct, a type with a member
/// serialize(Ar&), or one with a codec<T> specialization. (For the last two, the members are
/// checked when serialize or the specialization is instantiated.)
/// @headerfile codec.hpp <mproc/codec.hpp>
template <class T>
concept Encodable = detail::encodable<T>();

namespace detail {

template <class T>
void encode_one(Encoder& e, const T& value) {
    if constexpr (std::is_array_v<T>) {
        // C arrays (members named in a serialize) travel as their elements, in bulk when bitwise.
        if constexpr (bitwise_v<std::remove_all_extents_t<T>>)
            e.write_bytes(&value, sizeof(T));
        else
            for (const auto& element : value) encode_one(e, element);
    } else {
        using C = codec_of<T>;
        if constexpr (refused<C>())
            diagnose<T, C>();
        else
            C::encode(e, value);
    }
}

template <class T>
T decode_one(Decoder& d) {
    static_assert(!std::is_array_v<T>,
                  "mproc::decode: a C array cannot be returned by value; use std::array");
    using C = codec_of<T>;
    if constexpr (refused<C>()) {
        diagnose<T, C>();
        throw_decode("unreachable");
    } else if constexpr (bitwise_v<T> || std::is_arithmetic_v<T> || std::is_enum_v<T>) {
        return C::decode(d);  // flat: cannot nest, needs no depth count
    } else {
        Decoder::DepthGuard guard(d);
        return C::decode(d);
    }
}

template <class T>
void decode_into(Decoder& d, T& value) {
    if constexpr (std::is_array_v<T>) {
        if constexpr (bitwise_v<std::remove_all_extents_t<T>>)
            d.read_bytes(&value, sizeof(T));
        else
            for (auto& element : value) decode_into(d, element);
    } else {
        value = decode_one<T>(d);
    }
}

inline void write_count(Encoder& e, std::size_t n) {
    const auto count = static_cast<std::uint64_t>(n);
    e.write_bytes(&count, sizeof count);
}

/// The container rule for elements that may encode to nothing (std::monostate, std::tuple<>,
/// an empty serialize, or a user codec of unknown size): such an element is followed by one zero
/// byte, so that every element of a counted container takes at least one byte on the wire and a
/// count can always be checked against the bytes left. Types known to take at least one byte
/// (MinSize > 0) pay nothing.
template <std::size_t MinSize, class F>
void encode_marked(Encoder& e, F&& encode_element) {
    if constexpr (MinSize > 0) {
        encode_element();
    } else {
        const std::size_t before = e.size();
        encode_element();
        if (e.size() == before) {
            const std::uint8_t marker = 0;
            e.write_bytes(&marker, 1);
        }
    }
}

inline void read_marker(Decoder& d) {
    std::uint8_t marker = 1;
    d.read_bytes(&marker, 1);
    if (marker != 0) throw_decode("a bad empty-element marker");
}

template <std::size_t MinSize, class F>
auto decode_marked(Decoder& d, F&& decode_element) {
    if constexpr (MinSize > 0) {
        return decode_element();
    } else if constexpr (std::is_void_v<decltype(decode_element())>) {
        const std::size_t before = d.remaining();
        decode_element();
        if (d.remaining() == before) read_marker(d);
    } else {
        const std::size_t before = d.remaining();
        auto result = decode_element();
        if (d.remaining() == before) read_marker(d);
        return result;
    }
}

template <class T>
void encode_element(Encoder& e, const T& value) {
    encode_marked<min_wire_size_v<T>>(e, [&] { encode_one(e, value); });
}

template <class T>
T decode_element(Decoder& d) {
    return decode_marked<min_wire_size_v<T>>(d, [&] { return decode_one<T>(d); });
}

}  // namespace detail

MPROC_NAMESPACE_END

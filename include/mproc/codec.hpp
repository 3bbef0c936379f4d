/// @file
/// mproc::codec: the one encoding of everything that crosses a process boundary by value.
///
/// What is encodable, and how it looks on the wire (the host's little-endian layout; both ends
/// run the same binary on the same machine, so the format is not meant to be portable or stable):
///   - bool: one byte, 0 or 1 (anything else is a DecodeError).
///   - other arithmetic types, enums (as their underlying type), std::byte: their bytes.
///   - std::string, std::vector, std::deque, std::list, std::map, std::unordered_map, std::set,
///     std::unordered_set: a u64 count, then the elements. Contiguous runs of bitwise elements
///     (arithmetic, enums, bitwise structs, std::array of those) are one memcpy each way.
///     std::vector<bool> packs eight bits a byte.
///   - std::array, std::pair, std::tuple: the elements, no count. std::monostate: nothing.
///   - std::optional: a flag byte, then the value. std::variant: the index (one byte when it has
///     at most 256 alternatives, else four), then the alternative.
///   - std::chrono::duration / time_point: the count.
///   - a type with a member `template <class Ar> void serialize(Ar& ar) { ar(a, b, c); }`
///     (cereal's style, so cereal types work unchanged; the same function serves both directions,
///     it must be default-constructible to be decoded; befriend mproc::codec_access if private).
///   - a type with a specialization of mproc::codec<T> (static encode and decode).
///   - otherwise, a trivially copyable class type is copied bitwise, padding included. A struct
///     holding pointers is copied too, and its pointers are meaningless in the other process:
///     give such a type a serialize. Bitwise decoding trusts the bytes, so a bool or an enum member
///     of such a struct could arrive holding a value it cannot hold; a struct that receives
///     untrusted bytes and has such members should define serialize as well.
///
/// Refused at compile time, with one sentence saying why: raw pointers (T*, member pointers,
/// nullptr_t), std::unique_ptr / shared_ptr / weak_ptr, std::function, the non-owning views
/// std::string_view / std::span / std::reference_wrapper, and any type with none of the above.
///
/// Decoding never trusts its input. Truncated, corrupted or hostile bytes throw mproc::DecodeError:
/// every read is bounds-checked, a bool, an optional flag or a variant index out of range is an
/// error, and so is a repeated key in a map or set, or bytes left after the value. Counts are u64
/// (no 2 GiB limit) and are checked against the bytes left before anything is allocated: a count
/// n of elements taking at least m bytes each must satisfy n * max(m, 1) <= bytes left, so a
/// decoded container never holds more elements than the message has bytes. For that to hold, an
/// element whose encoding turns out empty (std::monostate, std::tuple<>, std::array<T, 0>, an
/// empty serialize) is followed by one zero byte inside a counted container; types known to take
/// at least one byte pay nothing for this rule. Nesting deeper than Decoder::max_depth is refused,
/// so a hostile message of a recursive type cannot overflow the stack.
#pragma once

#include <mproc/detail/codec_containers.hpp>
#include <mproc/detail/codec_core.hpp>
#include <mproc/detail/codec_default.hpp>
#include <mproc/detail/codec_utility.hpp>
#include <mproc/error.hpp>
#include <mproc/version.hpp>

#include <cstddef>
#include <span>
#include <vector>

MPROC_NAMESPACE_BEGIN

/// Appends the encoding of `value` to `out` (never clears it). On an exception `out` is left as
/// it was.
/// @code
/// std::vector<std::byte> buf{std::byte{7}};
/// mproc::encode_into(buf, std::vector<double>{1.0, 2.0});  // buf keeps its first byte
/// @endcode
/// Not constrained by Encodable on purpose: a type without an encoding then fails on one
/// static_assert sentence naming the innermost culprit, not on "no matching function".
template <class T>
void encode_into(std::vector<std::byte>& out, const T& value) {
    const std::size_t mark = out.size();
    try {
        Encoder e(out);
        detail::encode_one(e, value);
    } catch (...) {
        out.resize(mark);
        throw;
    }
}

/// The encoding of `value` as a new byte vector.
/// @code
/// std::vector<std::byte> bytes = mproc::encode(std::map<std::string, int>{{"a", 1}});
/// @endcode
template <class T>
[[nodiscard]] std::vector<std::byte> encode(const T& value) {
    std::vector<std::byte> out;
    encode_into(out, value);
    return out;
}

/// The exact number of bytes encode(value) produces, found without producing them: bulk data
/// (a vector<double>, a string) is counted in one step, other containers element by element.
/// @code
/// std::size_t n = mproc::encoded_size(std::vector<double>(1000));  // 8 + 8000
/// @endcode
/// @throws whatever the value's codec throws.
template <class T>
[[nodiscard]] std::size_t encoded_size(const T& value) {
    Encoder e = Encoder::counter();
    detail::encode_one(e, value);
    return e.size();
}

/// Writes the encoding of `value` at the start of `out` (the bytes encode(value) would hold)
/// and returns how many it wrote: encoded_size(value) bytes fit exactly.
/// @code
/// std::vector<std::byte> buf(mproc::encoded_size(v));
/// mproc::encode_to(buf, v);
/// @endcode
/// @throws Error when `out` is too small (what was written of it is then unspecified);
///         whatever the value's codec throws.
template <class T>
std::size_t encode_to(std::span<std::byte> out, const T& value) {
    Encoder e(out);
    detail::encode_one(e, value);
    return e.size();
}

namespace detail {
/// For `static_assert(Encodable<T> || detail::explain_unencodable<T>(), "...")` in a class
/// template of T: when T cannot be encoded, instantiates its encoder, so that the error also
/// carries the codec's own sentence naming the innermost culprit (a raw pointer three levels
/// down), not only the class's. Always false.
template <class T>
consteval bool explain_unencodable() {
    if constexpr (!Encodable<T>) (void)&encode_one<T>;
    return false;
}
}  // namespace detail

/// Decodes one T from all of `bytes`.
/// @code
/// auto m = mproc::decode<std::map<std::string, int>>(bytes);
/// @endcode
/// @throws DecodeError when the bytes are not exactly one T (truncated, corrupted, trailing bytes).
template <class T>
[[nodiscard]] T decode(std::span<const std::byte> bytes) {
    Decoder d(bytes);
    T value = detail::decode_one<T>(d);
    if (d.remaining() != 0) detail::throw_decode("trailing bytes after the value");
    return value;
}

/// Decodes the next T from `d`, leaving the rest (for envelopes: a tag, then a value).
/// @code
/// mproc::Decoder d(bytes); std::uint8_t tag; d(tag);
/// auto value = mproc::decode<Result>(d);
/// @endcode
/// @throws DecodeError when the next bytes are not a T.
template <class T>
[[nodiscard]] T decode(Decoder& d) {
    return detail::decode_one<T>(d);
}

MPROC_NAMESPACE_END

// The codec's byte streams: Encoder, Decoder, and the declaration of the customization point
// mproc::codec<T>. Include <mproc/codec.hpp> rather than this file.
#pragma once

#include <mproc/error.hpp>
#include <mproc/version.hpp>

#include <bit>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>
#include <string>
#include <vector>

// The wire format is the host's object layout. Every Linux target mproc supports (x86-64, aarch64)
// is little-endian, and both ends of a message run the same binary on the same machine.
static_assert(std::endian::native == std::endian::little,
              "mproc::codec assumes a little-endian host (x86-64, aarch64)");

MPROC_NAMESPACE_BEGIN

class Encoder;
class Decoder;

/// The customization point: specialize it to give a type an encoding.
/// @code
/// template <> struct mproc::codec<Money> {
///     static void encode(mproc::Encoder& e, const Money& m) { e(m.cents, m.currency); }
///     static Money decode(mproc::Decoder& d) { Money m; d(m.cents, m.currency); return m; }
/// };
/// @endcode
/// `Enable` allows constrained partial specializations (`std::enable_if_t<...>`). The primary
/// template (defined in codec_default.hpp) serves arithmetic types, enums, types with a member
/// serialize, and trivially copyable structs; the std library types have their own
/// specializations, and a full specialization of yours takes precedence over all of them.
/// The encoding of each supported type, and what is refused: see codec.hpp.
/// @headerfile codec.hpp <mproc/codec.hpp>
template <class T, class Enable = void>
struct codec;

namespace detail {

template <class T>
void encode_one(Encoder& e, const T& value);
template <class T>
[[nodiscard]] T decode_one(Decoder& d);
template <class T>
void decode_into(Decoder& d, T& value);

[[noreturn]] inline void throw_decode(const char* what) {
    throw DecodeError(std::string("mproc::decode: ") + what);
}

}  // namespace detail

/// Appends the encoding of values to a byte vector it does not own.
/// @code
/// std::vector<std::byte> buf;
/// mproc::Encoder e(buf);
/// e(std::uint8_t{1}, std::string("hello"), 3.5);  // appends; buf is never cleared
/// @endcode
/// Two more kinds serve mproc::encoded_size and mproc::encode_to: one that only counts the bytes
/// (Encoder::counter()), and one that writes into a caller's fixed span. Codecs see the same
/// Encoder& in all three and need not know which they write to.
/// @headerfile codec.hpp <mproc/codec.hpp>
class Encoder {
public:
    /// Appends to `out`, which must outlive the Encoder.
    explicit Encoder(std::vector<std::byte>& out) noexcept : out_(&out) {}
    /// Writes into `into`, from its start. @throws Error from write_bytes when it is full.
    explicit Encoder(std::span<std::byte> into) noexcept : to_(into.data()), capacity_(into.size()) {}
    /// Counts the bytes written, and keeps none of them.
    [[nodiscard]] static Encoder counter() noexcept { return Encoder(); }

    /// Appends n raw bytes.
    void write_bytes(const void* data, std::size_t n) {
        const auto* p = static_cast<const std::byte*>(data);
        if (out_) [[likely]] {
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
        // GCC 12 at -O3 sees a buffer overflow in vector::insert that cannot happen.
#pragma GCC diagnostic ignored "-Wstringop-overflow"
#endif
            out_->insert(out_->end(), p, p + n);
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif
            return;
        }
        if (to_) {
            if (n > capacity_ - written_) throw_full();
            if (n != 0) std::memcpy(to_ + written_, p, n);
        }
        written_ += n;
    }

    /// Encodes each value in order.
    template <class... Ts>
    void operator()(const Ts&... values) {
        (detail::encode_one(*this, values), ...);
    }

    /// Bytes in the underlying vector (including those that were there before this Encoder);
    /// for a counter or a span, the bytes written so far.
    [[nodiscard]] std::size_t size() const noexcept { return out_ ? out_->size() : written_; }
    /// The vector appended to. Only for an Encoder made on a vector.
    [[nodiscard]] std::vector<std::byte>& buffer() noexcept { return *out_; }

private:
    Encoder() noexcept = default;
    [[noreturn]] static void throw_full() {
        throw Error("mproc::encode_to: the value's encoding is larger than the span given");
    }

    std::vector<std::byte>* out_ = nullptr;
    std::byte* to_ = nullptr;  // with out_ null: the span written into; both null: counting
    std::size_t capacity_ = 0;
    std::size_t written_ = 0;
};

/// Reads values back from bytes, checking every read against the bytes left.
/// @code
/// mproc::Decoder d(bytes);
/// std::uint8_t tag; d(tag);
/// auto value = mproc::decode<std::string>(d);
/// if (d.remaining() != 0) throw mproc::DecodeError("trailing bytes");
/// @endcode
/// Every failure (truncation, a bad tag, a count larger than the bytes left, nesting deeper than
/// max_depth) throws mproc::DecodeError.
/// @headerfile codec.hpp <mproc/codec.hpp>
class Decoder {
public:
    /// Values nested deeper than this are refused: a hostile message of a recursive type
    /// (struct Node { std::vector<Node> children; }) must not overflow the stack.
    static constexpr int max_depth = 1000;

    /// Reads `bytes` from their start; they must outlive the Decoder.
    explicit Decoder(std::span<const std::byte> bytes) noexcept : bytes_(bytes) {}

    /// Copies the next n bytes out. @throws DecodeError when fewer than n remain.
    void read_bytes(void* dst, std::size_t n) {
        if (n == 0) return;
        std::memcpy(dst, take(n).data(), n);
    }

    /// The next n bytes, without copying. @throws DecodeError when fewer than n remain.
    [[nodiscard]] std::span<const std::byte> take(std::size_t n) {
        if (n > remaining()) detail::throw_decode("truncated message");
        auto out = bytes_.subspan(pos_, n);
        pos_ += n;
        return out;
    }

    /// Decodes into each value in order.
    template <class... Ts>
    void operator()(Ts&... values) {
        (detail::decode_into(*this, values), ...);
    }

    /// The bytes not read yet.
    [[nodiscard]] std::size_t remaining() const noexcept { return bytes_.size() - pos_; }

    /// Reads a u64 count of elements, each taking at least `min_element_size` bytes on the wire
    /// (0 is read as 1: see the container rule in codec.hpp). A count the bytes left cannot hold
    /// is refused before anything is allocated for it.
    [[nodiscard]] std::size_t read_count(std::size_t min_element_size) {
        std::uint64_t n = 0;
        read_bytes(&n, sizeof n);
        const std::size_t per = min_element_size == 0 ? 1 : min_element_size;
        if (n > remaining() / per) detail::throw_decode("a count exceeds the bytes left");
        return static_cast<std::size_t>(n);
    }

    /// Counts one level of nesting for the lifetime of the guard.
    class DepthGuard {
    public:
        /// Enters one level. @throws DecodeError past max_depth.
        explicit DepthGuard(Decoder& d) : d_(d) {
            if (d_.depth_ >= max_depth) detail::throw_decode("values nested too deeply");
            ++d_.depth_;
        }
        ~DepthGuard() { --d_.depth_; }
        DepthGuard(const DepthGuard&) = delete;
        DepthGuard& operator=(const DepthGuard&) = delete;

    private:
        Decoder& d_;
    };

private:
    std::span<const std::byte> bytes_;
    std::size_t pos_ = 0;
    int depth_ = 0;
};

/// Gives the codec access to a private member serialize: `friend struct mproc::codec_access;`.
/// @headerfile codec.hpp <mproc/codec.hpp>
struct codec_access {
    /// @cond
    template <class T, class Ar>
    static auto serialize(T& value, Ar& ar) -> decltype(value.serialize(ar)) {
        return value.serialize(ar);
    }
    /// @endcond
};

MPROC_NAMESPACE_END

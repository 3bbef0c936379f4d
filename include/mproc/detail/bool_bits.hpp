// std::vector<bool> moved a word at a time: the Pool turns a worker's one-byte bools into a
// vector<bool>, and the codec writes and reads a vector<bool>'s bits as packed bytes. Going
// through vector<bool>'s bit references costs about a nanosecond a bit (8 to 15 ms for a prime
// search's 10,000,000 flags, with both workers idle); whole words cost about a tenth of that.
#pragma once

#include <mproc/version.hpp>

#include <bit>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <utility>
#include <vector>

MPROC_NAMESPACE_BEGIN
namespace detail {

/// The eight bools at `src` (each byte 0 or 1) as one byte, the first in the lowest bit: the
/// multiplication moves byte k's low bit to bit 56 + k, and no two partial products overlap.
[[nodiscard]] inline std::uint8_t pack8_bools(const bool* src) noexcept {
    std::uint64_t bytes;
    std::memcpy(&bytes, src, 8);
    return static_cast<std::uint8_t>((bytes * 0x0102040810204080ull) >> 56);
}

/// Where the standard library keeps a vector<bool>'s bits in plain 64-bit little-endian words
/// (libstdc++), a pointer to the word holding bit `at` and that bit's place in it; elsewhere
/// nullptr, and callers go bit by bit.
template <class A>
[[nodiscard]] std::uint64_t* bool_words(std::vector<bool, A>& v, std::size_t at, unsigned& bit) noexcept {
#if defined(__GLIBCXX__)
    if constexpr (sizeof(std::_Bit_type) == 8 && std::endian::native == std::endian::little) {
        auto it = v.begin() + static_cast<std::ptrdiff_t>(at);
        bit = it._M_offset;
        return reinterpret_cast<std::uint64_t*>(it._M_p);
    }
#endif
    (void)v, (void)at, (void)bit;
    return nullptr;
}
template <class A>
[[nodiscard]] const std::uint64_t* bool_words(const std::vector<bool, A>& v) noexcept {
#if defined(__GLIBCXX__)
    if constexpr (sizeof(std::_Bit_type) == 8 && std::endian::native == std::endian::little)
        return reinterpret_cast<const std::uint64_t*>(v.cbegin()._M_p);
#endif
    (void)v;
    return nullptr;
}

/// Appends n bools (one byte each, 0 or 1) to `out`. `words`: false forces the bit-by-bit path
/// (for tests of the path other standard libraries take).
template <class A>
void append_bools(std::vector<bool, A>& out, const bool* src, std::uint64_t n, bool words = true) {
    const std::size_t at = out.size();
    out.resize(at + n);
    unsigned bit = 0;
    std::uint64_t* word = words ? bool_words(out, at, bit) : nullptr;
    std::uint64_t i = 0;
    if (word != nullptr) {
        for (; bit != 0 && bit < 64 && i < n; ++i, ++bit) *word |= std::uint64_t{src[i]} << bit;
        if (bit == 64) ++word;
        for (; i + 64 <= n; i += 64, ++word) {
            std::uint64_t w = 0;
            for (unsigned b = 0; b < 64; b += 8) w |= std::uint64_t{pack8_bools(src + i + b)} << b;
            *word = w;
        }
    }
    for (; i < n; ++i) {  // bit by bit, skipping eight false ones at a time (most flags are false)
        if (i % 8 == 0 && i + 8 <= n && pack8_bools(src + i) == 0) {
            i += 7;
            continue;
        }
        if (src[i]) out[at + i] = true;
    }
}

/// Hands v's bits to `write(const std::byte*, std::size_t)` as ceil(size / 8) bytes, the first
/// bit in the lowest bit of the first byte, unused high bits of the last byte zero.
template <class A, class Write>
void pack_bits(const std::vector<bool, A>& v, Write&& write) {
    const std::size_t full = v.size() / 8;
    std::size_t i = 0;
    if (const std::uint64_t* words = full != 0 ? bool_words(v) : nullptr) {
        write(reinterpret_cast<const std::byte*>(words), full);
        i = full * 8;
    }
    auto byte_at = [&v](std::size_t first) {  // stops at the end: the bits past it may be stale
        unsigned value = 0;
        for (unsigned b = 0; b < 8 && first + b < v.size(); ++b) value |= (v[first + b] ? 1u : 0u) << b;
        return static_cast<std::byte>(value);
    };
    std::byte buffer[256];
    std::size_t used = 0;
    for (; i < v.size(); i += 8) {
        buffer[used++] = byte_at(i);
        if (used == sizeof buffer) write(buffer, std::exchange(used, 0));
    }
    if (used != 0) write(buffer, used);
}

/// Sets v (already sized to n) from n bits packed as pack_bits writes them.
template <class A>
void unpack_bits(std::vector<bool, A>& v, const std::byte* src) noexcept {
    const std::size_t n = v.size();
    unsigned bit = 0;
    std::size_t i = 0;
    if (std::uint64_t* words = n != 0 ? bool_words(v, 0, bit) : nullptr) {
        std::memcpy(words, src, n / 8);
        i = n / 8 * 8;
    }
    for (; i < n; ++i) v[i] = ((std::to_integer<unsigned>(src[i / 8]) >> (i % 8)) & 1u) != 0;
}

}  // namespace detail
MPROC_NAMESPACE_END

// Message framing on a byte stream: an 8-byte little-endian length, then the payload.
// 64-bit lengths, so a message is never limited to 2 GiB (Python's Connection once was).
#pragma once

#include <mproc/detail/fd.hpp>

#include <array>
#include <bit>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <new>
#include <optional>
#include <span>
#include <utility>
#include <vector>

MPROC_NAMESPACE_BEGIN
namespace detail {

static_assert(std::endian::native == std::endian::little, "mproc assumes a little-endian host");

inline constexpr std::size_t frame_header_size = sizeof(std::uint64_t);

/// Writes one frame: header and payload in one sendmsg where the kernel takes it all.
inline void send_frame(int fd, std::span<const std::byte> payload) {
    std::uint64_t length = payload.size();
    std::array<iovec, 2> parts{{{&length, sizeof length},
                                {const_cast<std::byte*>(payload.data()), payload.size()}}};
    send_all(fd, std::span<iovec>(parts.data(), payload.empty() ? 1 : 2));
}

/// A receive buffer whose growth neither copies nor clears: new bytes are left uninitialized
/// (they are read into at once), and a large block is grown by realloc, which glibc does with
/// mremap for the mmapped blocks it makes above its threshold: the pages move, nothing is copied
/// or faulted in twice. (A std::vector grown by doubling to 1 GiB copies 1 GiB and faults in 2.)
class frame_buffer {
public:
    frame_buffer() = default;
    frame_buffer(const frame_buffer&) = delete;
    frame_buffer& operator=(const frame_buffer&) = delete;
    frame_buffer(frame_buffer&& other) noexcept
        : data_(std::exchange(other.data_, nullptr)),
          size_(std::exchange(other.size_, 0)),
          capacity_(std::exchange(other.capacity_, 0)) {}
    frame_buffer& operator=(frame_buffer&& other) noexcept {
        std::swap(data_, other.data_);
        std::swap(size_, other.size_);
        std::swap(capacity_, other.capacity_);
        return *this;
    }
    ~frame_buffer() { std::free(data_); }

    [[nodiscard]] std::byte* data() noexcept { return data_; }
    [[nodiscard]] const std::byte* data() const noexcept { return data_; }
    [[nodiscard]] std::size_t size() const noexcept { return size_; }
    void clear() noexcept { size_ = 0; }
    /// `n` bytes, the first min(n, size()) kept; the others uninitialized.
    /// @throws std::bad_alloc
    void resize(std::size_t n) {
        if (n > capacity_) {
            void* grown = std::realloc(data_, n);
            if (!grown) throw std::bad_alloc();
            data_ = static_cast<std::byte*>(grown);
            capacity_ = n;
        }
        size_ = n;
    }
    [[nodiscard]] std::span<const std::byte> bytes() const noexcept { return {data_, size_}; }

private:
    std::byte* data_ = nullptr;
    std::size_t size_ = 0;
    std::size_t capacity_ = 0;
};

/// Reads one frame into `out` (replacing its contents; a std::vector<std::byte> or a
/// frame_buffer). Returns false at a clean end of stream (no byte of a new frame). The buffer
/// grows only as bytes arrive, so a corrupted or hostile length can cost at most twice the bytes
/// really sent, never a huge allocation up front.
/// @throws EndOfStream when the stream ends inside a frame.
template <class Buffer>
bool recv_frame(int fd, Buffer& out) {
    std::uint64_t length = 0;
    auto header = std::as_writable_bytes(std::span(&length, 1));
    std::size_t got = read_exact(fd, header);
    if (got == 0) return false;
    if (got < header.size()) throw EndOfStream("connection closed in the middle of a message");
    constexpr std::uint64_t first_step = 1 << 20;
    out.clear();
    std::uint64_t filled = 0;
    while (filled < length) {
        std::uint64_t target = std::min(length, std::max(first_step, 2 * filled));
        out.resize(static_cast<std::size_t>(target));
        auto window = std::span(out.data(), out.size()).subspan(static_cast<std::size_t>(filled));
        std::size_t n = read_exact(fd, window);
        filled += n;
        if (n < window.size()) throw EndOfStream("connection closed in the middle of a message");
    }
    return true;
}

/// The payload of the first complete frame at the start of `bytes`, or nullopt when the bytes
/// hold only part of one.
[[nodiscard]] inline std::optional<std::span<const std::byte>> complete_frame(
    std::span<const std::byte> bytes) noexcept {
    if (bytes.size() < frame_header_size) return std::nullopt;
    std::uint64_t length;
    std::memcpy(&length, bytes.data(), sizeof length);
    if (length > bytes.size() - frame_header_size) return std::nullopt;
    return bytes.subspan(frame_header_size, static_cast<std::size_t>(length));
}

}  // namespace detail
MPROC_NAMESPACE_END

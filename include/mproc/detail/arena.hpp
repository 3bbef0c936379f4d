// A shared arena: one memfd, mapped through a large reserved window, grown on demand.
//
// Every process that maps the window before it forks (the parent of a Pool) hands the same
// mapping, at the same address, to its children; the file's size is grown with fallocate, which
// any of them may call and which never shrinks the file, so a child never has to remap. Nothing
// has a name: the memory goes away with the last process that maps it, whatever way it ends.
#pragma once

#include <mproc/detail/fd.hpp>

#include <sys/mman.h>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <new>
#include <utility>

MPROC_NAMESPACE_BEGIN
namespace detail {

/// The arena's own bookkeeping, at offset 0 of the arena.
struct arena_header {
    std::atomic<std::uint64_t> covered;  // bytes of the file allocated so far
    std::atomic<std::uint64_t> top;      // bump pointer: first free offset
    std::uint64_t floor;                 // offset where the bump region starts (reset target)
};

class shared_arena {
public:
    static constexpr std::size_t default_window = std::size_t{64} << 30;  // address space, not memory
    static constexpr std::size_t granule = std::size_t{2} << 20;

    shared_arena() = default;
    /// Makes an arena whose first `fixed` bytes (after the header) are reserved for the owner's
    /// control structures; allocate() hands out offsets after them.
    explicit shared_arena(std::size_t fixed, std::size_t window = default_window);
    shared_arena(shared_arena&& other) noexcept { swap(other); }
    shared_arena& operator=(shared_arena&& other) noexcept {
        shared_arena(std::move(other)).swap(*this);
        return *this;
    }
    ~shared_arena() {
        if (base_) ::munmap(base_, window_);
    }

    [[nodiscard]] std::byte* base() const noexcept { return base_; }
    [[nodiscard]] arena_header& header() const noexcept { return *reinterpret_cast<arena_header*>(base_); }
    /// Start of the owner's fixed region.
    [[nodiscard]] std::byte* fixed() const noexcept { return base_ + header_bytes; }
    template <class T>
    [[nodiscard]] T* at(std::uint64_t offset) const noexcept {
        return reinterpret_cast<T*>(base_ + offset);
    }

    /// Reserves `bytes` (64-byte aligned) and returns their offset. Safe from any process.
    /// @throws Error when the window is full; SystemError when memory runs out (ENOSPC).
    [[nodiscard]] std::uint64_t allocate(std::size_t bytes) {
        const std::uint64_t size = (bytes + 63) & ~std::uint64_t{63};
        const std::uint64_t offset = header().top.fetch_add(size, std::memory_order_relaxed);
        ensure(offset + size);
        return offset;
    }

    /// Forgets every allocation (only when no process uses any). Memory beyond `keep` bytes is
    /// returned to the system, so one huge map does not pin its memory for the Pool's life.
    void reset(std::size_t keep = std::size_t{64} << 20) noexcept {
        arena_header& h = header();
        h.top.store(h.floor, std::memory_order_relaxed);
        const std::uint64_t covered = h.covered.load(std::memory_order_relaxed);
        const std::uint64_t keep_to = std::max<std::uint64_t>(h.floor + keep, granule);
        if (covered > keep_to && ::fallocate(fd_.get(), FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
                                             static_cast<off_t>(keep_to),
                                             static_cast<off_t>(covered - keep_to)) == 0) {
            // The file keeps its size (no child can fault past its end); only pages are freed.
        }
    }

    /// Makes sure the file covers [0, end).
    void ensure(std::uint64_t end) {
        arena_header& h = header();
        std::uint64_t covered = h.covered.load(std::memory_order_acquire);
        if (end <= covered) return;
        if (end > window_) throw Error("mproc: the shared arena's window is full");
        const std::uint64_t target = std::min<std::uint64_t>(
            window_, (std::max(end, 2 * covered) + granule - 1) / granule * granule);
        // fallocate, not ftruncate: it never shrinks the file under a racing grower, and running
        // out of memory is an ENOSPC here instead of a SIGBUS at first touch.
        if (::fallocate(fd_.get(), 0, static_cast<off_t>(covered), static_cast<off_t>(target - covered)) != 0)
            throw_errno("fallocate");
        while (covered < target &&
               !h.covered.compare_exchange_weak(covered, target, std::memory_order_acq_rel)) {
        }
    }

private:
    static constexpr std::size_t header_bytes = 64;

    void swap(shared_arena& other) noexcept {
        std::swap(fd_, other.fd_);
        std::swap(base_, other.base_);
        std::swap(window_, other.window_);
    }

    unique_fd fd_;
    std::byte* base_ = nullptr;
    std::size_t window_ = 0;
};

inline shared_arena::shared_arena(std::size_t fixed, std::size_t window) : window_(window) {
    fd_ = unique_fd(::memfd_create("mproc-arena", MFD_CLOEXEC));
    if (!fd_) throw_errno("memfd_create");
    const std::uint64_t floor = (header_bytes + fixed + 63) & ~std::uint64_t{63};
    const std::uint64_t initial = (floor + granule - 1) / granule * granule;
    if (::fallocate(fd_.get(), 0, 0, static_cast<off_t>(initial)) != 0) throw_errno("fallocate");
    void* p = ::mmap(nullptr, window_, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_NORESERVE, fd_.get(), 0);
    if (p == MAP_FAILED) throw_errno("mmap");
    base_ = static_cast<std::byte*>(p);
    auto* h = new (base_) arena_header{};
    h->covered.store(initial, std::memory_order_relaxed);
    h->floor = floor;
    h->top.store(floor, std::memory_order_relaxed);
}

}  // namespace detail
MPROC_NAMESPACE_END

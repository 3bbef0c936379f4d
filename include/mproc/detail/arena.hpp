// A shared arena: one memfd, mapped through a large reserved window, grown on demand.
//
// Every process that maps the window before it forks (the parent of a Pool) hands the same
// mapping, at the same address, to its children; the file's size is grown with fallocate, which
// any of them may call and which never shrinks the file, so a child never has to remap. Nothing
// has a name: the memory goes away with the last process that maps it, whatever way it ends.
#pragma once

#include <mproc/detail/fd.hpp>

#include <sys/mman.h>

#include <algorithm>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <new>
#include <cerrno>
#include <string>
#include <utility>
#include <vector>

MPROC_NAMESPACE_BEGIN
namespace detail {

/// The arena's own bookkeeping, at offset 0 of the arena.
///
/// Allocations are positions on a ring that only grow; position p lives at file offset
/// floor + p mod ring. Everything below `low_water` is garbage (its jobs are retired), so an
/// allocation fits when it ends at most `ring` bytes past low_water. Allocations never straddle
/// the ring's end, and once past the first `warm` bytes of a lap they start the next lap as soon
/// as its beginning is free again: a pool that always has some job running (a rolling window
/// of futures, a long imap) reuses the same warm pages instead of walking the whole window.
struct arena_header {
    std::atomic<std::uint64_t> covered;    // bytes of the file allocated so far
    std::atomic<std::uint64_t> top;        // ring position of the first free byte
    std::atomic<std::uint64_t> low_water;  // ring position below which nothing is in use
    std::uint64_t floor;                   // file offset where the ring starts
    std::uint64_t ring;                    // ring bytes
};

/// How a range of the arena is about to be used (see shared_arena::prefault).
enum class prefault_use { read, write };

class shared_arena {
public:
    static constexpr std::size_t default_window = std::size_t{64} << 30;  // address space, not memory
    static constexpr std::size_t granule = std::size_t{2} << 20;
    static constexpr std::uint64_t warm = std::uint64_t{64} << 20;        // kept resident when idle

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

    /// An arena for a new Pool: the one the last Pool of this process left (keep_for_reuse),
    /// whose pages are in the file already, allocated and zeroed once; else a new one.
    [[nodiscard]] static shared_arena reused(std::size_t fixed);
    /// Keeps an arena that no process uses any more (its pool's workers are all gone) for the
    /// next reused(): its first `kept_bytes` stay in the file, the rest is given back. One arena
    /// is kept at most (a newer one replaces it); a forked child never takes its parent's.
    static void keep_for_reuse(shared_arena&& arena) noexcept;
    static constexpr std::uint64_t kept_bytes = std::uint64_t{16} << 20;

    /// Maps an arena another process made, from its memfd (a Pool worker started by exec).
    [[nodiscard]] static shared_arena attach(unique_fd fd, std::size_t window) {
        shared_arena arena;
        void* p = ::mmap(nullptr, window, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_NORESERVE, fd.get(), 0);
        if (p == MAP_FAILED) throw_errno("mmap");
        arena.fd_ = std::move(fd);
        arena.base_ = static_cast<std::byte*>(p);
        arena.window_ = window;
        return arena;
    }
    /// The memfd behind the arena, and the size of the window it is mapped through.
    [[nodiscard]] int fd() const noexcept { return fd_.get(); }
    [[nodiscard]] std::size_t window() const noexcept { return window_; }

    [[nodiscard]] std::byte* base() const noexcept { return base_; }
    [[nodiscard]] arena_header& header() const noexcept { return *reinterpret_cast<arena_header*>(base_); }
    /// Start of the owner's fixed region.
    [[nodiscard]] std::byte* fixed() const noexcept { return base_ + header_bytes; }
    template <class T>
    [[nodiscard]] T* at(std::uint64_t offset) const noexcept {
        return reinterpret_cast<T*>(base_ + offset);
    }

    /// The ring position the next allocation starts from (a job's mark for release_below).
    [[nodiscard]] std::uint64_t mark() const noexcept { return header().top.load(std::memory_order_acquire); }

    /// Reserves `bytes` (64-byte aligned) and returns their offset. Safe from any process.
    /// @throws Error when the live allocations would exceed the window; SystemError when memory
    ///         runs out (ENOSPC).
    [[nodiscard]] std::uint64_t allocate(std::size_t bytes);

    /// Everything below ring position `mark` is no longer used by anyone (called by the one
    /// owner, in increasing order): later allocations may reuse it, and its pages beyond the
    /// warm part of the ring are returned to the system.
    void release_below(std::uint64_t mark) noexcept;

    /// Forgets every allocation (only when no process uses any): the next one starts a new lap,
    /// on the warm pages at the ring's start.
    void reset() noexcept {
        arena_header& h = header();
        const std::uint64_t next_lap = (h.top.load(std::memory_order_relaxed) / h.ring + 1) * h.ring;
        h.top.store(next_lap, std::memory_order_relaxed);
        h.low_water.store(next_lap, std::memory_order_release);
        punched_ = next_lap;
        punch(h.floor + warm, h.covered.load(std::memory_order_relaxed));
    }

    /// Maps the pages of [offset, offset + bytes) into this process's page tables in one system
    /// call (MADV_POPULATE_READ / _WRITE, Linux 5.14) before they are used. Every process that
    /// touches a page of a shared mapping takes its own fault on it (fork does not copy those
    /// page tables), and a fault costs a trap each: about 1.4 us a page on a 16-core VM, 12 us on
    /// a 2-core one, against 0.2 to 0.9 us a page populated in one call. Pages of the warm part,
    /// which are never given back, are remembered per process, so a warm pool asks nothing.
    /// Only an optimisation: without the call (older kernels) the pages fault in as before.
    void prefault(std::uint64_t offset, std::uint64_t bytes, prefault_use use) noexcept;

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

    /// Writes a new header for `fixed` bytes of control structures, over a file that holds
    /// `covered` bytes so far (0 for a new one).
    void format(std::size_t fixed, std::uint64_t covered);
    static constexpr std::uint64_t page = 4096;

    /// Returns the whole pages of file offsets [first, last) to the system.
    void punch(std::uint64_t first, std::uint64_t last) noexcept;

    void swap(shared_arena& other) noexcept {
        std::swap(fd_, other.fd_);
        std::swap(base_, other.base_);
        std::swap(window_, other.window_);
        std::swap(punched_, other.punched_);
        std::swap(mapped_, other.mapped_);
        std::swap(mapped_pid_, other.mapped_pid_);
    }
    [[nodiscard]] bool mapped_here(std::uint64_t page_index) const noexcept {
        return (mapped_[page_index / 64] >> (page_index % 64) & 1) != 0;
    }

    unique_fd fd_;
    std::byte* base_ = nullptr;
    std::size_t window_ = 0;
    std::uint64_t punched_ = 0;  // the owner's: ring position up to which free pages were returned
    // Per process (a forked copy starts over: its page tables map none of the parent's shared
    // pages): one bit per page below the end of the warm part, set once prefault mapped it here.
    std::vector<std::uint64_t> mapped_;
    pid_t mapped_pid_ = 0;
};

inline shared_arena::shared_arena(std::size_t fixed, std::size_t window) : window_(window) {
    fd_ = unique_fd(::memfd_create("mproc-arena", MFD_CLOEXEC));
    if (!fd_) throw_errno("memfd_create");
    void* p = ::mmap(nullptr, window_, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_NORESERVE, fd_.get(), 0);
    if (p == MAP_FAILED) throw_errno("mmap");
    base_ = static_cast<std::byte*>(p);
    format(fixed, 0);
}

inline void shared_arena::format(std::size_t fixed, std::uint64_t covered) {
    const std::uint64_t floor = (header_bytes + fixed + 63) & ~std::uint64_t{63};
    const std::uint64_t initial = (floor + granule - 1) / granule * granule;
    if (covered < initial &&
        ::fallocate(fd_.get(), 0, static_cast<off_t>(covered), static_cast<off_t>(initial - covered)) != 0)
        throw_errno("fallocate");
    auto* h = new (base_) arena_header{};
    h->covered.store(std::max(covered, initial), std::memory_order_relaxed);
    h->floor = floor;
    h->ring = (window_ - floor) / 64 * 64;
    punched_ = 0;
}

namespace arena_cache {
/// The arena kept for the next Pool, and the process that kept it. Lock-free, so that a fork
/// from another thread can never leave it locked in the child; never destroyed, so that a Pool
/// destroyed by a static destructor still finds it (the system frees it at exit).
struct kept {
    shared_arena arena;
    pid_t owner = 0;
};
inline std::atomic<kept*>& slot() noexcept {
    static std::atomic<kept*> slot{nullptr};
    return slot;
}
}  // namespace arena_cache

inline shared_arena shared_arena::reused(std::size_t fixed) {
    arena_cache::kept* k = arena_cache::slot().exchange(nullptr, std::memory_order_acq_rel);
    shared_arena arena;
    if (k != nullptr) {
        if (k->owner == current_pid()) arena.swap(k->arena);  // a parent's, in a forked child: dropped
        delete k;
    }
    if (!arena.base_) return shared_arena(fixed);
    arena.format(fixed, arena.header().covered.load(std::memory_order_relaxed));
    return arena;
}

inline void shared_arena::keep_for_reuse(shared_arena&& arena) noexcept {
    if (!arena.base_) return;
    arena.punch(kept_bytes, arena.header().covered.load(std::memory_order_relaxed));
    // The pages that stay are still mapped here, but the new owner lays out its ring afresh:
    // it asks once more (a cheap call over mapped pages) rather than trust an old layout.
    arena.mapped_.clear();
    arena.mapped_pid_ = 0;
    try {
        auto* k = new arena_cache::kept{std::move(arena), current_pid()};
        delete arena_cache::slot().exchange(k, std::memory_order_acq_rel);  // the older one goes
    } catch (...) {
        // No memory for the note: the arena is simply freed.
    }
}

inline std::uint64_t shared_arena::allocate(std::size_t bytes) {
    arena_header& h = header();
    const std::uint64_t size = (bytes + 63) & ~std::uint64_t{63};
    if (size > h.ring)
        throw Error("mproc: an allocation of " + std::to_string(bytes) + " bytes exceeds the shared arena's window");
    std::uint64_t top = h.top.load(std::memory_order_relaxed);
    std::uint64_t start = 0;
    for (;;) {
        const std::uint64_t low = h.low_water.load(std::memory_order_acquire);
        const std::uint64_t lap_start = top / h.ring * h.ring, next_lap = lap_start + h.ring;
        start = top;
        // Past the warm part, or not fitting before the lap's end: start the next lap if its
        // beginning is free (it always is once the rest of this lap is garbage).
        if (top - lap_start + size > h.ring || (top - lap_start >= warm && next_lap + size - low <= h.ring))
            start = next_lap;
        if (start + size - low > h.ring)
            throw Error("mproc: the shared arena's window is full (" + std::to_string(top - low) +
                        " bytes in use, " + std::to_string(bytes) + " more asked)");
        if (h.top.compare_exchange_weak(top, start + size, std::memory_order_acq_rel)) break;
    }
    const std::uint64_t offset = h.floor + start % h.ring;
    ensure(offset + size);
    return offset;
}

inline void shared_arena::release_below(std::uint64_t mark) noexcept {
    arena_header& h = header();
    if (mark <= h.low_water.load(std::memory_order_relaxed)) return;
    h.low_water.store(mark, std::memory_order_release);
    // Return the pages of what became free beyond the warm part of each lap it covers (at most
    // two laps: the in-use span never exceeds the ring), once there is a granule of it, so that
    // releasing stays cheap.
    if (mark - punched_ < granule) return;
    for (std::uint64_t from = punched_; from < mark;) {
        const std::uint64_t lap_start = from / h.ring * h.ring;
        const std::uint64_t to = std::min(mark, lap_start + h.ring);
        punch(h.floor + std::max(from - lap_start, warm), h.floor + (to - lap_start));
        from = to;
    }
    punched_ = mark;
}

inline void shared_arena::prefault(std::uint64_t offset, std::uint64_t bytes, prefault_use use) noexcept {
#ifdef MADV_POPULATE_WRITE
    // EINVAL on a valid range: the kernel predates the advice; stop asking, for every arena.
    // A range inside one page is left to fault in: the call would cost at least the one fault
    // it saves, and a map of one-item chunks asks for thousands of such ranges.
    if (bytes == 0 || offset / page == (offset + bytes - 1) / page) return;
    static std::atomic<bool> unsupported{false};
    if (!base_ || unsupported.load(std::memory_order_relaxed)) return;
    const std::uint64_t kept_pages = (header().floor + warm) / page;  // never punched
    if (mapped_pid_ != current_pid()) {
        mapped_.assign((kept_pages + 63) / 64, 0);
        mapped_pid_ = current_pid();
    }
    std::uint64_t first = offset / page, end = (offset + bytes + page - 1) / page;
    while (first < end && first < kept_pages && mapped_here(first))
        first = first % 64 == 0 && mapped_[first / 64] == ~std::uint64_t{0} ? first + 64 : first + 1;
    while (end > first && end - 1 < kept_pages && mapped_here(end - 1)) --end;
    if (first >= end) return;
    const int saved_errno = errno;
    const int advice = use == prefault_use::write ? MADV_POPULATE_WRITE : MADV_POPULATE_READ;
    if (sys().madvise(base_ + first * page, (end - first) * page, advice) == 0) {
        for (std::uint64_t p = first; p < std::min(end, kept_pages); ++p) mapped_[p / 64] |= std::uint64_t{1} << (p % 64);
    } else if (errno == EINVAL) {
        unsupported.store(true, std::memory_order_relaxed);
    }
    errno = saved_errno;  // ENOMEM, EINTR...: the pages fault in when touched, as without the call
#else
    (void)offset, (void)bytes, (void)use;
#endif
}

inline void shared_arena::punch(std::uint64_t first, std::uint64_t last) noexcept {
    // Whole pages only: a page that is partly in use keeps its contents.
    last = std::min(last, header().covered.load(std::memory_order_relaxed)) / page * page;
    first = (first + page - 1) / page * page;
    if (last > first)
        (void)::fallocate(fd_.get(), FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, static_cast<off_t>(first),
                          static_cast<off_t>(last - first));
}

}  // namespace detail
MPROC_NAMESPACE_END

// The shared memory of one Queue: control words, the slot array, the byte ring and the spill
// space, all in one memfd mapped once, before any child is forked.
//
//   virtual layout:  [control + slots][ring][ring again][spill window]
//   file layout:     [control + slots][ring][spill window]
//
// The ring is mapped twice, back to back, so a record that runs past the ring's end is still
// one contiguous span: one memcpy to write it, and the reader decodes it in place. The spill
// window takes messages too large for the ring; its pages are returned to the system when the
// message is consumed. The memfd is closed as soon as it is mapped: nothing has a name, nothing
// is left behind, and the memory goes away with the last process that maps it.
#pragma once

#include <mproc/detail/fd.hpp>
#include <mproc/detail/futex.hpp>
#include <mproc/detail/queue_fault.hpp>
#include <mproc/detail/queue_registry.hpp>
#include <mproc/detail/robust_mutex.hpp>
#include <mproc/detail/sys.hpp>
#include <mproc/error.hpp>

#include <sys/mman.h>
#include <unistd.h>

#include <atomic>
#include <bit>
#include <cstddef>
#include <cstdint>
#include <algorithm>
#include <new>
#include <string>
#include <utility>

MPROC_NAMESPACE_BEGIN
namespace detail {

// Tickets. A put takes a record ticket (and the cells its bytes need) with one fetch_add on the
// tail word, a get takes one with one fetch_add on the head word. The tail packs the first free
// cell (high 32 bits) and the next record ticket (low 32 bits); a record ticket that wraps at
// 2^32 carries one into the cell position, which costs one unused cell (see queue_ring.hpp).
// Tickets and cell positions are compared modulo 2^32.
[[nodiscard]] constexpr std::uint32_t tlow(std::uint64_t word) noexcept { return static_cast<std::uint32_t>(word); }
[[nodiscard]] constexpr std::uint32_t thigh(std::uint64_t word) noexcept { return static_cast<std::uint32_t>(word >> 32); }
[[nodiscard]] constexpr std::uint64_t tpack(std::uint32_t high, std::uint32_t low) noexcept {
    return std::uint64_t{high} << 32 | low;
}
/// a - b as a signed distance modulo 2^32.
[[nodiscard]] constexpr std::int32_t tdiff(std::uint32_t a, std::uint32_t b) noexcept {
    return static_cast<std::int32_t>(a - b);
}

/// A record's life in its slot, for ticket t: free(t) (its producer may write), ready(t)
/// (published), taken(t) (being dropped by a process that found its holder dead), consumed(t)
/// (done; its cells wait for the reclaim walk, which makes the slot free(t + slots)). A record
/// without cells goes from ready(t) straight to free(t + slots).
enum class slot_status : std::uint32_t { free = 0, ready = 1, taken = 2, consumed = 3 };

/// A state word: the ticket (high 32 bits), then in the low 32 bits (the futex word a waiter
/// sleeps on) the status, the id of a dropping process (taken only), and a flag saying that
/// someone sleeps on the slot.
inline constexpr std::uint32_t queue_slot_waiter = std::uint32_t{1} << 31;
[[nodiscard]] constexpr std::uint64_t slot_state(std::uint32_t ticket, slot_status s, std::uint32_t holder = 0) noexcept {
    return tpack(ticket, holder << 8 | static_cast<std::uint32_t>(s));
}
[[nodiscard]] constexpr slot_status status_of(std::uint64_t state) noexcept {
    return static_cast<slot_status>(state & 3);
}
[[nodiscard]] constexpr std::uint32_t ticket_of(std::uint64_t state) noexcept { return thigh(state); }
[[nodiscard]] constexpr std::uint32_t holder_of(std::uint64_t state) noexcept {
    return (tlow(state) >> 8) & ((std::uint32_t{1} << 21) - 1);
}
[[nodiscard]] constexpr std::uint64_t without_waiter(std::uint64_t state) noexcept { return state & ~std::uint64_t{queue_slot_waiter}; }

/// A record's cells: at most 2^23 - 1 (a larger message is spilled).
inline constexpr std::uint64_t queue_max_cells = (std::uint64_t{1} << 23) - 1;

/// One record: its state, where its bytes are, and up to 32 bytes of message in the slot itself.
/// A slot per cache line: ~8 processes write a lap of slots, and two records never share a line.
struct alignas(64) queue_slot {
    static constexpr std::size_t inline_bytes = 32;

    std::atomic<std::uint64_t> state;  // (ticket, status, waiter flag)
    std::uint64_t meta;                // message length (low 40 bits) | cells (high 24 bits)
    std::uint64_t where;               // (ticket, first cell): written once the slot is the producer's
    std::uint64_t spill;               // spill block word or 0; taken by an exchange when freed
    std::byte data[inline_bytes];      // a message of up to inline_bytes
};
static_assert(sizeof(queue_slot) == 64);

[[nodiscard]] constexpr std::uint64_t slot_meta(std::uint64_t length, std::uint64_t cells) noexcept {
    return cells << 40 | length;
}
[[nodiscard]] constexpr std::uint64_t meta_length(std::uint64_t meta) noexcept { return meta & ((std::uint64_t{1} << 40) - 1); }
[[nodiscard]] constexpr std::uint64_t meta_cells(std::uint64_t meta) noexcept { return meta >> 40; }

/// Atomic access to a plain word of shared memory (slot words are plain so that the owner
/// writes them cheaply; they are read atomically where a process that found their writer dead
/// may race on them).
[[nodiscard]] inline std::atomic_ref<std::uint64_t> atomic_word(const std::uint64_t& word) noexcept {
    return std::atomic_ref<std::uint64_t>(const_cast<std::uint64_t&>(word));
}

/// What a process is doing with tickets, one word per registry entry on a line of its own:
/// how many of its operations are between "about to take a ticket" and "done with it"
/// (bits 56-63), and when exactly one is, whether it recorded its tickets (bit 55), their kind
/// (bit 54: 1 for a get), their count (bits 32-53) and the first (bits 0-31). A process that
/// found a record stuck asks these words who may hold it: a process with an operation in flight
/// whose tickets are unrecorded (the nanoseconds around the fetch_add) or cover that record.
struct alignas(64) queue_claim {
    std::atomic<std::uint64_t> word{0};

    static constexpr std::uint64_t one_in_flight = std::uint64_t{1} << 56;
    static constexpr std::uint64_t recorded = std::uint64_t{1} << 55;
    static constexpr std::uint64_t get_kind = std::uint64_t{1} << 54;
    static constexpr std::uint64_t count_mask = (std::uint64_t{1} << 22) - 1;

    [[nodiscard]] static constexpr std::uint64_t in_flight(std::uint64_t w) noexcept { return w >> 56; }
    /// Whether an operation described by `w` may hold `ticket` of kind `get`.
    [[nodiscard]] static constexpr bool may_hold(std::uint64_t w, bool get, std::uint32_t ticket) noexcept {
        if (in_flight(w) == 0) return false;
        if (in_flight(w) > 1 || (w & recorded) == 0) return true;
        if (((w & get_kind) != 0) != get) return false;
        const auto first = static_cast<std::uint32_t>(w);
        const std::uint64_t count = (w >> 32) & count_mask;
        return static_cast<std::uint32_t>(ticket - first) < count;
    }
};

/// The words every process of a queue shares. Words written on every put and every get sit on
/// cache lines of their own, so producers and consumers do not slow each other down.
struct queue_control {
    static constexpr unsigned spill_classes = 48;  // block sizes 2^0 .. 2^47 (only >= 2^16 used)

    queue_control(std::uint64_t cells_, std::uint64_t slots_, std::uint64_t maxsize_, std::uint64_t spill_bytes_)
        : cells(cells_), slots(slots_), maxsize(maxsize_), spill_bytes(spill_bytes_) {}

    alignas(64) std::atomic<std::uint64_t> tail{0};     // (first free cell, next put ticket)
    alignas(64) std::atomic<std::uint64_t> head{0};     // next get ticket (low 32 bits)
    alignas(64) std::atomic<std::uint64_t> reclaim{0};  // (first cell not yet free again, oldest record not recycled)
    alignas(64) futex_word put_waiters{0};  // producers asleep waiting for cells or maxsize room
    futex_word space_event{0};              // bumped when cells or maxsize room may have come
    alignas(64) futex_word join_waiters{0};
    futex_word closed{0};
    alignas(64) futex_word done{0};         // task_done() calls plus dropped records, mod 2^32
    std::atomic<std::uint64_t> dropped{0};
    const std::uint64_t cells;
    const std::uint64_t slots;
    const std::uint64_t maxsize;
    const std::uint64_t spill_bytes;
    robust_mutex spill_lock;
    std::uint64_t spill_top = 0;                    // under spill_lock
    std::uint64_t spill_free[spill_classes] = {};  // free block offset + 1, under spill_lock
    // An allocation in progress (under spill_lock): the block taken off a list and the slot
    // (index + 1) it goes to. A process that takes the lock from a dead owner finishes it.
    std::uint64_t spill_moving_block = 0;
    std::uint64_t spill_moving_slot = 0;
    queue_registry registry{};
    queue_claim claims[queue_registry::entries];
};

/// The mapping of one queue. Copies of a Queue share it through a shared_ptr; forked children
/// inherit it at the same address.
class queue_memory {
public:
    static constexpr std::size_t cell_bytes = 128;
    static constexpr std::size_t spill_min_class = 16;  // 64 KiB
    static constexpr std::uint64_t max_slots = std::uint64_t{1} << 16;

    /// `ring_bytes`: power of two, at least 16 cells and a page. `spill_bytes`: window size.
    queue_memory(std::size_t ring_bytes, std::size_t spill_bytes, std::size_t maxsize);
    ~queue_memory() {
        if (base_) ::munmap(base_, reserved_);
    }
    queue_memory(const queue_memory&) = delete;
    queue_memory& operator=(const queue_memory&) = delete;

    [[nodiscard]] queue_control& control() const noexcept { return *control_; }
    /// The slot of record ticket `ticket`.
    [[nodiscard]] queue_slot& slot(std::uint32_t ticket) const noexcept { return slots_[ticket & (slots_count_ - 1)]; }
    [[nodiscard]] std::byte* cell(std::uint32_t pos) const noexcept { return ring_ + (pos & (cells_ - 1)) * cell_bytes; }
    [[nodiscard]] std::byte* spill_block(std::uint64_t word) const noexcept {
        return spill_ + (word & ~std::uint64_t{63});
    }
    [[nodiscard]] std::uint64_t cells() const noexcept { return cells_; }
    [[nodiscard]] std::uint64_t slots() const noexcept { return slots_count_; }

    /// Reserves a spill block for `bytes` and stores its word in `s.spill` before the lock is
    /// let go, so that the block belongs to the record (and is freed with it) the moment it
    /// leaves the free lists. False when the spill window has no block of that size left.
    [[nodiscard]] bool spill_allocate_into(std::uint64_t bytes, queue_slot& s);
    /// Gives a block back; its pages (but the first, which holds the free-list link) return to
    /// the system at once.
    void spill_release(std::uint64_t word) noexcept;
    /// The size class of a block for `bytes`.
    [[nodiscard]] static unsigned spill_class(std::uint64_t bytes) noexcept {
        const unsigned c = static_cast<unsigned>(std::bit_width(bytes - 1));
        return c < spill_min_class ? spill_min_class : c;
    }

private:
    /// Takes spill_lock; when its owner died, finishes or undoes the allocation it was making.
    /// `releasing`: the block the caller is giving back, if any (it is then surely the record's).
    void spill_lock(std::uint64_t releasing) noexcept;
    void push_free(std::uint64_t word) noexcept {
        queue_control& ctl = control();
        const unsigned c = static_cast<unsigned>(word & 63);
        *reinterpret_cast<std::uint64_t*>(spill_ + (word & ~std::uint64_t{63})) = ctl.spill_free[c];
        ctl.spill_free[c] = (word & ~std::uint64_t{63}) + 1;
    }

    std::byte* base_ = nullptr;
    std::size_t reserved_ = 0;
    queue_control* control_ = nullptr;
    queue_slot* slots_ = nullptr;
    std::byte* ring_ = nullptr;
    std::byte* spill_ = nullptr;
    std::uint64_t cells_ = 0;
    std::uint64_t slots_count_ = 0;
};

inline queue_memory::queue_memory(std::size_t ring_bytes, std::size_t spill_bytes, std::size_t maxsize) {
    const std::size_t page = static_cast<std::size_t>(::sysconf(_SC_PAGESIZE));
    // At most 2^31 cells: cell positions are compared modulo 2^32.
    if (!std::has_single_bit(ring_bytes) || ring_bytes < 16 * cell_bytes || ring_bytes < page ||
        ring_bytes > (std::size_t{1} << 38))
        throw Error("mproc::QueueOptions: ring_bytes must be a power of two from " +
                    std::to_string(std::max(16 * cell_bytes, page)) + " to 2^38");
    cells_ = ring_bytes / cell_bytes;
    slots_count_ = std::min<std::uint64_t>(cells_, max_slots);
    spill_bytes = (spill_bytes + page - 1) / page * page;
    const std::size_t control_bytes = (sizeof(queue_control) + 63) / 64 * 64;
    const std::size_t head_bytes = control_bytes + slots_count_ * sizeof(queue_slot);
    const std::size_t front = (head_bytes + page - 1) / page * page;
    reserved_ = front + 2 * ring_bytes + spill_bytes;

    unique_fd fd(::memfd_create("mproc-queue", MFD_CLOEXEC));
    if (!fd) throw_errno("memfd_create");
    // memfd files are sized without reserving memory: pages are charged as they are touched.
    if (sys().ftruncate(fd.get(), static_cast<off_t>(front + ring_bytes + spill_bytes)) != 0)
        throw_errno("ftruncate");
    void* area = sys().mmap(nullptr, reserved_, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (area == MAP_FAILED) throw_errno("mmap");
    base_ = static_cast<std::byte*>(area);
    const auto map_at = [&](std::size_t at, std::size_t bytes, std::size_t offset) {
        if (bytes == 0) return;
        if (sys().mmap(base_ + at, bytes, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED | MAP_NORESERVE,
                       fd.get(), static_cast<off_t>(offset)) == MAP_FAILED) {
            const int err = errno;
            ::munmap(std::exchange(base_, nullptr), reserved_);
            throw_errno(err, "mmap");
        }
    };
    map_at(0, front + ring_bytes, 0);
    map_at(front + ring_bytes, ring_bytes, front);                  // the ring's mirror
    map_at(front + 2 * ring_bytes, spill_bytes, front + ring_bytes);  // the spill window

    control_ = ::new (base_) queue_control(cells_, slots_count_, maxsize, spill_bytes);
    slots_ = reinterpret_cast<queue_slot*>(base_ + control_bytes);
    ring_ = base_ + front;
    spill_ = base_ + front + 2 * ring_bytes;
    for (std::uint64_t i = 0; i < slots_count_; ++i) {
        auto* s = ::new (&slots_[i]) queue_slot{};
        s->state.store(slot_state(static_cast<std::uint32_t>(i), slot_status::free), std::memory_order_relaxed);
    }
}

inline void queue_memory::spill_lock(std::uint64_t releasing) noexcept {
    queue_control& ctl = control();
    acquire_result r;
    try {
        r = ctl.spill_lock.lock();
    } catch (...) {
        return;  // cannot happen on a consistent robust mutex
    }
    if (r != acquire_result::owner_died || ctl.spill_moving_block == 0) return;
    // The dead owner took spill_moving_block off a list for slot spill_moving_slot. If the slot
    // has it (or the record was freed and its block is the one being given back now), the
    // record owns it; otherwise it never got there, and it goes back on its list.
    const std::uint64_t block = ctl.spill_moving_block;
    const queue_slot& s = slots_[ctl.spill_moving_slot - 1];
    if (block != releasing && atomic_word(s.spill).load(std::memory_order_acquire) != block) push_free(block);
    ctl.spill_moving_block = 0;
}

inline bool queue_memory::spill_allocate_into(std::uint64_t bytes, queue_slot& s) {
    const unsigned c = spill_class(bytes);
    queue_control& ctl = control();
    std::uint64_t offset = 0;
    spill_lock(0);
    if (c < queue_control::spill_classes && ctl.spill_free[c] != 0) {
        offset = ctl.spill_free[c] - 1;
        ctl.spill_moving_slot = static_cast<std::uint64_t>(&s - slots_) + 1;
        ctl.spill_moving_block = offset | c;
        ctl.spill_free[c] = *reinterpret_cast<std::uint64_t*>(spill_ + offset);
    } else if (c < queue_control::spill_classes && ctl.spill_top + (std::uint64_t{1} << c) <= ctl.spill_bytes) {
        offset = ctl.spill_top;
        ctl.spill_moving_slot = static_cast<std::uint64_t>(&s - slots_) + 1;
        ctl.spill_moving_block = offset | c;
        ctl.spill_top += std::uint64_t{1} << c;
    } else {
        ctl.spill_lock.unlock();
        return false;
    }
    queue_fault(queue_point::spill_taken);
    atomic_word(s.spill).store(offset | c, std::memory_order_release);
    ctl.spill_moving_block = 0;
    ctl.spill_lock.unlock();
    return true;
}

inline void queue_memory::spill_release(std::uint64_t word) noexcept {
    const unsigned c = static_cast<unsigned>(word & 63);
    const std::uint64_t offset = word & ~std::uint64_t{63};
    static const std::size_t page = static_cast<std::size_t>(::sysconf(_SC_PAGESIZE));
    // MADV_REMOVE punches the pages out of the memfd: a 64 MiB message does not keep 64 MiB.
    (void)::madvise(spill_ + offset + page, (std::uint64_t{1} << c) - page, MADV_REMOVE);
    spill_lock(word);
    push_free(word);
    try {
        control().spill_lock.unlock();
    } catch (...) {
        // Cannot happen: this thread holds it.
    }
}

}  // namespace detail
MPROC_NAMESPACE_END

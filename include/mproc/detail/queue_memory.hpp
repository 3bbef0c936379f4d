// The shared memory of one Queue: control words, the slot array, the byte ring and the spill
// space, all in one memfd mapped once, before any child is forked.
//
//   virtual layout:  [control + slots][ring][ring again][spill window]
//   file layout:     [control + slots][ring][spill window]
//
// The ring is mapped twice, back to back, so a record that runs past the ring's end is still
// one contiguous span: one memcpy to write it, and the reader decodes it in place. The spill
// window takes messages too large for the ring; its pages are returned to the system when the
// message is consumed. A spill block is never held by a process alone: it moves between a free
// list and the record it belongs to under one robust lock, and a note of the move lets whoever
// takes the lock from a process that died inside finish or undo it (see spill_lock). Nothing has a
// name, nothing is left behind, and the memory goes away with the last process that maps it. The
// memfd stays open (close-on-exec) while the queue does, so that the queue can be handed to a
// program started by exec, which maps the same file.
#pragma once

#include <mproc/detail/fd.hpp>
#include <mproc/detail/futex.hpp>
#include <mproc/detail/queue_fault.hpp>
#include <mproc/detail/queue_registry.hpp>
#include <mproc/detail/robust_mutex.hpp>
#include <mproc/detail/shm.hpp>
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

// Positions count ring cells modulo 2^40. Three kinds of 64-bit words pair a position (high 40
// bits) with 24 low bits: a slot's state (status and holder), a slot's span (cells it covers,
// and whether the record is spilled), and the head and tail cursors (records counted modulo
// 2^24, for qsize and maxsize).
inline constexpr std::uint64_t queue_pos_mask = (std::uint64_t{1} << 40) - 1;
inline constexpr std::uint64_t queue_low_mask = (std::uint64_t{1} << 24) - 1;

[[nodiscard]] constexpr std::uint64_t qpack(std::uint64_t pos, std::uint64_t low) noexcept {
    return (pos & queue_pos_mask) << 24 | (low & queue_low_mask);
}
[[nodiscard]] constexpr std::uint64_t qpos(std::uint64_t word) noexcept { return word >> 24; }
[[nodiscard]] constexpr std::uint64_t qlow(std::uint64_t word) noexcept { return word & queue_low_mask; }
[[nodiscard]] constexpr std::uint64_t qadd(std::uint64_t pos, std::uint64_t n) noexcept {
    return (pos + n) & queue_pos_mask;
}

/// A span word's low bits: the cells a record covers (at most 2^23 - 1), and a flag saying its
/// bytes are in a spill block (whose word is then in the record's cell header).
inline constexpr std::uint64_t queue_spilled = std::uint64_t{1} << 23;
inline constexpr std::uint64_t queue_max_cells = queue_spilled - 1;
[[nodiscard]] constexpr std::uint64_t span_cells(std::uint64_t span) noexcept { return span & queue_max_cells; }
[[nodiscard]] constexpr bool span_spilled(std::uint64_t span) noexcept { return (span & queue_spilled) != 0; }

/// A record's life: a producer claims it (writing), publishes it (ready), a consumer claims it
/// (reading) and frees it (freed). A record whose holder died is freed by whoever finds it.
enum class slot_status : std::uint32_t { writing = 0, ready = 1, reading = 2, freed = 3 };

/// A state's low 22 bits: the status's companions. `queue_in_slot` marks a record of up to 8
/// bytes held in its slot (one cell, no span). Writing and reading states name their holder
/// (21 bits, see queue_registry); a ready in-slot record gives its length instead.
inline constexpr std::uint32_t queue_in_slot = std::uint32_t{1} << 21;
inline constexpr std::uint32_t queue_holder_mask = queue_in_slot - 1;

[[nodiscard]] constexpr std::uint64_t slot_state(std::uint64_t pos, slot_status s, std::uint32_t low) noexcept {
    return qpack(pos, static_cast<std::uint64_t>(s) << 22 | low);
}
[[nodiscard]] constexpr slot_status status_of(std::uint64_t state) noexcept {
    return static_cast<slot_status>(state >> 22 & 3);
}
[[nodiscard]] constexpr std::uint32_t holder_of(std::uint64_t state) noexcept {
    return static_cast<std::uint32_t>(state) & queue_holder_mask;
}
[[nodiscard]] constexpr std::uint32_t in_slot_of(std::uint64_t state) noexcept {
    return static_cast<std::uint32_t>(state) & queue_in_slot;
}

/// One slot per ring cell; only the slot of a record's first cell is used. Four slots share a
/// cache line, and a message of up to `inline_bytes` lives in its slot's `word`, so a stream of
/// 8-byte messages moves a quarter of a cache line per message and never touches the cells.
struct alignas(16) queue_slot {
    static constexpr std::size_t inline_bytes = 8;

    std::atomic<std::uint64_t> state;  // (position, status, in-slot flag, holder id or length)
    // In-slot: the message (zeroed when freed, so it is never mistaken for a span). Otherwise
    // the span (position, cells | spilled), stored after the claim and before the tail moves.
    std::uint64_t word;
};
static_assert(sizeof(queue_slot) == 16);

/// Atomic access to a plain word of shared memory (slot words and cell headers are plain so
/// that a record's bytes can be written into them; they are read atomically where a process
/// that found their writer dead may race on them).
[[nodiscard]] inline std::atomic_ref<std::uint64_t> atomic_word(const std::uint64_t& word) noexcept {
    return std::atomic_ref<std::uint64_t>(const_cast<std::uint64_t&>(word));
}

/// The start of a record's first cell, unless it is in its slot: its length and, when spilled,
/// its spill block (taken with an atomic exchange, so that a block is given back once). The
/// message follows, 16-byte aligned.
struct queue_cell_header {
    std::uint64_t length;
    std::uint64_t spill;
};
inline constexpr std::size_t queue_header_bytes = sizeof(queue_cell_header);

/// The words every process of a queue shares. Words written on every put and every get sit on
/// cache lines of their own, so producers and consumers do not slow each other down.
struct queue_control {
    static constexpr unsigned spill_classes = 48;  // block sizes 2^0 .. 2^47 (only >= 2^16 used)

    queue_control(std::uint64_t cells_, std::uint64_t maxsize_, std::uint64_t spill_bytes_)
        : cells(cells_), maxsize(maxsize_), spill_bytes(spill_bytes_) {}

    alignas(64) std::atomic<std::uint64_t> tail{0};     // next cell to claim, records put
    alignas(64) std::atomic<std::uint64_t> head{0};     // next record to get, records got
    alignas(64) std::atomic<std::uint64_t> reclaim{0};  // first cell not yet free again
    // Each waiter count on a line of its own: a producer reads get_waiters on every put and a
    // consumer put_waiters on every get, and each count changes when its side goes to sleep.
    alignas(64) futex_word get_waiters{0};
    alignas(64) futex_word put_waiters{0};
    alignas(64) futex_word join_waiters{0};
    futex_word closed{0};
    alignas(64) futex_word data_event{0};   // bumped when a record becomes ready (or is dropped)
    alignas(64) futex_word space_event{0};  // bumped when a record is freed
    // The reclaim position the earliest sleeping producer waits for: a producer that found the
    // ring full sleeps until a good part of it is free again, so that producer and consumer do
    // not take turns cell by cell (each turn a wake-up and cache misses on both sides).
    std::atomic<std::uint64_t> space_target{0};
    alignas(64) futex_word done{0};         // task_done() calls plus dropped records, mod 2^24
    // A queue with several lanes (queue_lanes.hpp), in its first lane only: producers and
    // consumers seen so far, which deal out the lanes to processes in turn.
    alignas(64) std::atomic<std::uint32_t> lane_producers{0};
    std::atomic<std::uint32_t> lane_consumers{0};
    std::atomic<std::uint64_t> dropped{0};
    const std::uint64_t cells;
    const std::uint64_t maxsize;
    const std::uint64_t spill_bytes;
    robust_mutex spill_lock;
    std::uint64_t spill_top = 0;                    // under spill_lock
    std::uint64_t spill_free[spill_classes] = {};  // free block offset + 1, under spill_lock
    // A block on its way between a free list and a record (under spill_lock, cleared before it
    // is let go): the block's word (0: none), the record's position, and the way it goes.
    std::uint64_t spill_moving = 0;
    std::uint64_t spill_moving_pos = 0;
    bool spill_moving_out = false;  // true: from the record to a free list
    queue_registry registry{};
};

/// The mapping of one queue. Copies of a Queue share it through a shared_ptr; forked children
/// inherit it at the same address.
class queue_memory {
public:
    static constexpr std::size_t cell_bytes = 128;
    static constexpr std::size_t spill_min_class = 16;  // 64 KiB

    /// `ring_bytes`: power of two, at least 16 cells and a page. `spill_bytes`: window size.
    queue_memory(std::size_t ring_bytes, std::size_t spill_bytes, std::size_t maxsize);
    /// Maps the queue another process made, from its memfd (received with SCM_RIGHTS by a
    /// program started by exec) and the sizes it was made with.
    /// @throws DecodeError when the sizes do not describe that file's queue.
    queue_memory(unique_fd fd, std::size_t ring_bytes, std::size_t spill_bytes);
    ~queue_memory() {
        if (base_) ::munmap(base_, reserved_);
    }
    queue_memory(const queue_memory&) = delete;
    queue_memory& operator=(const queue_memory&) = delete;

    [[nodiscard]] queue_control& control() const noexcept { return *control_; }
    [[nodiscard]] queue_slot& slot(std::uint64_t pos) const noexcept { return slots_[pos & (cells_ - 1)]; }
    [[nodiscard]] std::byte* cell(std::uint64_t pos) const noexcept {
        return ring_ + (pos & (cells_ - 1)) * cell_bytes;
    }
    [[nodiscard]] queue_cell_header& header(std::uint64_t pos) const noexcept {
        return *reinterpret_cast<queue_cell_header*>(cell(pos));
    }
    [[nodiscard]] std::byte* spill_block(std::uint64_t word) const noexcept {
        return spill_ + (word & ~std::uint64_t{63});
    }
    [[nodiscard]] std::uint64_t cells() const noexcept { return cells_; }
    /// The memfd behind the mapping.
    [[nodiscard]] int fd() const noexcept { return fd_.get(); }
    /// The spill window's size in bytes (page-rounded).
    [[nodiscard]] std::size_t spill_bytes() const noexcept { return spill_bytes_; }

    /// Whether a block for `bytes` can exist in the spill window at all (with the others free).
    [[nodiscard]] bool spill_fits(std::uint64_t bytes) const noexcept {
        const unsigned c = spill_class(bytes);
        return c < queue_control::spill_classes && (std::uint64_t{1} << c) <= control_->spill_bytes;
    }
    /// Takes a spill block for the `bytes` of the record at `pos`, which the caller claimed, and
    /// names it in the record before the lock is let go: its cell header's spill word, then the
    /// span word (pos, one cell, spilled). Returns the block's word (offset | size class), 0 when
    /// no block of that size is free.
    [[nodiscard]] std::uint64_t spill_allocate(std::uint64_t pos, std::uint64_t bytes);
    /// Gives back the block that the record at `pos` (spilled, held by the caller) names, if it
    /// still names one; its pages (but the first, which holds the free-list link) return to the
    /// system at once. `after_death`: the caller took the record over from a holder that died,
    /// which may have died in here (see the definition).
    void spill_release(std::uint64_t pos, bool after_death) noexcept;
    /// The size class of a block for `bytes`.
    [[nodiscard]] static unsigned spill_class(std::uint64_t bytes) noexcept {
        const unsigned c = static_cast<unsigned>(std::bit_width(bytes - 1));
        return c < spill_min_class ? spill_min_class : c;
    }

private:
    /// Takes spill_lock; when its owner died, finishes or undoes the move it was making.
    /// @throws nothing a consistent robust mutex can produce (the caller decides what then).
    void spill_lock();
    /// Between two steps of a move under spill_lock. A SIGKILL may land between any two
    /// stores, and the next owner of the lock reads the steps in the order they are written
    /// here: the compiler must not swap them. (The processor's order needs nothing more: the
    /// kernel lets the next owner in only after the dead thread's exit, which fences.)
    static void next_step() noexcept { std::atomic_signal_fence(std::memory_order_seq_cst); }
    void spill_push(std::uint64_t word) noexcept {
        queue_control& ctl = control();
        const unsigned c = static_cast<unsigned>(word & 63);
        const std::uint64_t offset = word & ~std::uint64_t{63};
        *reinterpret_cast<std::uint64_t*>(spill_ + offset) = ctl.spill_free[c];
        next_step();  // the link before the head that leads to it
        ctl.spill_free[c] = offset + 1;
    }
    void spill_punch(std::uint64_t word) const noexcept {
        static const std::size_t page = static_cast<std::size_t>(::sysconf(_SC_PAGESIZE));
        // MADV_REMOVE punches the pages out of the memfd: a 64 MiB message does not keep 64 MiB.
        (void)::madvise(spill_ + (word & ~std::uint64_t{63}) + page, (std::uint64_t{1} << (word & 63)) - page,
                        MADV_REMOVE);
    }

    /// Checks the sizes and returns the bytes before the ring (control and slots, page-rounded).
    std::size_t layout(std::size_t ring_bytes, std::size_t spill_bytes);
    /// Maps fd_ as the layout says ([front + ring][ring again][spill window]).
    void map(std::size_t front, std::size_t ring_bytes);

    unique_fd fd_;
    std::size_t spill_bytes_ = 0;
    std::byte* base_ = nullptr;
    std::size_t reserved_ = 0;
    queue_control* control_ = nullptr;
    queue_slot* slots_ = nullptr;
    std::byte* ring_ = nullptr;
    std::byte* spill_ = nullptr;
    std::uint64_t cells_ = 0;
};

inline std::size_t queue_memory::layout(std::size_t ring_bytes, std::size_t spill_bytes) {
    const std::size_t page = static_cast<std::size_t>(::sysconf(_SC_PAGESIZE));
    if (!std::has_single_bit(ring_bytes) || ring_bytes < 16 * cell_bytes || ring_bytes < page ||
        ring_bytes > (std::size_t{1} << 40))
        throw Error("mproc::QueueOptions: ring_bytes must be a power of two from " +
                    std::to_string(std::max(16 * cell_bytes, page)) + " to 2^40");
    cells_ = ring_bytes / cell_bytes;
    spill_bytes_ = (spill_bytes + page - 1) / page * page;
    const std::size_t head_bytes =
        (sizeof(queue_control) + 63) / 64 * 64 + cells_ * sizeof(queue_slot);
    const std::size_t front = (head_bytes + page - 1) / page * page;
    reserved_ = front + 2 * ring_bytes + spill_bytes_;
    return front;
}

inline void queue_memory::map(std::size_t front, std::size_t ring_bytes) {
    void* area = sys().mmap(nullptr, reserved_, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (area == MAP_FAILED) throw_errno("mmap");
    base_ = static_cast<std::byte*>(area);
    const auto map_at = [&](std::size_t at, std::size_t bytes, std::size_t offset) {
        if (bytes == 0) return;
        if (sys().mmap(base_ + at, bytes, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED | MAP_NORESERVE,
                       fd_.get(), static_cast<off_t>(offset)) == MAP_FAILED) {
            const int err = errno;
            ::munmap(std::exchange(base_, nullptr), reserved_);
            throw_errno(err, "mmap");
        }
    };
    map_at(0, front + ring_bytes, 0);
    map_at(front + ring_bytes, ring_bytes, front);                     // the ring's mirror
    map_at(front + 2 * ring_bytes, spill_bytes_, front + ring_bytes);  // the spill window
    slots_ = reinterpret_cast<queue_slot*>(base_ + (sizeof(queue_control) + 63) / 64 * 64);
    ring_ = base_ + front;
    spill_ = base_ + front + 2 * ring_bytes;
}

inline queue_memory::queue_memory(unique_fd fd, std::size_t ring_bytes, std::size_t spill_bytes) : fd_(std::move(fd)) {
    std::size_t front = 0;
    if (spill_bytes > (std::size_t{1} << 50)) throw DecodeError("mproc::Queue: not a queue's sizes");
    try {
        front = layout(ring_bytes, spill_bytes);
    } catch (const Error& e) {
        throw DecodeError(std::string("mproc::Queue: not a queue's sizes (") + e.what() + ")");
    }
    if (spill_bytes != spill_bytes_ || fd_size(fd_.get()) != front + ring_bytes + spill_bytes_)
        throw DecodeError("mproc::Queue: the sizes do not match the queue's memory");
    map(front, ring_bytes);
    control_ = std::launder(reinterpret_cast<queue_control*>(base_));
    if (control_->cells != cells_ || control_->spill_bytes != spill_bytes_) {
        ::munmap(std::exchange(base_, nullptr), reserved_);
        throw DecodeError("mproc::Queue: the sizes do not match the queue's memory");
    }
}

inline queue_memory::queue_memory(std::size_t ring_bytes, std::size_t spill_bytes, std::size_t maxsize) {
    const std::size_t front = layout(ring_bytes, spill_bytes);
    fd_ = unique_fd(::memfd_create("mproc-queue", MFD_CLOEXEC));
    if (!fd_) throw_errno("memfd_create");
    // memfd files are sized without reserving memory: pages are charged as they are touched.
    if (sys().ftruncate(fd_.get(), static_cast<off_t>(front + ring_bytes + spill_bytes_)) != 0)
        throw_errno("ftruncate");
    map(front, ring_bytes);
    control_ = ::new (base_) queue_control(cells_, maxsize, spill_bytes_);
    for (std::uint64_t i = 0; i < cells_; ++i) {
        // Positions one lap back: no slot looks claimed for the first lap.
        const std::uint64_t before = (i - cells_) & queue_pos_mask;
        auto* s = ::new (&slots_[i]) queue_slot{};
        s->state.store(slot_state(before, slot_status::freed, queue_in_slot), std::memory_order_relaxed);
    }
}

inline void queue_memory::spill_lock() {
    queue_control& ctl = control();
    if (ctl.spill_lock.lock() != acquire_result::owner_died || ctl.spill_moving == 0) return;
    // The dead owner was moving this block. Every step below looks before it acts, so a
    // recovery cut short by another death is simply done again by the next owner.
    const std::uint64_t block = ctl.spill_moving;
    const std::uint64_t pos = ctl.spill_moving_pos;
    const unsigned c = static_cast<unsigned>(block & 63);
    const std::uint64_t offset = block & ~std::uint64_t{63};
    // On its free list means at the list's head: nothing else was pushed since (lock held).
    const bool listed = ctl.spill_free[c] == offset + 1;
    if (ctl.spill_moving_out) {
        // The record lets go of its block first, then the block goes on its list. The record is
        // still there: it is spilled, and a spilled record is freed only after a pass through
        // this lock (spill_release), so its cell header is not yet someone else's bytes.
        std::atomic_ref<std::uint64_t> named = atomic_word(header(pos).spill);
        if (named.load(std::memory_order_acquire) == block) named.store(0, std::memory_order_release);
        next_step();
        if (!listed) spill_push(block);
    } else {
        // Taken: off its list (or from the top). Named: the record's span and header say so; a
        // record that names its block gives it back only under this lock, so it is still there.
        // (Not named, the record may have been dropped and its slot reused meanwhile: taking
        // bytes there for a name would need 16 bytes to match, and would leak, never corrupt.)
        const bool taken = !listed && ctl.spill_top != offset;
        const std::uint64_t span = atomic_word(slot(pos).word).load(std::memory_order_acquire);
        const bool named = qpos(span) == pos && span_spilled(span) &&
                           atomic_word(header(pos).spill).load(std::memory_order_acquire) == block;
        if (taken && !named) spill_push(block);
    }
    next_step();
    ctl.spill_moving = 0;
}

inline std::uint64_t queue_memory::spill_allocate(std::uint64_t pos, std::uint64_t bytes) {
    const unsigned c = spill_class(bytes);
    queue_control& ctl = control();
    spill_lock();
    std::uint64_t offset = 0;
    const bool from_list = c < queue_control::spill_classes && ctl.spill_free[c] != 0;
    if (from_list) {
        offset = ctl.spill_free[c] - 1;
    } else if (c < queue_control::spill_classes && ctl.spill_top + (std::uint64_t{1} << c) <= ctl.spill_bytes) {
        offset = ctl.spill_top;
    } else {
        ctl.spill_lock.unlock();
        return 0;
    }
    // The note first: from here a death of ours leaves the block to the next owner of the lock.
    ctl.spill_moving_pos = pos;
    ctl.spill_moving_out = false;
    next_step();
    ctl.spill_moving = offset | c;
    next_step();
    queue_fault(queue_point::spill_noted);
    if (from_list) ctl.spill_free[c] = *reinterpret_cast<std::uint64_t*>(spill_ + offset);
    else ctl.spill_top += std::uint64_t{1} << c;
    next_step();
    queue_fault(queue_point::spill_taken);
    // The block's word before the span that says it is there: whoever frees the record (maybe a
    // process that finds us dead) gives the block back.
    atomic_word(header(pos).spill).store(offset | c, std::memory_order_relaxed);
    atomic_word(slot(pos).word).store(qpack(pos, 1 | queue_spilled), std::memory_order_release);
    queue_fault(queue_point::spill_recorded);
    next_step();
    ctl.spill_moving = 0;
    ctl.spill_lock.unlock();
    return offset | c;
}

inline void queue_memory::spill_release(std::uint64_t pos, bool after_death) noexcept {
    queue_control& ctl = control();
    std::atomic_ref<std::uint64_t> named = atomic_word(header(pos).spill);
    // The pages go before the lock is taken, so that others do not wait for them: the block is
    // this record's, which no one else frees. After a death, a holder before us may have died
    // in here, having let go of the block: then only the lock is sure to tell (the next owner
    // puts it on its list, and another put may fill it), and the record is freed only after
    // that pass through the lock, so that its header is still its own when the lock is sorted.
    if (!after_death)
        if (const std::uint64_t block = named.load(std::memory_order_acquire)) spill_punch(block);
    try {
        spill_lock();
    } catch (...) {
        return;  // cannot happen on a consistent robust mutex; the block stays with the record
    }
    if (const std::uint64_t block = named.load(std::memory_order_acquire)) {
        if (after_death) spill_punch(block);
        ctl.spill_moving_pos = pos;
        ctl.spill_moving_out = true;
        next_step();
        ctl.spill_moving = block;
        next_step();
        queue_fault(queue_point::spill_noted);
        named.store(0, std::memory_order_release);
        next_step();
        queue_fault(queue_point::spill_releasing);
        spill_push(block);
        next_step();
        queue_fault(queue_point::spill_released);
        ctl.spill_moving = 0;
    }
    try {
        ctl.spill_lock.unlock();
    } catch (...) {
        // Cannot happen: this thread holds it.
    }
}

}  // namespace detail
MPROC_NAMESPACE_END

// The queue's protocol over queue_memory: claims that name their holder, in-order reclaim, dead
// holders found out.
//
// Cells are numbered by a 40-bit position that only grows; cell p lives at index p mod N. A
// record covers `span` consecutive cells, and the slot of its first cell says who holds it:
//
//   producer: read tail p; slot p free this lap and room for k cells (p + k - reclaim <= N)?
//             CAS slot.state -> (p, writing, me)     the claim, naming its holder
//             slot.span = (p, k); tail = p+k          plain stores: only the claimer moves it
//             copy the bytes; slot.state = (p, ready); wake consumers if any sleep
//   consumer: read head p; slot ready? CAS slot.state -> (p, reading, me)
//             head = p+k; decode in place; slot.state = (p, freed)
//             producers move `reclaim` over every freed record in order, in batches
//
// One locked instruction per put and one per get: the claim. Everything else is a plain store
// to a line the claimer already owns, so a stream of small messages costs a few cache-line
// transfers per cache line of slots, not several per message. The price: while a claimer is
// between its CAS and its cursor store (a few instructions), others wait for it instead of
// helping; only a claimer known dead is helped past (it can no longer store a stale cursor).
//
// Every claim is a CAS on a word that carries the claimer's id, so a record is never held by an
// anonymous party. A record found writing or reading for long is checked against the registry:
// if its holder died, the finder takes the record over (CAS to reading by itself), moves the
// tail and head past it where its holder had not, frees it and counts it in `dropped`. A
// producer that died before writing its span can only have held one cell: it had not moved
// the tail. Liveness is exact (pid, start time and registry generation, see
// queue_registry.hpp), so a slow holder is never taken for dead.
//
// Sizes: a message of up to 8 bytes lives in its slot; up to half the ring (and 2^23 cells), in
// the ring's cells (contiguous thanks to the mirror mapping, decoded in place); larger, in a
// spill block whose word the slot holds, so one message larger than the ring never waits for a
// consumer.
//
// Waiting: spin a few microseconds, then sched_yield, then sleep on a futex event word (data for
// consumers, space for producers) counted in a waiter word, so that a waker makes a syscall only
// when someone sleeps. The waker reads the waiter word right after its claim CAS (a full
// barrier), and a sleeper re-reads the slot that CAS changes after counting itself in: one of
// the two sees the other, so a consumer sleeping on an empty queue is never missed. A sleeper
// that waits for a publish or a free of a record already claimed is covered by a second look
// after that store, which can miss only in a window of nanoseconds; such waits sleep in short
// slices, so that costs at most a slice, never a hang. A producer that found the ring full
// sleeps until a sixteenth of the ring is free again (space_target), not one cell at a time.
#pragma once

#include <mproc/detail/deadline.hpp>
#include <mproc/detail/futex.hpp>
#include <mproc/detail/queue_memory.hpp>
#include <mproc/detail/queue_wait.hpp>

#include <sched.h>

#include <atomic>
#include <chrono>
#include <climits>
#include <cstring>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <type_traits>

MPROC_NAMESPACE_BEGIN
namespace detail {

/// One process's view of a queue: the shared mapping plus what this process caches.
struct queue_shared {
    queue_shared(std::size_t ring_bytes, std::size_t spill_bytes, std::size_t maxsize)
        : memory(ring_bytes, spill_bytes, maxsize) {}
    queue_memory memory;
    std::atomic<std::uint64_t> me{0};            // pid << 32 | registry id, of this process
    std::atomic<std::uint64_t> reclaim_seen{0};  // a recent reclaim cursor (never ahead of it)
    std::atomic<std::uint64_t> tail_seen{0};     // a recent tail position (never ahead of it)
};

class queue_ring {
public:
    queue_ring(std::size_t ring_bytes, std::size_t spill_bytes, std::size_t maxsize)
        : shared_(std::make_shared<queue_shared>(ring_bytes, spill_bytes, maxsize)) {}

    /// Puts one message of `length` bytes, which write(std::byte* to) fills in place. False when
    /// the deadline passed first. @throws EndOfStream once closed; Error when the message fits
    /// neither the ring nor the spill window.
    template <class Write>
    bool put(std::uint64_t length, Write&& write, const Deadline& deadline) {
        static_assert(std::is_nothrow_invocable_v<Write&, std::byte*>,
                      "a claimed record must be completed: write() must not throw");
        const std::optional<claimed> record = claim(length, deadline);
        if (!record) return false;
        write(record->to);
        publish(*record);
        return true;
    }

    /// Puts bytes already encoded.
    bool put(std::span<const std::byte> message, const Deadline& deadline) {
        return put(message.size(), [&](std::byte* to) noexcept { queue_copy(to, message.data(), message.size()); }, deadline);
    }

    /// Passes the next message's bytes to consume(span) and frees the record afterwards, also
    /// when consume throws. False when the deadline passed first.
    /// @throws EndOfStream once closed and drained.
    template <class Consume>
    bool get(const Deadline& deadline, Consume&& consume);

    void close() noexcept;
    [[nodiscard]] bool closed() const noexcept { return ctl().closed.load(std::memory_order_acquire) != 0; }
    [[nodiscard]] std::size_t qsize() const noexcept {
        return (qlow(ctl().tail.load(std::memory_order_acquire)) - qlow(ctl().head.load(std::memory_order_acquire))) &
               queue_low_mask;
    }
    [[nodiscard]] bool full() const noexcept;
    [[nodiscard]] std::uint64_t dropped() const noexcept { return ctl().dropped.load(std::memory_order_acquire); }
    [[nodiscard]] std::size_t maxsize() const noexcept { return ctl().maxsize; }
    [[nodiscard]] std::size_t ring_bytes() const noexcept { return mem().cells() * queue_memory::cell_bytes; }

    void task_done();
    bool join(const Deadline& deadline);

private:
    enum class room_status { room, ring_full, bound_full };

    /// A record claimed by this producer: where its bytes go.
    struct claimed {
        queue_slot* slot;
        std::uint64_t pos;
        std::byte* to;
        bool getters_sleep;  // seen right after the claim: consumers to wake once it is ready
    };
    [[nodiscard]] std::optional<claimed> claim(std::uint64_t length, const Deadline& deadline);
    void publish(const claimed& record) noexcept;

    [[nodiscard]] queue_memory& mem() const noexcept { return shared_->memory; }
    [[nodiscard]] queue_control& ctl() const noexcept { return shared_->memory.control(); }
    [[nodiscard]] std::uint32_t holder_id();
    room_status room(std::uint64_t tail, std::uint64_t cells, std::uint64_t& oldest_pos, std::uint64_t& oldest_state);
    std::uint64_t advance_reclaim(std::uint64_t& oldest_state) noexcept;
    bool wait_for_tail(std::uint64_t tail, std::uint64_t state, stall_watch& watch, const Deadline& deadline);
    void advance_head(std::uint64_t head, const queue_slot& s) noexcept;
    /// Moves `cursor` (tail or head) past the record at `pos` if it still points at it. Only for
    /// records whose claimer is gone: a live claimer moves its cursor with a plain store.
    static void skip_record(std::atomic<std::uint64_t>& cursor, std::uint64_t pos, std::uint64_t cells) noexcept {
        std::uint64_t at = cursor.load(std::memory_order_acquire);
        if (qpos(at) == pos)
            cursor.compare_exchange_strong(at, qpack(qadd(pos, cells), qlow(at) + 1), std::memory_order_acq_rel);
    }
    void free_record(queue_slot& s, std::uint64_t pos, std::uint64_t span, bool putters_sleep) noexcept;
    /// Takes the slot a few records after `pos` for writing, when it is known published: a
    /// consumer behind its producers then finds its next slots at hand; one at the producers'
    /// heels leaves the line they are writing alone.
    void prefetch_published(std::uint64_t pos) const noexcept {
        const std::uint64_t ahead = qadd(pos, prefetch_distance);
        std::uint64_t known = shared_->tail_seen.load(std::memory_order_relaxed);
        if (((known - ahead) & queue_pos_mask) >= queue_pos_mask / 2 || known == ahead) {
            known = qpos(ctl().tail.load(std::memory_order_relaxed));
            shared_->tail_seen.store(known, std::memory_order_relaxed);
            if (((known - ahead) & queue_pos_mask) >= queue_pos_mask / 2 || known == ahead) return;
        }
        prefetch_for_write(&mem().slot(ahead));
    }
    /// Waits (briefly, spinning) until the tail is `settle_cells` past `head_pos` or stops moving.
    void settle(std::uint64_t head_pos) const noexcept {
        const queue_control& c = ctl();
        std::uint64_t seen = c.tail.load(std::memory_order_acquire);
        for (int round = 0; round < 16; ++round) {
            if (((qpos(seen) - head_pos) & queue_pos_mask) >= settle_cells) return;
            for (int i = 0; i < 16; ++i) cpu_relax();
            const std::uint64_t now = c.tail.load(std::memory_order_acquire);
            if (now == seen) return;  // the producers paused: take what is there
            seen = now;
        }
    }
    void drop(std::uint64_t pos, std::uint64_t state);
    /// Drops every record taken by a consumer that died holding it (join() needs them done).
    void drop_dead_readers();

    /// Whether position `pos` is at or past `target` (positions wrap at 2^40).
    static bool reached(std::uint64_t pos, std::uint64_t target) noexcept {
        return ((pos - target) & queue_pos_mask) < queue_pos_mask / 2;
    }
    void lower_space_target(std::uint64_t target) noexcept {
        std::atomic<std::uint64_t>& word = ctl().space_target;
        std::uint64_t seen = word.load(std::memory_order_seq_cst);
        while (!reached(target, seen) || target == seen) {
            if (word.compare_exchange_weak(seen, target, std::memory_order_seq_cst)) return;
        }
    }

    /// Wakes sleepers on `event` if any: `count` of them (one per published message, so that
    /// four idle consumers do not all wake for one message).
    static void notify(futex_word& event, futex_word& waiters, int count = INT_MAX) noexcept {
        if (waiters.load(std::memory_order_seq_cst) != 0) {
            event.fetch_add(1, std::memory_order_seq_cst);
            futex_wake(event, count);
        }
    }

    /// The waiter's half of notify: spins a little, then sleeps on `event` until it moves, the
    /// slice passes or changed() holds. False only when the deadline had passed already.
    template <class Changed>
    static bool sleep(futex_word& event, futex_word& waiters, const Deadline& deadline,
                      std::chrono::milliseconds slice, Changed&& changed);

    static constexpr std::chrono::microseconds spin_time{10};
    static constexpr std::chrono::microseconds yield_time{50};
    static constexpr std::uint64_t prefetch_distance = 16;  // slots: 8 cache lines ahead
    static constexpr std::uint64_t settle_cells = 16;

    /// Asks for the cache line of `p` with intent to write: the next claims CAS these slots,
    /// and a line fetched only for reading would need a second transfer to be written.
    static void prefetch_for_write(const void* p) noexcept {
#if defined(__x86_64__) || defined(__i386__)
        asm volatile("prefetchw %0" : : "m"(*static_cast<const char*>(p)));  // any x86-64 runs it
#else
        __builtin_prefetch(p, 1);
#endif
    }

    std::shared_ptr<queue_shared> shared_;
};

template <class Changed>
bool queue_ring::sleep(futex_word& event, futex_word& waiters, const Deadline& deadline,
                       std::chrono::milliseconds slice, Changed&& changed) {
    if (deadline.expired()) return false;
    // Spin for a while by the clock (a pause lasts 10 to 150 cycles depending on the CPU): a
    // partner that is running acts within microseconds, and a sleep costs both sides a syscall.
    // Polls are spaced out: each one pulls a cache line away from the partner that is about to
    // write it, and letting a few messages gather turns lock-step into batches.
    // Then yield: with more processes than cores (four producers and four consumers on two),
    // a partner that would act may be waiting for this core, and sched_yield hands it over
    // without the syscalls and wake-up latency of a futex sleep on both sides.
    const auto start = std::chrono::steady_clock::now();
    int gap = 4;
    for (auto now = start; now - start < spin_time + yield_time; now = std::chrono::steady_clock::now()) {
        if (changed()) return true;
        if (now - start < spin_time) {
            for (int i = 0; i < gap; ++i) cpu_relax();
            gap = gap < 64 ? 2 * gap : gap;
        } else {
            ::sched_yield();
        }
    }
    struct counted {
        futex_word& w;
        ~counted() { w.fetch_sub(1, std::memory_order_release); }
    } registration{waiters};
    waiters.fetch_add(1, std::memory_order_seq_cst);
    const std::uint32_t seen = event.load(std::memory_order_seq_cst);
    if (!changed()) (void)futex_wait(event, seen, bounded_slice(deadline, slice));
    return true;
}

inline std::uint32_t queue_ring::holder_id() {
    const auto pid = static_cast<std::uint64_t>(current_pid());
    const std::uint64_t me = shared_->me.load(std::memory_order_relaxed);
    if (me >> 32 == pid) [[likely]]
        return static_cast<std::uint32_t>(me);
    const std::uint32_t id = ctl().registry.enroll();
    shared_->me.store(pid << 32 | id, std::memory_order_relaxed);
    return id;
}

inline std::optional<queue_ring::claimed> queue_ring::claim(std::uint64_t length, const Deadline& deadline) {
    queue_memory& m = mem();
    queue_control& c = ctl();
    std::uint64_t cells = length <= queue_slot::inline_bytes ? 1 : (length + queue_memory::cell_bytes - 1) / queue_memory::cell_bytes;
    // Taken before the claim, so that running out of spill space fails the put cleanly.
    struct spill_block {
        queue_memory& m;
        std::uint64_t word = 0;
        ~spill_block() {
            if (word) m.spill_release(word);
        }
    } spill{m};
    if (cells > m.cells() / 2 || cells > queue_max_cells) {
        cells = 1;
        spill.word = m.spill_allocate(length);
        if (!spill.word)
            throw Error("mproc::Queue: a message of " + std::to_string(length) +
                        " bytes does not fit the spill window (QueueOptions::spill_bytes = " +
                        std::to_string(c.spill_bytes) + ")");
    }
    const std::uint32_t me = holder_id();
    stall_watch watch;
    for (;;) {
        if (c.closed.load(std::memory_order_acquire)) throw EndOfStream("mproc::Queue: put() on a closed queue");
        const std::uint64_t tail = c.tail.load(std::memory_order_acquire);
        const std::uint64_t pos = qpos(tail);
        queue_slot& s = m.slot(pos);
        std::uint64_t state = s.state.load(std::memory_order_acquire);
        if (qpos(state) == pos) {  // claimed, and its producer has not moved the tail yet
            if (!wait_for_tail(tail, state, watch, deadline)) return std::nullopt;
            continue;
        }
        // A slot newer than our tail means the tail we read is laps old: read it again.
        if (((pos - qpos(state)) & queue_pos_mask) >= queue_pos_mask / 2) continue;
        std::uint64_t oldest_pos = 0, oldest_state = 0;
        const room_status why = room(tail, cells, oldest_pos, oldest_state);
        if (why == room_status::room) {
            // seq_cst: the claim and the read of get_waiters after it pair with a sleeping
            // consumer's count-in and re-read of this slot (see the top of this file).
            if (!s.state.compare_exchange_strong(state, slot_state(pos, slot_status::writing, me),
                                                 std::memory_order_seq_cst))
                continue;
            const bool getters_sleep = c.get_waiters.load(std::memory_order_seq_cst) != 0;
            queue_fault(queue_point::put_claimed);
            std::uint64_t span = cells;
            if (spill.word) {
                // The block's word before the span that says it is there: whoever frees the
                // record (maybe a process that finds us dead) gives the block back.
                std::atomic_ref<std::uint64_t>(s.word).store(std::exchange(spill.word, 0), std::memory_order_relaxed);
                span |= queue_spilled;
            }
            s.span.store(qpack(pos, span), std::memory_order_release);
            queue_fault(queue_point::put_spanned);
            c.tail.store(qpack(qadd(pos, cells), qlow(tail) + 1), std::memory_order_release);
            // The next slots are this producer's to claim soon: start taking their lines now.
            // Only slots already reclaimed: taking a line a consumer still reads slows both.
            if (((qadd(pos, cells + prefetch_distance) - shared_->reclaim_seen.load(std::memory_order_relaxed)) &
                 queue_pos_mask) < m.cells())
                prefetch_for_write(&m.slot(pos + cells + prefetch_distance));
            s.length = length;
            std::byte* to = length <= queue_slot::inline_bytes ? reinterpret_cast<std::byte*>(&s.word) : m.cell(pos);
            if (span_spilled(span)) to = m.spill_block(std::atomic_ref<std::uint64_t>(s.word).load(std::memory_order_relaxed));
            return claimed{&s, pos, to, getters_sleep};
        }
        // A consumer that died holding the oldest record must not keep the ring full.
        const bool held = why == room_status::ring_full && qpos(oldest_state) == oldest_pos &&
                          status_of(oldest_state) == slot_status::reading;
        if (held && watch.holder_dead(oldest_state, c.registry, deadline.expired())) {
            drop(oldest_pos, oldest_state);
            continue;
        }
        const std::uint64_t seen_head = c.head.load(std::memory_order_seq_cst);
        const std::uint64_t head_state = m.slot(qpos(seen_head)).state.load(std::memory_order_seq_cst);
        // Ring full: wait until a sixteenth of the ring is free beyond what this record needs.
        const std::uint64_t target = qadd(qpos(tail), cells + m.cells() / 16 - m.cells());
        if (why == room_status::ring_full) lower_space_target(target);
        // Short slices: a free stored just as we counted ourselves in may go unseen by its
        // consumer (see the top of this file).
        const bool slept = sleep(c.space_event, c.put_waiters, deadline, std::chrono::milliseconds(5), [&] {
            if (c.closed.load(std::memory_order_acquire) != 0) return true;
            if (why == room_status::bound_full)
                return c.head.load(std::memory_order_seq_cst) != seen_head ||
                       m.slot(qpos(seen_head)).state.load(std::memory_order_seq_cst) != head_state;
            if (c.tail.load(std::memory_order_acquire) != tail) return true;
            // The head first: reclaim never passes it, and walking the slots at the consumers'
            // heels would pull the lines they are freeing away from them.
            std::uint64_t ignored;
            return reached(qpos(c.head.load(std::memory_order_acquire)), target) &&
                   reached(advance_reclaim(ignored), target);
        });
        if (!slept) return std::nullopt;
    }
}

inline void queue_ring::publish(const claimed& record) noexcept {
    record.slot->state.store(slot_state(record.pos, slot_status::ready, 0), std::memory_order_release);
    // A consumer that counted itself in before our claim was seen then; a second look catches
    // one that came to wait for this record since.
    queue_control& c = ctl();
    if (record.getters_sleep || c.get_waiters.load(std::memory_order_seq_cst) != 0) {
        c.data_event.fetch_add(1, std::memory_order_seq_cst);
        futex_wake(c.data_event, 1);
    }
}

inline queue_ring::room_status queue_ring::room(std::uint64_t tail, std::uint64_t cells,
                                                std::uint64_t& oldest_pos, std::uint64_t& oldest_state) {
    const std::uint64_t end = qadd(qpos(tail), cells);
    // The cursor seen last, kept in this process: the shared one is read only when it must have
    // moved, so a producer does not pull its line from the consumers on every put.
    std::uint64_t reclaim = shared_->reclaim_seen.load(std::memory_order_acquire);
    if (((end - reclaim) & queue_pos_mask) > mem().cells()) {
        reclaim = advance_reclaim(oldest_state);
        shared_->reclaim_seen.store(reclaim, std::memory_order_release);
        if (((end - reclaim) & queue_pos_mask) > mem().cells()) {
            oldest_pos = reclaim;
            return room_status::ring_full;
        }
    }
    const std::uint64_t bound = ctl().maxsize;
    if (bound != 0 && ((qlow(tail) - qlow(ctl().head.load(std::memory_order_acquire))) & queue_low_mask) >= bound)
        return room_status::bound_full;
    return room_status::room;
}

inline std::uint64_t queue_ring::advance_reclaim(std::uint64_t& oldest_state) noexcept {
    queue_control& c = ctl();
    std::uint64_t reclaim = c.reclaim.load(std::memory_order_acquire);
    for (;;) {
        // Walk every freed record in order, then move the cursor once. A record seen freed
        // stays so until the cursor passes it, so a successful CAS covers a valid walk.
        std::uint64_t end = reclaim;
        for (std::uint64_t walked = 0; walked < mem().cells();) {
            const queue_slot& s = mem().slot(end);
            const std::uint64_t state = s.state.load(std::memory_order_acquire);
            if (qpos(state) != end || status_of(state) != slot_status::freed) {
                oldest_state = state;
                break;
            }
            const std::uint64_t cells = span_cells(s.span.load(std::memory_order_acquire));
            end = qadd(end, cells);
            walked += cells;
        }
        if (end == reclaim) return reclaim;
        if (c.reclaim.compare_exchange_strong(reclaim, end, std::memory_order_seq_cst)) return end;
    }
}

inline bool queue_ring::wait_for_tail(std::uint64_t tail, std::uint64_t state, stall_watch& watch,
                                      const Deadline& deadline) {
    // The claimer stores the tail a few instructions after its claim, unless it was preempted
    // or died there. Only a writing record can sit at the tail (a publish or a drop comes after
    // the tail's move).
    queue_control& c = ctl();
    for (int i = 0; i < 64; ++i) {
        if (c.tail.load(std::memory_order_acquire) != tail) return true;
        cpu_relax();
    }
    if (status_of(state) == slot_status::writing && watch.holder_dead(state, c.registry, deadline.expired())) {
        drop(qpos(tail), state);
        return true;
    }
    if (deadline.expired()) return false;
    ::sched_yield();
    return true;
}

inline void queue_ring::advance_head(std::uint64_t head, const queue_slot& s) noexcept {
    // Only for a record seen freed at the head: a drop that has not moved the head yet (a live
    // consumer moves the head before it frees).
    const std::uint64_t span = s.span.load(std::memory_order_acquire);
    if (qpos(span) != qpos(head)) return;  // our head is stale: the slot moved on
    ctl().head.compare_exchange_strong(head, qpack(qadd(qpos(head), span_cells(span)), qlow(head) + 1),
                                       std::memory_order_acq_rel);
}

}  // namespace detail
MPROC_NAMESPACE_END

// The consumer's half and the whole-queue operations.
#include <mproc/detail/queue_ring_get.hpp>

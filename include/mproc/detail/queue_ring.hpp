// The queue's protocol over queue_memory: ticket claims, a turn per slot, holders found out.
//
// Records are numbered by 32-bit tickets; record t lives in slot t mod S. A record's bytes are
// in its slot (up to 32 bytes), in consecutive ring cells, or in a spill block.
//
//   producer: announce "taking tickets" in its claim word (one per thread, own cache line)
//             (p, t) = tail.fetch_add(cells, 1)   one locked instruction claims ticket and cells
//             record t in its claim word; wait until slot t is free(t) (its turn this lap),
//             then until maxsize and the cells allow; write where/length/spill into the slot,
//             the bytes where they go; state = ready(t) (an exchange: wakes a sleeper)
//   consumer: announce; t = head.fetch_add(1); record t; wait for ready(t); decode in place;
//             state = free(t + S) (no cells) or consumed(t), which the reclaim walk turns
//             into free(t + S) once the cells before it are free too.
//
// Nobody waits for anybody to publish a cursor: a claim is one fetch_add, and the claimer
// then owns its ticket. Timed and non-blocking calls, which must be able to give up, claim
// with a CAS instead, and only once their record is ready (a get) or their turn, room and
// maxsize are there (a put): they never hold a ticket while they wait.
//
// Crash safety. Every ticket holder is known: between its announcement and its end, a
// thread's claim word says it has an operation in flight and, once recorded (nanoseconds
// after the fetch_add), which tickets it holds. A process that finds a record stuck (a free(t)
// slot whose ticket a producer took, a ready(t) one whose ticket a consumer took) for a
// millisecond asks every claim word who may hold t: a process in flight whose tickets are
// unrecorded, or recorded and covering t. If none of them is alive (pid, start time and
// registry generation: see queue_registry.hpp), the holder died: the finder takes the record
// (CAS to taken, naming itself, so that its own death there is found the same way), frees its
// spill block, marks it consumed and counts it in `dropped`; the consumer of that ticket, if
// any, skips it. A slow or stopped holder is alive, and is waited for.
//
// Cells. Tickets and cells are claimed by the same fetch_add, so cells are in ticket order,
// and the reclaim walk (any process that needs room) moves the reclaim cursor (first busy
// cell, oldest busy record) over consumed records in order. A record whose producer died
// before naming its cells keeps the cursor's cell behind until the next record is known
// (its slot names its first cell, or the tail does): cells are freed late, never early.
// When the ticket half of the tail wraps at 2^32 it carries one into the cell half: that cell
// is simply never used.
//
// Waiting: spin by the clock for 10 us (no sched_yield at a first miss), then yield the core
// for up to 50 us (with more processes than cores the partner may be waiting for this one),
// then sleep. A consumer
// sleeps on its slot's state (the low 32 bits are a futex word; a flag in it tells the
// producer that someone sleeps, so a publish makes a system call only then). A producer
// sleeps on space_event, counted in put_waiters, which every free checks after its exchange.
// Sleeps are sliced, so a record whose holder dies is looked at again within milliseconds.
#pragma once

#include <mproc/detail/deadline.hpp>
#include <mproc/detail/futex.hpp>
#include <mproc/detail/queue_memory.hpp>
#include <mproc/detail/queue_wait.hpp>

#include <linux/futex.h>
#include <sched.h>

#include <atomic>
#include <chrono>
#include <climits>
#include <cstring>
#include <exception>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <type_traits>
#include <vector>

MPROC_NAMESPACE_BEGIN
namespace detail {

/// One process's view of a queue: the shared mapping, and a number that tells it from every
/// other queue this process made (the key of each thread's registry id cache).
struct queue_shared {
    queue_shared(std::size_t ring_bytes, std::size_t spill_bytes, std::size_t maxsize)
        : memory(ring_bytes, spill_bytes, maxsize), serial(next_serial().fetch_add(1, std::memory_order_relaxed) + 1) {}
    queue_memory memory;
    const std::uint64_t serial;

    static std::atomic<std::uint64_t>& next_serial() noexcept {
        static std::atomic<std::uint64_t> counter{0};
        return counter;
    }
};

/// A thread's registry ids in the last few queues it used: (queue serial, tid << 32 | id).
struct queue_id_cache {
    struct entry {
        std::uint64_t serial = 0;
        std::uint64_t me = 0;
    };
    entry entries[8];
    unsigned next = 0;
};
inline thread_local queue_id_cache queue_ids;

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
        return put_or_give_up(length, [&](std::byte* to) noexcept { write(to); return true; }, deadline);
    }

    /// put() for a writer that may fail: write(std::byte* to) returns false or throws, and the
    /// claimed record is then given up (never delivered, not counted as dropped) before the
    /// exception, or Error for false, goes on to the caller.
    template <class Write>
    bool put_or_give_up(std::uint64_t length, Write&& write, const Deadline& deadline);

    /// Puts bytes already encoded.
    bool put(std::span<const std::byte> message, const Deadline& deadline) {
        return put(message.size(), [&](std::byte* to) noexcept { queue_copy(to, message.data(), message.size()); }, deadline);
    }

    /// Puts `n` messages with one claim: size(i) gives message i's length (called for all
    /// before the claim), write(i, to) fills it (false or an exception: that message and the
    /// ones after it are given up, the ones before are delivered). Blocks while full.
    template <class Size, class Write>
    void put_many(std::size_t n, Size&& size, Write&& write);

    /// Passes the next message's bytes to consume(span) and frees the record afterwards, also
    /// when consume throws. False when the deadline passed first.
    /// @throws EndOfStream once closed and drained.
    template <class Consume>
    bool get(const Deadline& deadline, Consume&& consume);

    /// Takes up to `max` messages that are ready, with one claim, waiting until the deadline for
    /// the first; consume(i, span) gets each. Returns how many (0: the deadline passed).
    /// Every record taken is freed, also when consume throws (the first exception goes on).
    /// @throws EndOfStream once closed and drained.
    template <class Consume>
    std::size_t get_many(std::size_t max, const Deadline& deadline, Consume&& consume);

    void close() noexcept;
    [[nodiscard]] bool closed() const noexcept { return ctl().closed.load(std::memory_order_acquire) != 0; }
    [[nodiscard]] std::size_t qsize() const noexcept {
        const std::int32_t d = tdiff(tlow(ctl().tail.load(std::memory_order_acquire)),
                                     tlow(ctl().head.load(std::memory_order_acquire)));
        return d > 0 ? static_cast<std::size_t>(d) : 0;
    }
    [[nodiscard]] bool full() const noexcept;
    [[nodiscard]] std::uint64_t dropped() const noexcept { return ctl().dropped.load(std::memory_order_acquire); }
    [[nodiscard]] std::size_t maxsize() const noexcept { return ctl().maxsize; }
    [[nodiscard]] std::size_t ring_bytes() const noexcept { return mem().cells() * queue_memory::cell_bytes; }

    void task_done();
    bool join(const Deadline& deadline);

private:
    /// Where a message goes: in its slot, in `cells` ring cells, or spilled.
    struct plan {
        std::uint64_t length = 0;
        std::uint64_t cells = 0;
        bool spilled = false;
    };
    [[nodiscard]] plan plan_for(std::uint64_t length) const noexcept {
        plan p{length, 0, false};
        if (length <= queue_slot::inline_bytes) return p;
        p.cells = (length + queue_memory::cell_bytes - 1) / queue_memory::cell_bytes;
        if (p.cells > mem().cells() / 2 || p.cells > queue_max_cells) {
            p.cells = 0;
            p.spilled = true;
        }
        return p;
    }

    /// This thread's claim word, announced and ended around each operation (see the top). Its
    /// thread is its one writer, so plain stores do: the fetch_add or CAS that takes the
    /// tickets comes after the announcement and is a release, so a process that sees the
    /// tickets taken sees the announcement (or what followed it) too.
    class claim_guard {
    public:
        explicit claim_guard(std::atomic<std::uint64_t>& word) noexcept : word_(word) {}
        ~claim_guard() { end(); }
        claim_guard(const claim_guard&) = delete;
        claim_guard& operator=(const claim_guard&) = delete;

        /// Before the fetch_add or CAS that takes tickets: from now on this thread may hold any.
        void begin() noexcept {
            word_.store(queue_claim::one_in_flight, std::memory_order_relaxed);
            active_ = true;
        }
        /// Right after: the tickets held.
        void record(bool get, std::uint32_t first, std::uint64_t count) noexcept {
            if (count > queue_claim::count_mask) return;  // left unrecorded: a holder of any ticket
            word_.store(queue_claim::one_in_flight | queue_claim::recorded | (get ? queue_claim::get_kind : 0) | count << 32 | first,
                        std::memory_order_release);
        }
        /// Before taking tickets again in the same operation.
        void unrecord() noexcept { word_.store(queue_claim::one_in_flight, std::memory_order_relaxed); }
        void end() noexcept {
            if (!active_) return;
            active_ = false;
            word_.store(0, std::memory_order_release);
        }

    private:
        std::atomic<std::uint64_t>& word_;
        bool active_ = false;
    };

    [[nodiscard]] queue_memory& mem() const noexcept { return shared_->memory; }
    [[nodiscard]] queue_control& ctl() const noexcept { return shared_->memory.control(); }
    [[nodiscard]] std::uint32_t holder_id();
    [[nodiscard]] std::atomic<std::uint64_t>& my_claim() { return ctl().claims[holder_id() & (queue_registry::entries - 1)].word; }
    /// Takes a registry entry for this thread (once per thread and queue, off the hot path).
    [[gnu::noinline, gnu::cold]] std::uint32_t enroll(std::uint64_t tid) {
        bool fresh = false;
        const std::uint32_t id = ctl().registry.enroll(fresh);
        // A dead thread's claims are forgotten: its tickets then have no live candidate.
        if (fresh) ctl().claims[id & (queue_registry::entries - 1)].word.store(0, std::memory_order_seq_cst);
        queue_id_cache& ids = queue_ids;
        ids.entries[ids.next++ % 8] = {shared_->serial, tid << 32 | id};
        return id;
    }

    // ---- the producer's side ----
    /// Waits until record `t`, whose ticket this producer holds, may be written: its slot's
    /// turn, maxsize, and `cells` cells from `pos`. Then names them in the slot.
    /// False when the queue was closed while it waited: the producer then abandons the record
    /// (ends its claim without a word), and the first process that finds it stuck drops it, so
    /// that a put blocked on a full queue that nobody drains still ends at close().
    [[nodiscard]] bool wait_to_write(std::uint32_t t, std::uint32_t pos, const plan& p);
    /// Writes and publishes record `t` (waited for): false or an exception from write gives it up.
    template <class Write>
    bool fill(std::uint32_t t, const plan& p, std::uint32_t pos, Write& write);
    /// Frees a record whose ticket this process holds and that it will not deliver (a failed
    /// write, a put after close): not counted as dropped.
    void give_up(std::uint32_t t, std::uint32_t pos, const plan& p) noexcept;
    /// Checks after a claim: true when the queue was closed meanwhile.
    [[nodiscard]] bool closed_after_claim() const noexcept { return ctl().closed.load(std::memory_order_seq_cst) != 0; }
    [[nodiscard]] bool cell_room(std::uint32_t pos, std::uint64_t cells) const noexcept {
        const std::uint32_t free_from = thigh(ctl().reclaim.load(std::memory_order_acquire));
        return static_cast<std::uint32_t>(pos + cells - free_from) <= mem().cells();
    }
    [[nodiscard]] bool below_maxsize(std::uint32_t t) const noexcept {
        return ctl().maxsize == 0 ||
               tdiff(t, tlow(ctl().head.load(std::memory_order_seq_cst))) < static_cast<std::int64_t>(ctl().maxsize);
    }
    /// Moves the reclaim cursor over consumed records; returns the first busy cell.
    std::uint32_t advance_reclaim() noexcept;
    /// A producer's sleep (on space_event) until changed() or a slice passes; false only when
    /// the deadline had passed already.
    template <class Changed>
    bool producer_sleep(const Deadline& deadline, Changed&& changed);
    /// After a slot was freed or a head moved: wake producers that sleep.
    void notify_producers() noexcept {
        queue_control& c = ctl();
        if (c.put_waiters.load(std::memory_order_seq_cst) != 0) {
            c.space_event.fetch_add(1, std::memory_order_seq_cst);
            futex_wake(c.space_event);
        }
    }

    // ---- the consumer's side ----
    /// Reads record `t` (ready, its ticket ours), passes its bytes to consume, frees it.
    template <class Consume>
    void take(std::uint32_t t, Consume& consume);
    void free_record(queue_slot& s, std::uint32_t t, std::uint64_t cells) noexcept;
    /// A wait on slot `s` seen in state `state`: spins, then flags the slot and sleeps on it for
    /// at most `slice`, or 1 ms when a producer holds ticket `short_if_taken` by then (a
    /// consumer's wait; see store_state).
    void slot_sleep(queue_slot& s, std::uint64_t state, const Deadline& deadline, std::chrono::milliseconds slice,
                    std::optional<std::uint32_t> short_if_taken = std::nullopt);
    /// Whether a get at ticket `t` has reached the end of a closed queue.
    [[nodiscard]] bool drained(std::uint32_t t) const noexcept {
        const queue_control& c = ctl();
        return c.closed.load(std::memory_order_seq_cst) != 0 && tdiff(tlow(c.tail.load(std::memory_order_seq_cst)), t) <= 0;
    }

    // ---- holders that died ----
    /// Looks at a record stuck in state `state`: drops it when its holder is dead, moves the
    /// reclaim walk when it waits for that. Returns whether anything changed.
    bool resolve(std::uint64_t state);
    /// Whether a live process may hold ticket `t` of a put (get == false) or a get.
    [[nodiscard]] bool live_holder(bool get, std::uint32_t t) const;
    /// Takes the record in state `state` from its dead holder and frees it, counted.
    bool drop(std::uint64_t state, bool counted) noexcept;
    /// Checks every record in the ring for dead holders (join() needs them done).
    void sweep_dead();

    static void wake_slot(queue_slot& s) noexcept {
        sys().futex(reinterpret_cast<std::uint32_t*>(&s.state), FUTEX_WAKE, INT_MAX, nullptr);
    }
    /// Stores `next` into a slot (an exchange), waking a sleeper it finds flagged.
    static void set_state(queue_slot& s, std::uint64_t next) noexcept {
        if (s.state.exchange(next, std::memory_order_seq_cst) & queue_slot_waiter) wake_slot(s);
    }
    /// Moves the head past record `t`, which will never be delivered, when no consumer holds its
    /// ticket yet (qsize() then no longer counts it). One that does skips it itself.
    void skip_head(std::uint32_t t) noexcept {
        std::uint64_t head = ctl().head.load(std::memory_order_acquire);
        if (tlow(head) == t) ctl().head.compare_exchange_strong(head, head + 1, std::memory_order_seq_cst);
    }
    /// set_state() on the hot paths (a publish, a free) without a locked instruction: the flag
    /// is read just before a plain store. A sleeper that flags the slot after that read and
    /// before the store is not woken, but its futex_wait then either finds the word changed
    /// (and returns at once) or, only when it was already in the kernel in those nanoseconds,
    /// sleeps out its slice. Consumers flag a slot with a CAS and then choose a 1 ms slice
    /// whenever a producer already holds the ticket (so a publish after the flag can only cost
    /// that); a producer flags with a 5 ms slice.
    static void store_state(queue_slot& s, std::uint64_t next) noexcept {
        if (s.state.load(std::memory_order_relaxed) & queue_slot_waiter) [[unlikely]] {
            set_state(s, next);
            return;
        }
        s.state.store(next, std::memory_order_release);
    }
    /// Whether ticket `a` comes strictly before `b`.
    static bool before(std::uint32_t a, std::uint32_t b) noexcept { return tdiff(b, a) > 0; }

    /// Spins by the clock while !changed(): a partner that is running acts within microseconds,
    /// and a sleep costs both sides a system call. True when changed() came true.
    template <class Changed>
    static bool spin(Changed&& changed) {
        if (changed()) return true;
        const auto start = std::chrono::steady_clock::now();
        int gap = 4;
        do {
            for (int i = 0; i < gap; ++i) cpu_relax();
            gap = gap < 64 ? 2 * gap : gap;
            if (changed()) return true;
        } while (std::chrono::steady_clock::now() - start < spin_time);
        // Then hand the core over for a while before sleeping: with more processes than cores
        // the partner that would act may be waiting for this very core, and a yield gives it
        // without the two system calls and the wake-up latency of a futex sleep.
        do {
            ::sched_yield();
            if (changed()) return true;
        } while (std::chrono::steady_clock::now() - start < spin_time + yield_time);
        return false;
    }

    static constexpr std::chrono::microseconds spin_time{10};
    static constexpr std::chrono::microseconds yield_time{50};

    std::shared_ptr<queue_shared> shared_;
};

inline std::uint32_t queue_ring::holder_id() {
    const auto tid = static_cast<std::uint64_t>(current_tid());
    for (const auto& e : queue_ids.entries)
        if (e.serial == shared_->serial && e.me >> 32 == tid) return static_cast<std::uint32_t>(e.me);
    return enroll(tid);
}

// ---------------------------------------------------------------------------------------------
// Producers

template <class Write>
bool queue_ring::put_or_give_up(std::uint64_t length, Write&& write, const Deadline& deadline) {
    queue_control& c = ctl();
    const plan p = plan_for(length);
    if (c.closed.load(std::memory_order_acquire)) throw EndOfStream("mproc::Queue: put() on a closed queue");
    claim_guard claim(my_claim());
    std::uint32_t t = 0, pos = 0;
    if (deadline.is_never()) {
        claim.begin();
        const std::uint64_t got = c.tail.fetch_add(tpack(static_cast<std::uint32_t>(p.cells), 1), std::memory_order_seq_cst);
        queue_fault(queue_point::put_ticketed);
        t = tlow(got);
        pos = thigh(got);
        claim.record(false, t, 1);
    } else {
        // Timed: claim only when the turn, the cells and maxsize are there, so that giving up
        // never leaves a ticket behind.
        stall_watch watch;
        for (;;) {
            if (c.closed.load(std::memory_order_acquire)) throw EndOfStream("mproc::Queue: put() on a closed queue");
            std::uint64_t tail = c.tail.load(std::memory_order_acquire);
            t = tlow(tail);
            pos = thigh(tail);
            queue_slot& s = mem().slot(t);
            const std::uint64_t state = without_waiter(s.state.load(std::memory_order_acquire));
            const bool turn = state == slot_state(t, slot_status::free);
            const bool room = p.cells == 0 || cell_room(pos, p.cells) || (advance_reclaim(), cell_room(pos, p.cells));
            if (turn && room && below_maxsize(t)) {
                claim.begin();
                if (c.tail.compare_exchange_strong(tail, tpack(static_cast<std::uint32_t>(pos + p.cells), t + 1),
                                                   std::memory_order_seq_cst)) {
                    queue_fault(queue_point::put_ticketed);
                    claim.record(false, t, 1);
                    break;
                }
                claim.end();
                continue;
            }
            // What holds us up: the slot's previous record, or (maxsize) the record at the head.
            if (!turn) {
                if (status_of(state) == slot_status::consumed) advance_reclaim();
                if (watch.time_to_look(state, deadline.expired()) && resolve(state)) continue;
            } else if (!below_maxsize(t)) {
                const std::uint32_t h = tlow(c.head.load(std::memory_order_acquire));
                const std::uint64_t hs = without_waiter(mem().slot(h).state.load(std::memory_order_acquire));
                if (watch.time_to_look(hs, deadline.expired()) && resolve(hs)) continue;
                if (ticket_of(hs) == h && status_of(hs) == slot_status::consumed) {
                    std::uint64_t hw = c.head.load(std::memory_order_acquire);
                    if (tlow(hw) == h) c.head.compare_exchange_strong(hw, hw + 1, std::memory_order_seq_cst);
                    continue;
                }
            } else {
                advance_reclaim();
            }
            const bool slept = producer_sleep(deadline, [&] {
                return c.tail.load(std::memory_order_acquire) != tail ||
                       without_waiter(s.state.load(std::memory_order_seq_cst)) != state ||
                       (turn && below_maxsize(t) && (p.cells == 0 || cell_room(pos, p.cells))) ||
                       c.closed.load(std::memory_order_acquire) != 0;
            });
            if (!slept) return false;
        }
    }
    queue_fault(queue_point::put_claimed);
    if (closed_after_claim()) {
        give_up(t, pos, p);
        throw EndOfStream("mproc::Queue: put() on a closed queue");
    }
    if (!fill(t, p, pos, write))
        throw Error("mproc::Queue: the value encoded to another size than mproc::encoded_size said "
                    "(does its codec depend on something that changed meanwhile?)");
    return true;
}

template <class Size, class Write>
void queue_ring::put_many(std::size_t n, Size&& size, Write&& write) {
    queue_control& c = ctl();
    std::vector<plan> plans(n);
    for (std::size_t i = 0; i < n; ++i) plans[i] = plan_for(size(i));
    // One claim per part of at most half the ring (cells and slots): a claim of more than a
    // ring's worth would wait for itself.
    for (std::size_t from = 0; from < n;) {
        std::size_t to = from;
        std::uint64_t cells = 0;
        while (to < n && to - from < mem().slots() / 2 && (to == from || cells + plans[to].cells <= mem().cells() / 2))
            cells += plans[to++].cells;
        if (c.closed.load(std::memory_order_acquire)) throw EndOfStream("mproc::Queue: put() on a closed queue");
        claim_guard claim(my_claim());
        claim.begin();
        const std::uint64_t got = c.tail.fetch_add(
            tpack(static_cast<std::uint32_t>(cells), static_cast<std::uint32_t>(to - from)), std::memory_order_seq_cst);
        queue_fault(queue_point::put_ticketed);
        const std::uint32_t first = tlow(got);
        claim.record(false, first, to - from);
        queue_fault(queue_point::put_claimed);
        std::uint32_t pos = thigh(got);
        // From record i on, nothing is delivered: each is given up in turn.
        const auto give_up_from = [&](std::size_t i, std::uint32_t at) {
            for (; i < to; ++i) {
                give_up(first + static_cast<std::uint32_t>(i - from), at, plans[i]);
                at += static_cast<std::uint32_t>(plans[i].cells);
            }
        };
        if (closed_after_claim()) {
            give_up_from(from, pos);
            throw EndOfStream("mproc::Queue: put() on a closed queue");
        }
        for (std::size_t i = from; i < to; ++i) {
            auto write_one = [&](std::byte* into) { return write(i, into); };
            const std::uint32_t next = pos + static_cast<std::uint32_t>(plans[i].cells);
            bool written = false;
            try {
                written = fill(first + static_cast<std::uint32_t>(i - from), plans[i], pos, write_one);
            } catch (...) {
                give_up_from(i + 1, next);
                throw;
            }
            if (!written) {
                give_up_from(i + 1, next);
                throw Error("mproc::Queue: a value encoded to another size than mproc::encoded_size said");
            }
            pos = next;
        }
        from = to;
    }
}

template <class Write>
bool queue_ring::fill(std::uint32_t t, const plan& p, std::uint32_t pos, Write& write) {
    queue_memory& m = mem();
    queue_slot& s = m.slot(t);
    // Closed while we waited: the record is abandoned (see wait_to_write).
    if (!wait_to_write(t, pos, p)) throw EndOfStream("mproc::Queue: put() on a closed queue");
    if (p.spilled && !m.spill_allocate_into(p.length, s)) {
        give_up(t, pos, p);
        throw Error("mproc::Queue: a message of " + std::to_string(p.length) +
                    " bytes does not fit the spill window (QueueOptions::spill_bytes = " +
                    std::to_string(ctl().spill_bytes) + ")");
    }
    queue_fault(queue_point::put_spanned);
    std::byte* to = p.spilled ? m.spill_block(atomic_word(s.spill).load(std::memory_order_relaxed))
                  : p.cells   ? m.cell(pos)
                              : s.data;
    bool written = false;
    try {
        written = write(to);
    } catch (...) {
        give_up(t, pos, p);
        throw;
    }
    if (!written) {
        give_up(t, pos, p);
        return false;
    }
    store_state(s, slot_state(t, slot_status::ready));
    return true;
}

inline bool queue_ring::wait_to_write(std::uint32_t t, std::uint32_t pos, const plan& p) {
    queue_control& c = ctl();
    queue_memory& m = mem();
    queue_slot& s = m.slot(t);
    stall_watch watch;
    // The slot's turn: the record a lap back consumed and recycled.
    for (;;) {
        const std::uint64_t state = without_waiter(s.state.load(std::memory_order_acquire));
        if (state == slot_state(t, slot_status::free)) break;
        if (status_of(state) == slot_status::consumed && ticket_of(state) == t - m.slots()) {
            // The walk recycles it; a walker that died after moving the cursor left it to us.
            advance_reclaim();
            std::uint64_t seen = s.state.load(std::memory_order_acquire);
            if (without_waiter(seen) == state && before(ticket_of(state), tlow(c.reclaim.load(std::memory_order_acquire))) &&
                s.state.compare_exchange_strong(seen, slot_state(t, slot_status::free), std::memory_order_seq_cst)) {
                if (seen & queue_slot_waiter) wake_slot(s);
                break;
            }
        }
        if (watch.time_to_look(state, false) && resolve(state)) continue;
        if (c.closed.load(std::memory_order_acquire)) return false;
        // The ring is full. Sleep on the slot a sixteenth of the ring ahead while the record a
        // lap before it is still busy too: woken once per sixteenth of the ring, not once per
        // record (producer and consumers would take turns record by record, each turn a
        // wake-up). Consumers take records in ticket order, so ours is free by then.
        const std::uint32_t ahead = t + static_cast<std::uint32_t>(m.slots() / 16);
        queue_slot& a = m.slot(ahead);
        const std::uint64_t ahead_state = without_waiter(a.state.load(std::memory_order_acquire));
        if (m.slots() >= 32 && ticket_of(ahead_state) == ahead - m.slots() &&
            status_of(ahead_state) != slot_status::consumed && status_of(state) != slot_status::consumed)
            slot_sleep(a, ahead_state, Deadline::never(), std::chrono::milliseconds(5));
        else
            slot_sleep(s, state, Deadline::never(), std::chrono::milliseconds(5));
    }
    atomic_word(s.where).store(tpack(t, pos), std::memory_order_release);
    s.meta = slot_meta(p.length, p.cells);
    // maxsize: at most that many tickets ahead of the consumers'.
    while (!below_maxsize(t)) {
        const std::uint32_t h = tlow(c.head.load(std::memory_order_acquire));
        queue_slot& hs = m.slot(h);
        const std::uint64_t hstate = without_waiter(hs.state.load(std::memory_order_acquire));
        // A record at the head that was dropped has no consumer to skip it: skip it here.
        if ((ticket_of(hstate) == h && status_of(hstate) == slot_status::consumed) || before(h, ticket_of(hstate))) {
            std::uint64_t hw = c.head.load(std::memory_order_acquire);
            if (tlow(hw) == h) c.head.compare_exchange_strong(hw, hw + 1, std::memory_order_seq_cst);
            continue;
        }
        if (watch.time_to_look(hstate, false) && resolve(hstate)) continue;
        if (c.closed.load(std::memory_order_acquire)) return false;
        (void)producer_sleep(Deadline::never(), [&] {
            return below_maxsize(t) || without_waiter(hs.state.load(std::memory_order_seq_cst)) != hstate ||
                   c.closed.load(std::memory_order_relaxed) != 0;
        });
    }
    // The cells, freed in ticket order by the reclaim walk.
    if (p.cells == 0) return true;
    while (!cell_room(pos, p.cells)) {
        advance_reclaim();
        if (cell_room(pos, p.cells)) break;
        const std::uint64_t cursor = c.reclaim.load(std::memory_order_acquire);
        const std::uint64_t oldest = without_waiter(m.slot(tlow(cursor)).state.load(std::memory_order_acquire));
        if (watch.time_to_look(oldest, false) && resolve(oldest)) continue;
        if (c.closed.load(std::memory_order_acquire)) return false;
        (void)producer_sleep(Deadline::never(), [&] {
            return cell_room(pos, p.cells) || without_waiter(m.slot(tlow(cursor)).state.load(std::memory_order_seq_cst)) != oldest ||
                   c.closed.load(std::memory_order_relaxed) != 0;
        });
    }
    return true;
}

inline void queue_ring::give_up(std::uint32_t t, std::uint32_t pos, const plan& p) noexcept {
    queue_control& c = ctl();
    queue_slot& s = mem().slot(t);
    // Our ticket: the slot becomes ours in turn (its where/meta may be written already).
    try {
        if (atomic_word(s.where).load(std::memory_order_acquire) != tpack(t, pos) && !wait_to_write(t, pos, p))
            return;  // closed meanwhile: abandoned, dropped by whoever finds it
    } catch (...) {
        return;  // cannot happen: the waits throw only on a broken futex
    }
    if (const std::uint64_t spill = atomic_word(s.spill).exchange(0, std::memory_order_acq_rel)) mem().spill_release(spill);
    set_state(s, slot_state(t, slot_status::consumed));
    skip_head(t);
    c.done.fetch_add(1, std::memory_order_seq_cst);  // never to be task_done()
    if (c.join_waiters.load(std::memory_order_seq_cst) != 0) futex_wake(c.done);
    notify_producers();
}

inline std::uint32_t queue_ring::advance_reclaim() noexcept {
    queue_control& c = ctl();
    queue_memory& m = mem();
    for (int walked = 0;; ++walked) {
        std::uint64_t cursor = c.reclaim.load(std::memory_order_acquire);
        const std::uint32_t r = tlow(cursor);
        std::uint32_t cell = thigh(cursor);
        if (walked > static_cast<int>(m.slots())) return cell;
        queue_slot& s = m.slot(r);
        const std::uint64_t state = s.state.load(std::memory_order_acquire);
        const std::uint32_t ticket = ticket_of(state);
        if (before(r, ticket)) {
            // A record without cells, freed by its consumer straight to the next lap.
            c.reclaim.compare_exchange_strong(cursor, tpack(cell, r + 1), std::memory_order_acq_rel);
            continue;
        }
        const std::uint64_t where = atomic_word(s.where).load(std::memory_order_acquire);
        if (ticket == r && status_of(state) == slot_status::consumed) {
            // Its cells end where it says; a record whose producer died before saying keeps the
            // cursor's cell until a later record says where it starts.
            const std::uint32_t next_cell = thigh(where) == r ? tlow(where) + static_cast<std::uint32_t>(meta_cells(s.meta)) : cell;
            if (c.reclaim.compare_exchange_strong(cursor, tpack(next_cell, r + 1), std::memory_order_acq_rel)) {
                std::uint64_t seen = state;
                if (s.state.compare_exchange_strong(seen, slot_state(r + static_cast<std::uint32_t>(m.slots()), slot_status::free),
                                                    std::memory_order_seq_cst) &&
                    (seen & queue_slot_waiter))
                    wake_slot(s);
            }
            continue;
        }
        // The oldest record is busy: every cell before its first is free.
        std::uint32_t first = cell;
        if (ticket == r && thigh(where) == r) {
            first = tlow(where);
        } else if (ticket == r && status_of(state) == slot_status::free) {
            const std::uint64_t tail = c.tail.load(std::memory_order_acquire);
            if (tlow(tail) == r) first = thigh(tail);
        }
        if (first != cell && tdiff(first, cell) > 0)
            c.reclaim.compare_exchange_strong(cursor, tpack(first, r), std::memory_order_acq_rel);
        return thigh(c.reclaim.load(std::memory_order_acquire));
    }
}

template <class Changed>
bool queue_ring::producer_sleep(const Deadline& deadline, Changed&& changed) {
    if (deadline.expired()) return false;
    if (spin(changed)) return true;
    queue_control& c = ctl();
    struct counted {
        futex_word& w;
        ~counted() { w.fetch_sub(1, std::memory_order_release); }
    } registration{c.put_waiters};
    c.put_waiters.fetch_add(1, std::memory_order_seq_cst);
    const std::uint32_t seen = c.space_event.load(std::memory_order_seq_cst);
    if (!changed()) (void)futex_wait(c.space_event, seen, bounded_slice(deadline, std::chrono::milliseconds(5)));
    return true;
}

// ---------------------------------------------------------------------------------------------
// Consumers

template <class Consume>
bool queue_ring::get(const Deadline& deadline, Consume&& consume) {
    queue_control& c = ctl();
    queue_memory& m = mem();
    claim_guard claim(my_claim());
    stall_watch watch;
    if (deadline.is_never()) {
        for (;;) {
            // A ticket only once a producer holds the record it stands for: a consumer killed
            // while it waits on an empty queue then takes nothing with it. (Several consumers
            // woken by one put may still take tickets for records to come.)
            const std::uint32_t h = tlow(c.head.load(std::memory_order_acquire));
            // A record seen ready needs no look at the tail, whose line the producers write on
            // every put.
            const bool ready = without_waiter(m.slot(h).state.load(std::memory_order_acquire)) ==
                               slot_state(h, slot_status::ready);
            if (!ready && !before(h, tlow(c.tail.load(std::memory_order_acquire)))) {
                if (drained(h)) throw EndOfStream("mproc::Queue: get() on a closed queue that is drained");
                queue_slot& s = m.slot(h);
                const std::uint64_t state = without_waiter(s.state.load(std::memory_order_acquire));
                if (tlow(c.head.load(std::memory_order_acquire)) != h ||
                    before(h, tlow(c.tail.load(std::memory_order_seq_cst))))
                    continue;
                slot_sleep(s, state, deadline, std::chrono::milliseconds(100), h);
                continue;
            }
            claim.begin();
            const std::uint32_t t = tlow(c.head.fetch_add(1, std::memory_order_seq_cst));
            queue_fault(queue_point::get_ticketed);
            claim.record(true, t, 1);
            for (;;) {
                queue_slot& s = m.slot(t);
                const std::uint64_t state = without_waiter(s.state.load(std::memory_order_acquire));
                const std::uint32_t ticket = ticket_of(state);
                if (ticket == t && status_of(state) == slot_status::ready) {
                    take(t, consume);
                    return true;
                }
                if (before(t, ticket) || (ticket == t && status_of(state) == slot_status::consumed)) break;  // dropped
                if (drained(t)) throw EndOfStream("mproc::Queue: get() on a closed queue that is drained");
                if (watch.time_to_look(state, false) && resolve(state)) continue;
                slot_sleep(s, state, deadline, std::chrono::milliseconds(100), t);
            }
            claim.end();  // its record was dropped or given up: start again
        }
    }
    return get_many(1, deadline, [&](std::size_t, std::span<const std::byte> bytes) { consume(bytes); }) == 1;
}

template <class Consume>
std::size_t queue_ring::get_many(std::size_t max, const Deadline& deadline, Consume&& consume) {
    queue_control& c = ctl();
    queue_memory& m = mem();
    if (max == 0) return 0;
    max = std::min<std::size_t>(max, m.slots());
    claim_guard claim(my_claim());
    stall_watch watch;
    for (;;) {
        std::uint64_t head = c.head.load(std::memory_order_acquire);
        const std::uint32_t t = tlow(head);
        queue_slot& s = m.slot(t);
        const std::uint64_t state = without_waiter(s.state.load(std::memory_order_acquire));
        const std::uint32_t ticket = ticket_of(state);
        if (ticket == t && status_of(state) == slot_status::ready) {
            std::size_t n = 1;
            while (n < max && without_waiter(m.slot(t + static_cast<std::uint32_t>(n)).state.load(std::memory_order_acquire)) ==
                                  slot_state(t + static_cast<std::uint32_t>(n), slot_status::ready))
                ++n;
            claim.begin();
            if (!c.head.compare_exchange_strong(head, head + n, std::memory_order_seq_cst)) {
                claim.end();
                continue;
            }
            queue_fault(queue_point::get_ticketed);
            claim.record(true, t, n);
            std::exception_ptr failed;
            for (std::size_t i = 0; i < n; ++i) {
                try {
                    auto one = [&](std::span<const std::byte> bytes) { consume(i, bytes); };
                    take(t + static_cast<std::uint32_t>(i), one);
                } catch (...) {
                    if (!failed) failed = std::current_exception();
                }
            }
            if (failed) std::rethrow_exception(failed);
            return n;
        }
        if (before(t, ticket) || (ticket == t && status_of(state) == slot_status::consumed)) {
            // Dropped or given up, and nobody holds its ticket: move the head past it.
            c.head.compare_exchange_strong(head, head + 1, std::memory_order_seq_cst);
            continue;
        }
        if (drained(t)) throw EndOfStream("mproc::Queue: get() on a closed queue that is drained");
        if (deadline.expired()) return 0;
        if (watch.time_to_look(state, false) && resolve(state)) continue;
        slot_sleep(s, state, deadline, std::chrono::milliseconds(100), t);
        if (c.head.load(std::memory_order_acquire) != head) continue;
    }
}

template <class Consume>
void queue_ring::take(std::uint32_t t, Consume& consume) {
    queue_memory& m = mem();
    queue_slot& s = m.slot(t);
    queue_fault(queue_point::get_claimed);
    const std::uint64_t meta = s.meta;
    const std::uint64_t cells = meta_cells(meta);
    struct release {
        queue_ring& ring;
        queue_slot& s;
        std::uint32_t t;
        std::uint64_t cells;
        ~release() { ring.free_record(s, t, cells); }
    } on_exit{*this, s, t, cells};
    const std::uint64_t spill = atomic_word(s.spill).load(std::memory_order_acquire);
    const std::byte* from = spill ? m.spill_block(spill) : cells ? m.cell(tlow(s.where)) : s.data;
    queue_fault(queue_point::get_moved);
    consume(std::span<const std::byte>(from, meta_length(meta)));
    queue_fault(queue_point::get_consumed);
}

inline void queue_ring::free_record(queue_slot& s, std::uint32_t t, std::uint64_t cells) noexcept {
    // The spill block first: once the state moves on, the slot may be written again. An
    // exchange, because a process that found us dead may be freeing the same record.
    if (atomic_word(s.spill).load(std::memory_order_relaxed) != 0)
        if (const std::uint64_t spill = atomic_word(s.spill).exchange(0, std::memory_order_acq_rel)) mem().spill_release(spill);
    store_state(s, cells ? slot_state(t, slot_status::consumed)
                       : slot_state(t + static_cast<std::uint32_t>(mem().slots()), slot_status::free));
    notify_producers();
}

inline void queue_ring::slot_sleep(queue_slot& s, std::uint64_t state, const Deadline& deadline,
                                   std::chrono::milliseconds slice, std::optional<std::uint32_t> short_if_taken) {
    const auto changed = [&] {
        return without_waiter(s.state.load(std::memory_order_acquire)) != state ||
               ctl().closed.load(std::memory_order_relaxed) != 0;
    };
    if (deadline.expired() || spin(changed)) return;
    // Flag the slot, so that whoever changes it wakes us; then sleep while it is unchanged.
    std::uint64_t seen = state;
    if (!s.state.compare_exchange_strong(seen, state | queue_slot_waiter, std::memory_order_seq_cst) &&
        seen != (state | queue_slot_waiter))
        return;
    if (ctl().closed.load(std::memory_order_seq_cst) != 0) return;
    if (short_if_taken && before(*short_if_taken, tlow(ctl().tail.load(std::memory_order_seq_cst))))
        slice = std::min(slice, std::chrono::milliseconds(1));
    const Deadline until = bounded_slice(deadline, slice);
    const int ms = until.poll_ms();
    if (ms <= 0) return;
    timespec relative{ms / 1000, static_cast<long>(ms % 1000) * 1'000'000};
    (void)sys().futex(reinterpret_cast<std::uint32_t*>(&s.state), FUTEX_WAIT, tlow(state | queue_slot_waiter), &relative);
}

// ---------------------------------------------------------------------------------------------
// Dead holders

inline bool queue_ring::live_holder(bool get, std::uint32_t t) const {
    const queue_control& c = ctl();
    for (unsigned i = 0; i < queue_registry::entries; ++i) {
        const std::uint64_t w = c.claims[i].word.load(std::memory_order_seq_cst);
        if (!queue_claim::may_hold(w, get, t)) continue;
        const std::uint64_t entry = c.registry.words[i].load(std::memory_order_acquire);
        if (entry != 0 && !queue_registry::entry_dead(entry)) return true;
    }
    return false;
}

inline bool queue_ring::resolve(std::uint64_t state) {
    const queue_control& c = ctl();
    state = without_waiter(state);
    const std::uint32_t t = ticket_of(state);
    switch (status_of(state)) {
    case slot_status::free:  // a producer took the ticket and has not published
        if (!before(t, tlow(c.tail.load(std::memory_order_seq_cst))) || live_holder(false, t)) return false;
        return drop(state, true);
    case slot_status::ready:  // a consumer took the ticket and has not freed it
        if (!before(t, tlow(c.head.load(std::memory_order_seq_cst))) || live_holder(true, t)) return false;
        return drop(state, true);
    case slot_status::taken:  // a process dropping it died there
        if (!c.registry.holder_dead(holder_of(state))) return false;
        return drop(state, false);
    case slot_status::consumed: {
        const std::uint64_t cursor = c.reclaim.load(std::memory_order_acquire);
        advance_reclaim();
        return c.reclaim.load(std::memory_order_acquire) != cursor;
    }
    }
    return false;
}

inline bool queue_ring::drop(std::uint64_t state, bool counted) noexcept {
    queue_control& c = ctl();
    const std::uint32_t t = ticket_of(state);
    queue_slot& s = mem().slot(t);
    std::uint32_t me = 0;
    try {
        me = holder_id();
    } catch (...) {
        return false;  // no registry entry left for us: leave it to a process that has one
    }
    // Take it, naming ourselves, so that a death of ours here is found the same way.
    std::uint64_t seen = s.state.load(std::memory_order_acquire);
    if (without_waiter(seen) != state ||
        !s.state.compare_exchange_strong(seen, slot_state(t, slot_status::taken, me & ((1u << 21) - 1)), std::memory_order_seq_cst))
        return false;
    if (seen & queue_slot_waiter) wake_slot(s);
    if (const std::uint64_t spill = atomic_word(s.spill).exchange(0, std::memory_order_acq_rel)) mem().spill_release(spill);
    set_state(s, slot_state(t, slot_status::consumed));
    skip_head(t);
    if (counted) c.dropped.fetch_add(1, std::memory_order_acq_rel);
    c.done.fetch_add(1, std::memory_order_seq_cst);  // a dropped item can never be task_done()
    if (c.join_waiters.load(std::memory_order_seq_cst) != 0) futex_wake(c.done);
    notify_producers();
    return true;
}

inline void queue_ring::sweep_dead() {
    queue_control& c = ctl();
    const std::uint32_t from = tlow(c.reclaim.load(std::memory_order_acquire));
    const std::uint32_t to = tlow(c.tail.load(std::memory_order_acquire));
    for (std::uint32_t t = from; before(t, to) && t - from < mem().slots(); ++t) {
        const std::uint64_t state = without_waiter(mem().slot(t).state.load(std::memory_order_acquire));
        if (ticket_of(state) == t && status_of(state) != slot_status::consumed) (void)resolve(state);
    }
}

// ---------------------------------------------------------------------------------------------
// The whole queue

inline void queue_ring::close() noexcept {
    queue_control& c = ctl();
    c.closed.store(1, std::memory_order_seq_cst);
    c.space_event.fetch_add(1, std::memory_order_seq_cst);
    futex_wake(c.space_event);
    for (std::uint64_t i = 0; i < mem().slots(); ++i) {
        queue_slot& s = mem().slot(static_cast<std::uint32_t>(i));
        if (s.state.load(std::memory_order_seq_cst) & queue_slot_waiter) wake_slot(s);
    }
}

inline bool queue_ring::full() const noexcept {
    const queue_control& c = ctl();
    if (c.maxsize != 0) return qsize() >= c.maxsize;
    const std::uint32_t t = tlow(c.tail.load(std::memory_order_acquire));
    return without_waiter(mem().slot(t).state.load(std::memory_order_acquire)) != slot_state(t, slot_status::free);
}

inline void queue_ring::task_done() {
    queue_control& c = ctl();
    std::uint32_t done = c.done.load(std::memory_order_acquire);
    do {
        if (tdiff(tlow(c.tail.load(std::memory_order_acquire)), done) <= 0)
            throw StateError("mproc::JoinableQueue: task_done() called more times than items were put");
    } while (!c.done.compare_exchange_weak(done, done + 1, std::memory_order_seq_cst));
    if (c.join_waiters.load(std::memory_order_seq_cst) != 0) futex_wake(c.done);
}

inline bool queue_ring::join(const Deadline& deadline) {
    queue_control& c = ctl();
    const auto finished = [&](std::uint32_t done) { return tlow(c.tail.load(std::memory_order_seq_cst)) == done; };
    for (;;) {
        // Sliced: an item held by a dead process is found only by looking.
        if (wait_until(c.done, c.join_waiters, finished, bounded_slice(deadline, std::chrono::milliseconds(50))))
            return true;
        if (deadline.expired()) return false;
        sweep_dead();
    }
}

}  // namespace detail
MPROC_NAMESPACE_END

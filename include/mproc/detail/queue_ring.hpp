// The queue's protocol over queue_memory: claims that name their holder, in-order reclaim, dead
// holders found out.
//
// Cells are numbered by a 40-bit position that only grows; cell p lives at index p mod N. A
// record covers `span` consecutive cells, and the slot of its first cell says who holds it:
//
//   producer: read tail p; slot p free this lap and room for k cells (p + k - reclaim <= N)?
//             CAS slot.state -> (p, writing, me)     the claim, naming its holder
//             slot.word = span (p, k); tail = p+k     plain stores: only the claimer moves it
//             copy the bytes; slot.state = (p, ready); wake consumers if any sleep
//   consumer: read head p; slot ready? CAS slot.state -> (p, reading, me)
//             head = p+k; decode in place; slot.state = (p, freed)
//             producers move `reclaim` over every freed record in order, in batches
//
// Batches (put_many, get_many): a producer claims the records of up to batch_max messages one
// after the other, the first by the CAS above and the others, which no one else can reach while
// the tail is still at the first, by a store naming it, each spanned before the next is claimed
// and one full barrier after the last; then it moves the tail once past them all, writes them
// all, publishes them in order and wakes consumers once. A consumer claims the ready records
// behind the one at the head the same way, then moves the head once: two locked instructions
// a batch. Nothing new is needed for a death: records of a batch are records, each naming its
// holder, so a dead one's are dropped one by one as above; only the batch's last claimed
// record can lack its span (taken for one cell, which is all that was claimed of it), and a
// consumer's death drops only records it claimed.
//
// A message of up to 8 bytes is kept in slot.word itself and its state says so (in-slot: one
// cell, no span); a longer one has a 16-byte header (length, spill block) in its first cell.
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
// the tail. A put whose encoding throws after its claim gives its record up the same way.
// Liveness is exact (pid, start time and registry generation, see queue_registry.hpp), so a
// slow holder is never taken for dead.
//
// Sizes: a message of up to 8 bytes lives in its slot; up to half the ring (and 2^23 cells), in
// the ring's cells (contiguous thanks to the mirror mapping, decoded in place); larger, in a
// spill block named in its cell header, so one message larger than the ring never waits for a
// consumer. Its producer takes the block only once its record is claimed, and names it there
// (header, then span) before letting go of the spill lock; a consumer takes it out of the record
// and back to a free list under the same lock. The lock is robust and notes the block it moves,
// so a process killed at any moment of a spilled put or get loses no block: one killed inside
// the lock leaves the note to the next owner, which finishes or undoes the move; one killed
// outside holds a record, which whoever drops it frees with its block (queue_memory.hpp).
// Without a free block, the claim is undone and the put throws.
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
// In a queue of several lanes (queue_lanes.hpp) the consumers' words (data event, waiter count)
// and the join() count are the first lane's, the "bell" of every lane.
//
// Cache lines: slots are prefetched for writing only where the other side has finished with
// them (behind the reclaim cursor for producers, two lines short of the tail for consumers).
// (Making a consumer that caught up wait until the producers were a few lines ahead did not
// raise throughput measurably here, and cost 0.7 us per round trip: it is not done.)
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
    queue_shared(unique_fd fd, std::size_t ring_bytes, std::size_t spill_bytes)
        : memory(std::move(fd), ring_bytes, spill_bytes) {}
    queue_memory memory;
    // The words consumers sleep on and join() counts in: this ring's own, or, for a lane of a
    // queue with several (queue_lanes.hpp), those of its first lane, kept mapped by bell_owner.
    queue_control* bell = &memory.control();
    std::shared_ptr<queue_shared> bell_owner;
    bool lanes_share_bell = false;
    std::atomic<std::uint64_t> me{0};            // pid << 32 | registry id, of this process
    std::atomic<std::uint64_t> reclaim_seen{0};  // a recent reclaim cursor (never ahead of it)
    std::atomic<std::uint64_t> tail_seen{0};     // a recent tail position (never ahead of it)
    std::atomic<std::uint64_t> tail_checked{0};  // the head position when tail_seen was read
};

class queue_ring {
public:
    queue_ring(std::size_t ring_bytes, std::size_t spill_bytes, std::size_t maxsize)
        : shared_(std::make_shared<queue_shared>(ring_bytes, spill_bytes, maxsize)) {}
    /// The queue another process made, from its memfd (see queue_memory).
    queue_ring(unique_fd fd, std::size_t ring_bytes, std::size_t spill_bytes)
        : shared_(std::make_shared<queue_shared>(std::move(fd), ring_bytes, spill_bytes)) {}

    /// Makes this ring a lane of the queue whose first lane is `first`: its consumers sleep on
    /// first's data event, and its dropped records count as done in first's join() count.
    /// Before any other process or thread uses it.
    void ring_bell_of(const queue_ring& first) {
        shared_->bell = &first.ctl();
        shared_->bell_owner = first.shared_;
        shared_->lanes_share_bell = true;
        first.shared_->lanes_share_bell = true;
    }

    /// What another process needs to map this queue: the memfd and the sizes.
    [[nodiscard]] int memory_fd() const noexcept { return mem().fd(); }
    [[nodiscard]] std::size_t spill_bytes() const noexcept { return mem().spill_bytes(); }

    /// Puts one message of `length` bytes, which write(std::byte* to) fills in place. False when
    /// the deadline passed first. @throws EndOfStream once closed; Error when the message fits
    /// neither the ring nor the spill window.
    template <class Write>
    bool put(std::uint64_t length, Write&& write, const Deadline& deadline) {
        static_assert(std::is_nothrow_invocable_v<Write&, std::byte*>,
                      "a claimed record must be completed: write() must not throw");
        std::optional<claimed> record = claim_in_slot(length);
        if (!record) [[unlikely]]
            record = claim(length, deadline);
        if (!record) return false;
        write(record->to);
        publish(std::span<const claimed>(&*record, 1));
        return true;
    }

    /// put() for a writer that may fail: write(std::byte* to) returns false or throws, and the
    /// claimed record is then given up (never delivered, not counted as dropped) before the
    /// exception, or Error for false, goes on to the caller.
    template <class Write>
    bool put_or_give_up(std::uint64_t length, Write&& write, const Deadline& deadline) {
        return put_many(std::span<const std::uint64_t>(&length, 1),
                        [&](std::size_t, std::byte* to) { return write(to); }, deadline) == 1;
    }

    /// Puts the messages of `lengths` (any number), in order, with as few claims as room
    /// allows: one claim takes every record that fits now (a spilled message takes one of its
    /// own), and the tail moves once for them all. write(i, std::byte* to) fills message i and
    /// returns false (or throws) when it could not: that record and the batch's later ones are
    /// then given up (never delivered, not counted as dropped), and the exception, or Error for
    /// false, goes on to the caller. Returns how many were put, fewer than asked only when the
    /// deadline passed first. @throws EndOfStream once closed (the messages before are in).
    template <class Write>
    std::size_t put_many(std::span<const std::uint64_t> lengths, Write&& write, const Deadline& deadline);

    /// Records one claim takes at most in put_many and get().
    static constexpr std::size_t batch_max = 32;

    /// Puts bytes already encoded.
    bool put(std::span<const std::byte> message, const Deadline& deadline) {
        return put(message.size(), [&](std::byte* to) noexcept { queue_copy(to, message.data(), message.size()); }, deadline);
    }

    /// Takes the next messages, at least one and at most `max` (up to batch_max) in one claim:
    /// the first waits until the deadline, the others are those ready right behind it. Passes
    /// each one's bytes to consume(span), in order, and frees its record afterwards. When
    /// consume throws, the records not yet passed are freed unread (not counted as dropped).
    /// Returns how many were taken, 0 when the deadline passed first.
    /// @throws EndOfStream once closed and drained.
    template <class Consume>
    std::size_t get(const Deadline& deadline, Consume&& consume, std::size_t max = 1);
    /// get() without waiting or helping: takes up to `max` messages only when the one at the
    /// head is ready now (0 otherwise; never throws EndOfStream).
    template <class Consume>
    std::size_t get_ready(Consume& consume, std::size_t max) {
        head_mark seen;
        return get_ready(consume, max, seen);
    }

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

    /// Records put into this ring so far, modulo 2^24 (dropped and given-up ones included).
    [[nodiscard]] std::uint32_t records_put() const noexcept {
        return static_cast<std::uint32_t>(qlow(ctl().tail.load(std::memory_order_seq_cst)));
    }
    /// What a consumer about to sleep watches: the head and its slot's state, which a
    /// producer's claim on an empty ring changes (see the top of this file).
    struct head_mark {
        std::uint64_t head, state;
        bool operator==(const head_mark&) const = default;
        /// Something is at the head: ready, or claimed and not yet published (or stuck).
        [[nodiscard]] bool claimed() const noexcept { return qpos(state) == qpos(head); }
        [[nodiscard]] bool ready() const noexcept { return claimed() && status_of(state) == slot_status::ready; }
    };
    [[nodiscard]] head_mark mark() const noexcept {
        const std::uint64_t head = ctl().head.load(std::memory_order_seq_cst);
        return {head, mem().slot(qpos(head)).state.load(std::memory_order_seq_cst)};
    }
    /// get_ready() that also tells what it found at the head when it took nothing (the lanes
    /// of a queue look at each head once per pass: each look pulls a line a producer writes).
    /// Always inlined: it is every get's short way, and once called from more than one place
    /// the compiler made it a call of its own (SPSC 58.6 against 68.5 M msg/s on 2 cores).
    template <class Consume>
    [[gnu::always_inline]] inline std::size_t get_ready(Consume& consume, std::size_t max, head_mark& seen);
    /// get() once the short way failed: waits, helps, drops dead holders.
    template <class Consume>
    std::size_t get_waiting(const Deadline& deadline, Consume& consume, std::size_t max);
    /// Takes this process's registry entry now (get_ready() takes nothing without one).
    void enroll_here() { (void)holder_id(); }
    /// The first lane's words (this ring's own unless it is a later lane).
    [[nodiscard]] queue_control& bell() const noexcept { return *shared_->bell; }
    /// Drops every record taken by a consumer that died holding it (join() needs them done, and
    /// a put that found the spill window full their blocks). Returns how many it dropped.
    std::uint64_t drop_dead_readers();

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

private:
    enum class room_status { room, ring_full, bound_full };

    /// A record claimed by this producer: where its bytes go.
    struct claimed {
        queue_slot* slot;
        std::uint64_t pos;
        std::byte* to;
        std::uint32_t ready_low;  // the ready state's low bits: in-slot flag and length, or 0
        bool getters_sleep;       // seen right after the claim: consumers to wake once it is ready
    };
    /// Claims records for messages of `lengths` (1 to batch_max), first to last, into `out`:
    /// waits until the first fits, then takes the ones after it that fit too, each named by this
    /// process before the tail moves past them all at once. 0 when the deadline passed first.
    [[nodiscard]] std::size_t claim(std::span<const std::uint64_t> lengths, claimed* out, const Deadline& deadline);
    [[nodiscard]] std::optional<claimed> claim(std::uint64_t length, const Deadline& deadline) {
        claimed record;
        if (claim(std::span<const std::uint64_t>(&length, 1), &record, deadline) == 0) return std::nullopt;
        return record;
    }
    /// claim()'s batch, once the first record (ending at `end`) is claimed: claims records for
    /// lengths[1..] while each fits the room claim() saw, up to the first spilled one; moves
    /// `end` past them. Returns the records claimed, the first included.
    std::size_t claim_more(std::span<const std::uint64_t> lengths, claimed* out, std::uint64_t tail,
                           std::uint64_t& end, std::uint32_t me) noexcept;
    /// Where a message of `length` bytes goes: cells it takes, in its slot, or spilled.
    struct record_shape {
        std::uint64_t cells;
        bool in_slot;
        bool spilled;
    };
    [[nodiscard]] record_shape shape(std::uint64_t length) const noexcept;
    /// A consumer's claim of the ready record at `pos` (state `state`): false when another won.
    [[nodiscard]] bool claim_ready(queue_slot& s, std::uint64_t pos, std::uint64_t state, std::uint32_t me) noexcept;
    /// Claims the ready records right behind the one at `pos` that this consumer claimed, up to
    /// `max` in all, moves the head past them once, passes their bytes to consume in order and
    /// frees each (also when consume throws). Returns how many.
    template <class Consume>
    std::size_t take(queue_slot& s, std::uint64_t pos, std::uint64_t head, std::uint64_t state, std::uint32_t me,
                     Consume& consume, std::size_t max);
    /// take() of one record (every plain get): none of the batch's bookkeeping, which cost
    /// single gets about 5% of their rate (SPSC on 2 cores).
    template <class Consume>
    std::size_t take_one(queue_slot& s, std::uint64_t pos, std::uint64_t head, std::uint64_t state, Consume& consume);
    /// What a claimed record's read and free need. In-slot: the message copied, so that the
    /// decoder never reads the slot once it is freed.
    struct held {
        queue_slot* slot;
        std::uint64_t pos, word, span;
        std::uint32_t in_slot, length;
    };
    [[nodiscard]] static held hold(queue_slot& at, std::uint64_t pos, std::uint64_t state) noexcept {
        const std::uint32_t in_slot = in_slot_of(state);
        const std::uint64_t word = at.word;
        return held{&at, pos, word, in_slot ? 1 : word, in_slot, static_cast<std::uint32_t>(state & 15)};
    }
    /// The message of a held record: its copied word, or its cells or spill block.
    [[nodiscard]] std::span<const std::byte> bytes_of(const held& r) const noexcept;
    /// claim()'s short way, for a message of up to 8 bytes when nothing is in the way (a free
    /// slot at the tail, room known, the queue open and below maxsize); nullopt sends the caller
    /// the long way, which waits, helps and reports.
    [[nodiscard]] std::optional<claimed> claim_in_slot(std::uint64_t length) noexcept;
    /// Makes written records ready, in order, then wakes as many sleeping consumers (one wake
    /// for a batch: they then find the whole batch ready, and take it in batches too).
    void publish(std::span<const claimed> records) noexcept;
    /// Takes a spill block for the record at `pos` that this producer claimed (tail not yet
    /// moved) and names it there. Without one, puts the slot's state back to `unclaimed` (what
    /// it was before the claim) and returns 0.
    [[nodiscard]] std::uint64_t take_spill_block(std::uint64_t pos, std::uint64_t unclaimed, std::uint64_t length);
    [[noreturn, gnu::cold]] void spill_full(std::uint64_t length) const;

    [[nodiscard]] queue_memory& mem() const noexcept { return shared_->memory; }
    [[nodiscard]] queue_control& ctl() const noexcept { return shared_->memory.control(); }
    [[nodiscard]] std::uint32_t holder_id();
    /// Takes a registry entry for this process (once per process, off the hot path).
    [[gnu::noinline, gnu::cold]] std::uint32_t enroll(std::uint64_t pid) {
        const std::uint32_t id = ctl().registry.enroll();
        shared_->me.store(pid << 32 | id, std::memory_order_relaxed);
        return id;
    }
    room_status room(std::uint64_t tail, std::uint64_t cells, std::uint64_t& oldest_pos, std::uint64_t& oldest_state);
    std::uint64_t advance_reclaim(std::uint64_t& oldest_state) noexcept;
    bool wait_for_tail(std::uint64_t tail, std::uint64_t state, stall_watch& watch, const Deadline& deadline);
    void advance_head(std::uint64_t head, std::uint64_t state, const queue_slot& s) noexcept;
    /// Moves `cursor` (tail or head) past the record at `pos` if it still points at it. Only for
    /// records whose claimer is gone: a live claimer moves its cursor with a plain store.
    static void skip_record(std::atomic<std::uint64_t>& cursor, std::uint64_t pos, std::uint64_t cells) noexcept {
        std::uint64_t at = cursor.load(std::memory_order_acquire);
        if (qpos(at) == pos)
            cursor.compare_exchange_strong(at, qpack(qadd(pos, cells), qlow(at) + 1), std::memory_order_acq_rel);
    }
    /// Frees a record this process holds. `after_death`: taken over from a holder that died.
    void free_record(queue_slot& s, std::uint64_t pos, std::uint32_t in_slot, std::uint64_t span,
                     bool putters_sleep, bool after_death = false) noexcept;
    /// Cells of the record at `pos` whose state `state` this caller saw (so it is not freed
    /// under the caller's feet before it looks: claimed by it, or freed and not yet reclaimed).
    [[nodiscard]] std::uint64_t record_cells(const queue_slot& s, std::uint64_t state) const noexcept {
        return in_slot_of(state) ? 1 : span_cells(atomic_word(s.word).load(std::memory_order_acquire));
    }
    /// Takes the slot a few records after `pos` for writing, when it is known published: a
    /// consumer behind its producers then finds its next slots at hand; one at the producers'
    /// heels leaves the line they are writing alone.
    void prefetch_published(std::uint64_t pos) const noexcept {
        const std::uint64_t ahead = qadd(pos, prefetch_distance);
        // Two lines of slots short of the tail: the producers may still be writing the line
        // that holds the slot just below it.
        const std::uint64_t margin = qadd(ahead, 8);
        if (!before(margin, shared_->tail_seen.load(std::memory_order_relaxed))) {
            // Reading the tail pulls its line away from the producers, who write it on every
            // put: at most once per prefetch_distance records.
            if (before(pos, qadd(shared_->tail_checked.load(std::memory_order_relaxed), prefetch_distance))) return;
            shared_->tail_checked.store(pos, std::memory_order_relaxed);
            const std::uint64_t known = qpos(ctl().tail.load(std::memory_order_relaxed));
            shared_->tail_seen.store(known, std::memory_order_relaxed);
            if (!before(margin, known)) return;
        }
        prefetch_for_write(&mem().slot(ahead));
    }
    void drop(std::uint64_t pos, std::uint64_t state);
    /// put_many's way out when writing record `failed` of a batch of `count` failed: publishes
    /// the records before it and gives up the others.
    void written_up_to(const claimed* records, std::size_t failed, std::size_t count) noexcept;
    /// Frees claimed records that will never be published, as a drop does, without counting them.
    void give_up(std::span<const claimed> records) noexcept;
    /// Takes over the record at `pos` (state `state` seen, its span known) and frees it, moving
    /// the cursors past it: false when someone else took it first.
    bool discard(std::uint64_t pos, std::uint64_t state, std::uint64_t span, bool dropped) noexcept;
    /// A full barrier (a seq_cst read-modify-write that changes nothing) after a batch claimed
    /// by stores, `last` being its last record: pairs with a sleeper's count-in as a claim's
    /// CAS does. (Not atomic_thread_fence, which ThreadSanitizer does not model.)
    static void full_barrier_after(queue_slot& last) noexcept { (void)last.state.fetch_add(0, std::memory_order_seq_cst); }

    /// Whether position `pos` is at or past `target` (positions wrap at 2^40).
    static bool reached(std::uint64_t pos, std::uint64_t target) noexcept {
        return ((pos - target) & queue_pos_mask) < queue_pos_mask / 2;
    }
    /// Whether position `a` comes strictly before `b`.
    static bool before(std::uint64_t a, std::uint64_t b) noexcept { return a != b && reached(b, a); }
    void lower_space_target(std::uint64_t target) noexcept {
        std::atomic<std::uint64_t>& word = ctl().space_target;
        std::uint64_t seen = word.load(std::memory_order_seq_cst);
        while (!reached(target, seen) || target == seen) {
            if (word.compare_exchange_weak(seen, target, std::memory_order_seq_cst)) return;
        }
    }

    static constexpr std::chrono::microseconds spin_time{10};
    static constexpr std::chrono::microseconds yield_time{50};
    static constexpr std::uint64_t prefetch_distance = 32;  // slots: 8 cache lines ahead

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
    return enroll(pid);
}


}  // namespace detail
MPROC_NAMESPACE_END

// The producer's half; the consumer's half and the whole-queue operations.
#include <mproc/detail/queue_ring_put.hpp>
#include <mproc/detail/queue_ring_get.hpp>

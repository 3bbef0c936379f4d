// A Queue's lanes: one queue made of several rings, so that producers on many cores do not all
// claim at one tail.
//
// Every claim of a ring (queue_ring.hpp) is a compare-and-swap at its tail or head, followed
// by a store of that cursor; others who read the cursor meanwhile wait for the store. On 2
// cores that hides (two processes run at a time); on 16, four producers and four consumers
// queue up behind each other's claims (issue 14 measured an earlier ring fall from 31 M
// messages/s on 2 cores to 3.4 M/s on 16). A queue with lanes deals its lanes out to
// processes in turn, the first time each puts: then each producer (up to the number of lanes)
// claims at a tail of its own. Consumers are dealt lanes the same way, and take from their own while it has messages,
// moving on to the next lane with any every `burst` records of it, so that no lane waits long
// for a consumer.
//
// What a producer puts stays in order (it always puts into its lane), which is all a Queue
// promises: messages of different producers have no order between them, as in Python. Each
// lane is a whole ring, with every crash-safety rule of its own; what the lanes share lives in
// the first lane's control words: the futex word consumers sleep on (each lane's producers
// wake it, all its sleepers at once, since a sleeper may be waiting in another lane), the
// task_done() count that join() compares with the puts of every lane, and the counters that
// deal out the lanes.
//
// A consumer that finds nothing ready in any lane looks at each lane's head: a record being
// written there (or held by a process that died) is waited for in that lane for at most a
// couple of milliseconds at a time, where that ring drops it if its holder died; otherwise it
// sleeps on the shared word, having noted every lane's head, which the claim that ends the
// sleep changes (the argument at the top of queue_ring.hpp, once per lane).
#pragma once

#include <mproc/detail/deadline.hpp>
#include <mproc/detail/futex.hpp>
#include <mproc/detail/queue_ring.hpp>
#include <mproc/detail/sys.hpp>
#include <mproc/error.hpp>

#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

MPROC_NAMESPACE_BEGIN
namespace detail {

class queue_lanes {
public:
    static constexpr std::size_t max_lanes = 64;
    /// A consumer looks at the next lane first once its own lane's head has crossed a multiple
    /// of this many records (so every lane with messages is served while others have some too).
    static constexpr std::uint32_t burst = 16;

    /// A new queue of `lanes` rings, each of `ring_bytes` and `spill_bytes`.
    queue_lanes(std::size_t lanes, std::size_t ring_bytes, std::size_t spill_bytes, std::size_t maxsize)
        : local_(std::make_shared<local>()) {
        check_count(lanes);
        if (lanes > 1 && maxsize != 0)
            throw Error("mproc::QueueOptions: a queue with a maxsize has one lane (lanes = " + std::to_string(lanes) +
                        " asked for)");
        local_->lanes.reserve(lanes);
        for (std::size_t i = 0; i < lanes; ++i) local_->lanes.emplace_back(ring_bytes, spill_bytes, maxsize);
        share_bell();
    }
    /// The queue another process made, from its lanes' memfds (see queue_memory).
    queue_lanes(std::vector<unique_fd> fds, std::size_t ring_bytes, std::size_t spill_bytes)
        : local_(std::make_shared<local>()) {
        check_count(fds.size());
        local_->lanes.reserve(fds.size());
        for (unique_fd& fd : fds) local_->lanes.emplace_back(std::move(fd), ring_bytes, spill_bytes);
        share_bell();
    }

    [[nodiscard]] std::size_t count() const noexcept { return count_; }
    [[nodiscard]] const queue_ring& lane(std::size_t i) const noexcept { return lanes()[i]; }

    // Puts go to this process's lane.
    template <class Write>
    bool put(std::uint64_t length, Write&& write, const Deadline& deadline) {
        return producer_ring().put(length, std::forward<Write>(write), deadline);
    }
    template <class Write>
    bool put_or_give_up(std::uint64_t length, Write&& write, const Deadline& deadline) {
        return producer_ring().put_or_give_up(length, std::forward<Write>(write), deadline);
    }
    template <class Write>
    std::size_t put_many(std::span<const std::uint64_t> lengths, Write&& write, const Deadline& deadline) {
        return producer_ring().put_many(lengths, std::forward<Write>(write), deadline);
    }
    bool put(std::span<const std::byte> message, const Deadline& deadline) {
        return producer_ring().put(message, deadline);
    }

    /// queue_ring::get over every lane: the first message ready in any lane (this consumer's
    /// own first), waiting until the deadline when there is none.
    template <class Consume>
    std::size_t get(const Deadline& deadline, Consume&& consume, std::size_t max = 1) {
        // One lane: the ring's own get, whose short way then compiles into the caller (the
        // lanes' walk, not inlined, would take it along into a call of its own).
        if (count() == 1) [[likely]]
            return first_ring_->get(deadline, consume, max);
        return get_from_lanes(deadline, consume, max);
    }
    /// queue_ring::get_ready over every lane.
    template <class Consume>
    std::size_t get_ready(Consume& consume, std::size_t max) {
        if (count() == 1) [[likely]]
            return first_ring_->get_ready(consume, max);
        return get_ready_from_lanes(consume, max);
    }

    void close() noexcept {
        for (queue_ring& ring : lanes()) ring.close();
    }
    [[nodiscard]] bool closed() const noexcept { return first_ring_->closed(); }
    [[nodiscard]] std::size_t qsize() const noexcept {
        return summed([](const queue_ring& ring) { return ring.qsize(); });
    }
    /// Whether a put of this process would block now: its lane is full (before its first put,
    /// the lane it would be dealt next; asking deals nothing).
    [[nodiscard]] bool full() const noexcept {
        std::size_t lane = lane_in(local_->put_lane);
        if (lane == max_lanes) lane = first().lane_producers.load(std::memory_order_relaxed) % count();
        return lanes()[lane].full();
    }
    [[nodiscard]] std::uint64_t dropped() const noexcept {
        return summed([](const queue_ring& ring) { return ring.dropped(); });
    }
    [[nodiscard]] std::size_t maxsize() const noexcept { return first_ring_->maxsize(); }
    [[nodiscard]] std::size_t ring_bytes() const noexcept { return first_ring_->ring_bytes(); }
    [[nodiscard]] std::size_t spill_bytes() const noexcept { return first_ring_->spill_bytes(); }

    /// Counts `n` items done. @throws StateError when fewer are pending (nothing counted).
    void task_done(std::size_t n);
    /// Waits until every item put into any lane is done (or dropped). False at the deadline.
    bool join(const Deadline& deadline);

private:
    /// What this process keeps of the queue, shared by its copies.
    struct local {
        std::vector<queue_ring> lanes;
        std::atomic<std::uint64_t> put_lane{0};  // pid << 32 | lane + 1, once this process put
        std::atomic<std::uint64_t> get_lane{0};  // pid << 32 | lane + 1, where its gets look first
        // Per lane, a head record seen claimed and not ready, and since when (steady_clock
        // nanoseconds): a get that finds it so for long looks whether its holder died, even
        // while other lanes keep it busy.
        struct stall {
            std::atomic<std::uint64_t> state{~std::uint64_t{0}};
            std::atomic<std::int64_t> since{0};
        };
        std::array<stall, max_lanes> stalls;
    };

    static void check_count(std::size_t lanes) {
        if (lanes == 0 || lanes > max_lanes)
            throw Error("mproc::QueueOptions: lanes must be from 1 to " + std::to_string(max_lanes) + " (was " +
                        std::to_string(lanes) + ")");
    }
    /// Once the lanes are made (the vector never grows after): notes what every put and get
    /// reads in the handle itself, and makes every lane ring the first one's bell.
    void share_bell() {
        count_ = local_->lanes.size();
        first_ring_ = &local_->lanes[0];
        for (std::size_t i = 1; i < count(); ++i) lanes()[i].ring_bell_of(*first_ring_);
    }
    [[nodiscard]] std::vector<queue_ring>& lanes() const noexcept { return local_->lanes; }
    [[nodiscard]] queue_control& first() const noexcept { return first_ring_->bell(); }
    [[nodiscard]] std::size_t next_lane(std::size_t lane) const noexcept { return lane + 1 == count() ? 0 : lane + 1; }

    /// This process's lane in `word` (put_lane or get_lane), or max_lanes before it has one.
    [[nodiscard]] static std::size_t lane_in(const std::atomic<std::uint64_t>& word) noexcept {
        const std::uint64_t seen = word.load(std::memory_order_relaxed);
        if (seen >> 32 != static_cast<std::uint64_t>(current_pid())) return max_lanes;
        return static_cast<std::uint32_t>(seen) - 1;
    }
    /// Deals this process a lane from `counter` and notes it in `word` (once per process).
    [[gnu::cold, gnu::noinline]] std::size_t deal(std::atomic<std::uint64_t>& word,
                                                  std::atomic<std::uint32_t>& counter) const {
        const std::size_t lane = counter.fetch_add(1, std::memory_order_relaxed) % count();
        word.store(static_cast<std::uint64_t>(current_pid()) << 32 | (lane + 1), std::memory_order_relaxed);
        return lane;
    }
    [[nodiscard]] queue_ring& producer_ring() const {
        if (count() == 1) return *first_ring_;
        std::size_t lane = lane_in(local_->put_lane);
        if (lane == max_lanes) [[unlikely]]
            lane = deal(local_->put_lane, first().lane_producers);
        return lanes()[lane];
    }
    /// The lane this process's gets look at first (dealt, and every lane enrolled in, once).
    [[nodiscard]] std::size_t consumer_lane() {
        if (const std::size_t lane = lane_in(local_->get_lane); lane != max_lanes) [[likely]]
            return lane;
        // get_ready takes from no ring this process has no registry entry in.
        for (queue_ring& ring : lanes()) ring.enroll_here();
        return deal(local_->get_lane, first().lane_consumers);
    }
    /// After `n` records taken from `lane` at head word `head`, with `home` the lane looked at
    /// first: stay while that lane's head has not crossed a multiple of `burst` records, then
    /// move on to the next lane (or to `lane`, where the messages were). The lane's own count
    /// decides, so nothing is written on most gets: a store here would be one more for the
    /// claim's locked instruction to wait for.
    void took_from(std::size_t lane, std::size_t home, std::uint64_t head, std::size_t n) noexcept {
        const std::uint64_t got = qlow(head);
        if (lane == home && (got + n) / burst == got / burst) return;
        const std::size_t next = lane == home ? next_lane(lane) : lane;
        local_->get_lane.store(static_cast<std::uint64_t>(current_pid()) << 32 | (next + 1), std::memory_order_relaxed);
    }
    /// get() and get_ready() of a queue with several lanes.
    template <class Consume>
    std::size_t get_from_lanes(const Deadline& deadline, Consume& consume, std::size_t max);
    template <class Consume>
    std::size_t get_ready_from_lanes(Consume& consume, std::size_t max) {
        std::array<queue_ring::head_mark, max_lanes> marks;
        return get_ready_from(consumer_lane(), consume, max, marks.data());
    }
    /// Takes from the first lane, from `start` on, whose head is ready; `marks` gets what was
    /// at each head when nothing was taken.
    template <class Consume>
    std::size_t get_ready_from(std::size_t start, Consume& consume, std::size_t max, queue_ring::head_mark* marks) {
        // No division by count() on this path: at tens of millions of gets a second it shows.
        for (std::size_t i = 0, lane = start; i < count(); ++i, lane = next_lane(lane)) {
            queue_ring& ring = lanes()[lane];
            std::size_t n = ring.get_ready(consume, max, marks[lane]);
            // A head that stays claimed and unready may be a dead process's: that lane's ring
            // looks (and drops it) at once. Without this, the lane's later messages would wait
            // until every other lane ran dry. Not the first lane looked at: a consumer at its
            // producer's heels finds the head claimed all the time, and get() waits there
            // anyway when nothing else is ready; the first lane moves on every `burst` records.
            if (n == 0 && i != 0 && stalled(lane, marks[lane])) {
                try {
                    n = ring.get(Deadline::after(std::chrono::seconds(0)), consume, max);
                } catch (const EndOfStream&) {
                    // Closed and drained: nothing to look at.
                }
            }
            if (n != 0) {
                took_from(lane, start, marks[lane].head, n);
                return n;
            }
        }
        return 0;
    }
    /// Whether the head `mark` of `lane` has been claimed and unready since a look at least
    /// stall_time ago (then the look starts over, so that holders are looked at that often).
    bool stalled(std::size_t lane, const queue_ring::head_mark& mark) noexcept {
        if (!mark.claimed() || mark.ready()) return false;
        local::stall& seen = local_->stalls[lane];
        const std::int64_t now = std::chrono::duration_cast<std::chrono::nanoseconds>(
                                     std::chrono::steady_clock::now().time_since_epoch())
                                     .count();
        if (seen.state.load(std::memory_order_relaxed) != mark.state) {
            seen.state.store(mark.state, std::memory_order_relaxed);
            seen.since.store(now, std::memory_order_relaxed);
            return false;
        }
        if (now - seen.since.load(std::memory_order_relaxed) < stall_time_ns) return false;
        seen.since.store(now, std::memory_order_relaxed);
        return true;
    }
    static constexpr std::int64_t stall_time_ns = 2'000'000;
    [[nodiscard]] bool drained() const noexcept {
        for (const queue_ring& ring : lanes())
            if (!ring.closed() || ring.qsize() != 0) return false;
        return true;
    }
    /// Puts into every lane so far (compared modulo 2^24, like each lane's count).
    [[nodiscard]] std::uint32_t records_put() const noexcept {
        return static_cast<std::uint32_t>(summed([](const queue_ring& ring) { return ring.records_put(); }));
    }
    /// The sum over every lane of what `of` says of it.
    template <class Of>
    [[nodiscard]] std::uint64_t summed(Of of) const noexcept {
        std::uint64_t n = 0;
        for (const queue_ring& ring : lanes()) n += of(ring);
        return n;
    }

    std::shared_ptr<local> local_;
    // Copies of what local_ holds, kept in the handle so that a one-lane queue (the default)
    // reaches its ring without going through local_ first: without them the 4x4 batch row of
    // bench_queue ran 0.91x in two runs of six rounds on 2 cores (single puts and gets: same).
    queue_ring* first_ring_ = nullptr;
    std::size_t count_ = 0;
};

template <class Consume>
std::size_t queue_lanes::get_from_lanes(const Deadline& deadline, Consume& consume, std::size_t max) {
    const std::size_t start = consumer_lane();
    std::array<queue_ring::head_mark, max_lanes> marks;
    // The usual case first: this consumer's own lane, before the walk over every lane.
    if (const std::size_t n = lanes()[start].get_ready(consume, max, marks[start])) {
        took_from(start, start, marks[start].head, n);
        return n;
    }
    for (;;) {
        if (const std::size_t n = get_ready_from(start, consume, max, marks.data())) return n;
        // Nothing ready: a head claimed but not ready (being written, or its holder died)?
        std::size_t stuck = max_lanes;
        for (std::size_t i = 0, lane = start; i < count() && stuck == max_lanes; ++i, lane = next_lane(lane))
            if (marks[lane].claimed()) stuck = lane;
        if (stuck != max_lanes) {
            // Its ring waits for it, or drops it, as it does alone; briefly, so that a message
            // put into another lane meanwhile waits at most that long.
            try {
                if (const std::size_t n = lanes()[stuck].get_waiting(
                        bounded_slice(deadline, std::chrono::milliseconds(2)), consume, max)) {
                    took_from(stuck, start, marks[stuck].head, n);
                    return n;
                }
            } catch (const EndOfStream&) {
                // That lane is closed and drained; the others may not be.
            }
            if (deadline.expired()) return 0;
            continue;
        }
        // Every lane empty: the end, once every lane is closed and empty (closed() reads the
        // first lane's flag, a line no put writes: the others are read only after a close).
        if (closed() && drained()) throw EndOfStream("mproc::Queue: get() on a closed queue that is drained");
        queue_control& bell = first();
        const auto changed = [&] {
            if (closed()) return true;
            for (std::size_t i = 0; i < count(); ++i)
                if (!(lanes()[i].mark() == marks[i])) return true;
            return false;
        };
        if (!queue_ring::sleep(bell.data_event, bell.get_waiters, deadline, std::chrono::milliseconds(100), changed))
            return 0;
    }
}

inline void queue_lanes::task_done(std::size_t n) {
    queue_control& c = first();
    std::uint32_t done = c.done.load(std::memory_order_acquire);
    do {
        if (((records_put() - done) & queue_low_mask) < n)
            throw StateError("mproc::JoinableQueue: task_done() called more times than items were put");
    } while (!c.done.compare_exchange_weak(done, static_cast<std::uint32_t>(done + n), std::memory_order_seq_cst));
    if (c.join_waiters.load(std::memory_order_seq_cst) != 0) futex_wake(c.done);
}

inline bool queue_lanes::join(const Deadline& deadline) {
    queue_control& c = first();
    const auto finished = [&](std::uint32_t done) { return ((records_put() - done) & queue_low_mask) == 0; };
    for (;;) {
        // Sliced: a dropped record counts as done a moment before the tail counts it as put,
        // and an item held by a dead consumer is found only by looking.
        if (wait_until(c.done, c.join_waiters, finished, bounded_slice(deadline, std::chrono::milliseconds(50))))
            return true;
        if (deadline.expired()) return false;
        for (queue_ring& ring : lanes()) ring.drop_dead_readers();
    }
}

}  // namespace detail
MPROC_NAMESPACE_END

// mproc::Queue and mproc::JoinableQueue: typed multi-producer multi-consumer queues in shared
// memory, like Python's multiprocessing.Queue and JoinableQueue, without a feeder thread.
//
// How it works (details in detail/queue_ring.hpp): messages are codec-encoded straight into a
// ring in shared memory; put() returns once the message is there, so nothing sits in a private
// buffer that a process exit could lose. A put and a get each take one compare-and-swap that
// names the claiming process, so a process killed in the middle of a put or a get is found out
// (its pid, start time and a generation are checked in /proc) and its half-done message is
// dropped and counted, instead of wedging the queue. A queue made with several lanes is that
// many rings, one per producer process in turn (detail/queue_lanes.hpp).
#pragma once

#include <mproc/codec.hpp>
#include <mproc/detail/deadline.hpp>
#include <mproc/detail/queue_lanes.hpp>
#include <mproc/detail/shared_handle.hpp>
#include <mproc/error.hpp>
#include <mproc/version.hpp>

#include <algorithm>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <cstdlib>
#include <cstring>
#include <span>
#include <string>
#include <type_traits>
#include <vector>

MPROC_NAMESPACE_BEGIN

/// How a Queue is sized.
/// @code
/// mproc::Queue<std::string> q(mproc::QueueOptions{.maxsize = 1000, .ring_bytes = 64 << 20});
/// @endcode
struct QueueOptions {
    /// At most this many messages queued (put blocks when full); 0: no limit but the ring's bytes.
    std::size_t maxsize = 0;
    /// Bytes of the shared ring that holds queued messages: a power of two, at least 4 KiB.
    /// Memory is touched as the ring fills, and stays with the queue. A message larger than half
    /// the ring takes the spill window instead, which is slower (its pages are freshly mapped).
    /// A queued message of up to 8 bytes takes 128 bytes of ring; a longer one its size plus 16,
    /// rounded up to a multiple of 128.
    std::size_t ring_bytes = std::size_t{4} << 20;
    /// Address space for messages larger than half the ring, all such messages queued at once
    /// counted together (each rounded up to a power of two, at least 64 KiB). Only the pages of
    /// queued messages take memory; a consumed message's pages are returned at once. A put that
    /// finds no room left there throws Error and queues nothing. A process killed in the middle
    /// of a put or a get of such a message loses none of this space for good: its share comes
    /// back when its record is dropped (see Queue), or when a put finds the window full.
    std::size_t spill_bytes = std::size_t{16} << 30;
    /// Rings the queue is made of, each of `ring_bytes`. With several, each producer process
    /// is dealt a lane of its own in turn (consumers look at every lane, their own first), so
    /// that producers on many cores do not all claim at one place (meant for queues fed by
    /// several processes at once on many cores; not yet measured on more than 2). The price
    /// is the order: one producer's messages stay in order, but those of different producers
    /// have none between them, even when one process put after another had finished (a sentinel
    /// put after joining the producers may come before their last messages: end such a
    /// stream with close(), which every lane drains first). 0: the environment variable
    /// MPROC_QUEUE_LANES if set, else 1, a single order. A queue with a maxsize has one lane.
    std::size_t lanes = 0;
};

namespace detail {
/// The lanes a queue made with `options` has (see QueueOptions::lanes).
/// @throws Error for a MPROC_QUEUE_LANES that is not a number from 1 to 64.
[[nodiscard]] inline std::size_t queue_lane_count(const QueueOptions& options) {
    if (options.lanes != 0 || options.maxsize != 0) return options.lanes == 0 ? 1 : options.lanes;
    if (const char* text = std::getenv("MPROC_QUEUE_LANES")) {
        char* end = nullptr;
        const unsigned long n = std::strtoul(text, &end, 10);
        if (end == text || *end != '\0' || n == 0 || n > queue_lanes::max_lanes)
            throw Error("mproc::Queue: MPROC_QUEUE_LANES must be a number from 1 to " +
                        std::to_string(queue_lanes::max_lanes) + " (is \"" + text + "\")");
        return n;
    }
    return 1;
}

/// Elements whose codec encoding is their object's bytes.
template <class T>
inline constexpr bool queue_raw_v = (std::is_arithmetic_v<T> && !std::is_same_v<T, bool>) || std::is_same_v<T, std::byte>;

/// Values the queue writes into shared memory without the codec's Encoder (one memcpy, no
/// sizing pass): an arithmetic value (its bytes), and a vector or string of them (a u64 count,
/// then the elements), exactly as codec.hpp documents them. The test
/// Queue.codec.direct_encoding_matches_the_codec holds the two together. Every other T is
/// encoded in place too, by mproc::encoded_size and mproc::encode_to.
template <class T>
struct queue_direct : std::false_type {};

template <class T>
    requires queue_raw_v<T>
struct queue_direct<T> : std::true_type {
    static std::size_t size(const T&) noexcept { return sizeof(T); }
    static void write(std::byte* to, const T& value) noexcept { queue_copy(to, &value, sizeof value); }
};

template <class Contiguous, class E>
struct queue_direct_counted : std::true_type {
    static std::size_t size(const Contiguous& c) noexcept { return sizeof(std::uint64_t) + c.size() * sizeof(E); }
    static void write(std::byte* to, const Contiguous& c) noexcept {
        const std::uint64_t count = c.size();
        std::memcpy(to, &count, sizeof count);
        queue_copy(to + sizeof count, c.data(), c.size() * sizeof(E));
    }
};

template <class E>
    requires queue_raw_v<E>
struct queue_direct<std::vector<E>> : queue_direct_counted<std::vector<E>, E> {};

template <class C>
    requires queue_raw_v<C>
struct queue_direct<std::basic_string<C>> : queue_direct_counted<std::basic_string<C>, C> {};
}  // namespace detail

/// A first-in first-out queue of T between processes: any number of producers and consumers,
/// messages of any size, in shared memory.
///
/// Make the queue before starting the processes that use it: a copy of the handle (a capture,
/// an argument to Process) refers to the same queue, in this process and in forked children;
/// a Process started by spawn or forkserver gets it as an argument (its memfds are passed).
/// Order is kept per producer (with one lane, the default, there is one order for all: see
/// QueueOptions::lanes). Blocking calls have timed and non-blocking forms; every wait
/// resumes after signals (EINTR) and never outlasts its timeout.
///
/// End of stream: close() instead of Python's sentinel per consumer. After close(), put throws
/// EndOfStream, and get() returns what is left, then throws EndOfStream. A put that races
/// with close() either throws or is delivered. (Sentinels work too: Queue<std::optional<T>>.)
///
/// Dead processes: a producer killed in the middle of a put leaves no partial message: the
/// half-written record is skipped by readers. A consumer killed in the middle of a get loses
/// the message it held (it was taken), and its space is reclaimed. Either way readers are not
/// told through get(), which simply returns the next whole message; dropped() counts them, and
/// for a JoinableQueue a dropped item counts as done, so join() does not wait for it forever.
/// Noticing a dead holder takes a few milliseconds: it is checked only once a record has been
/// stuck that long.
/// @code
/// mproc::Queue<std::string> q;
/// mproc::Process worker([q]() mutable {
///     try { for (;;) std::puts(q.get().c_str()); } catch (const mproc::EndOfStream&) {}
/// });
/// worker.start();
/// q.put("hello");
/// q.close();
/// worker.join();
/// @endcode
template <class T>
class Queue {
    static_assert(Encodable<T> || detail::explain_unencodable<T>(),
                  "mproc::Queue<T>: T must be encodable by mproc::codec (give it a member "
                  "serialize(Ar&) or specialize mproc::codec<T>)");

public:
    /// A queue of at most `maxsize` messages (0: bounded only by the ring's bytes).
    explicit Queue(std::size_t maxsize = 0) : Queue(QueueOptions{.maxsize = maxsize}) {}
    /// A queue sized by `options`. @throws Error for a ring size that is not a power of two, or
    /// lanes out of 1..64 (QueueOptions::lanes or MPROC_QUEUE_LANES), or lanes with a maxsize.
    explicit Queue(const QueueOptions& options)
        : lanes_(detail::queue_lane_count(options), options.ring_bytes, options.spill_bytes, options.maxsize) {}

    // Copies share the queue; there is no empty, moved-from state.
    /// Another handle on the same queue (in this process and in children forked later).
    Queue(const Queue&) = default;
    /// Makes this handle refer to the assigned handle's queue.
    Queue& operator=(const Queue&) = default;
    ~Queue() = default;

    /// Puts `value`, blocking while the queue is full.
    /// @throws EndOfStream when the queue is closed; Error when the message exceeds the spill window;
    ///         whatever T's codec throws (nothing is then delivered).
    void put(const T& value) { (void)put_until(value, detail::Deadline::never()); }

    /// Puts `value`, waiting at most `timeout` for room.
    /// @throws TimeoutError when there was no room in time; EndOfStream when closed.
    template <class Rep, class Period>
    void put(const T& value, std::chrono::duration<Rep, Period> timeout) {
        if (!try_put_for(value, timeout)) throw TimeoutError("mproc::Queue: put() found no room in time");
    }

    /// Puts `value` if there is room now. @throws EndOfStream when closed.
    [[nodiscard]] bool try_put(const T& value) { return put_until(value, detail::Deadline::after(std::chrono::seconds(0))); }

    /// Puts `value`, waiting at most `timeout` for room; false when there was none.
    /// @throws EndOfStream when closed.
    template <class Rep, class Period>
    [[nodiscard]] bool try_put_for(const T& value, std::chrono::duration<Rep, Period> timeout) {
        return put_until(value, detail::Deadline::after(timeout));
    }

    /// Puts every item of `items`, in order, blocking while the queue is full: one claim takes
    /// as many as there is room for (up to 32), so a batch costs far less than a put per item.
    /// Another producer's messages may come between two claims; one producer's order is kept.
    /// @code
    /// std::vector<Job> jobs = make_jobs();
    /// q.put_many(jobs);
    /// @endcode
    /// @throws EndOfStream when the queue is closed (the items before are delivered); Error,
    ///         or whatever T's codec throws, as put() (the items before it are delivered, it and
    ///         the ones after are not).
    void put_many(std::span<const T> items) { (void)put_many_until(items, detail::Deadline::never()); }

    /// put_many() of what fits now: returns how many of the first items went in (0 to all).
    /// @throws as put_many().
    [[nodiscard]] std::size_t try_put_many(std::span<const T> items) {
        return put_many_until(items, detail::Deadline::after(std::chrono::seconds(0)));
    }

    /// put_many() waiting at most `timeout` for room: returns how many of the first items went
    /// in. @throws as put_many().
    template <class Rep, class Period>
    [[nodiscard]] std::size_t try_put_many_for(std::span<const T> items, std::chrono::duration<Rep, Period> timeout) {
        return put_many_until(items, detail::Deadline::after(timeout));
    }

    /// Puts bytes that are already an encoding of T (from mproc::encode). Bytes that are not
    /// make the get() that receives them throw DecodeError. @throws EndOfStream when closed.
    void put_encoded(std::span<const std::byte> bytes) { (void)lanes_.put(bytes, detail::Deadline::never()); }

    /// Takes the next message, blocking until there is one.
    /// @throws EndOfStream once the queue is closed and drained; DecodeError when the message
    ///         is not a T (that message is consumed; the queue stays usable).
    [[nodiscard]] T get() { return *get_until(detail::Deadline::never()); }

    /// Takes the next message, waiting at most `timeout`.
    /// @throws TimeoutError when none came in time; EndOfStream, DecodeError as get().
    template <class Rep, class Period>
    [[nodiscard]] T get(std::chrono::duration<Rep, Period> timeout) {
        auto value = try_get_for(timeout);
        if (!value) throw TimeoutError("mproc::Queue: get() found no message in time");
        return std::move(*value);
    }

    /// The next message if one is there now, else nullopt.
    /// @throws EndOfStream once closed and drained; DecodeError as get().
    [[nodiscard]] std::optional<T> try_get() { return get_until(detail::Deadline::after(std::chrono::seconds(0))); }

    /// The next message, waiting at most `timeout`; nullopt when none came.
    /// @throws EndOfStream once closed and drained; DecodeError as get().
    template <class Rep, class Period>
    [[nodiscard]] std::optional<T> try_get_for(std::chrono::duration<Rep, Period> timeout) {
        return get_until(detail::Deadline::after(timeout));
    }

    /// Takes the next messages in order, at least one and at most `max`, blocking until there
    /// is one: those ready behind the first come in the same claim (32 at a time), so a batch
    /// costs far less than a get per message. (`max` 0: an empty vector at once.)
    /// @code
    /// for (const Job& job : q.get_many(16)) run(job);
    /// @endcode
    /// @throws EndOfStream once the queue is closed and drained; DecodeError when a message is
    ///         not a T (the messages this call took are consumed, the queue stays usable).
    [[nodiscard]] std::vector<T> get_many(std::size_t max) { return get_many_until(max, detail::Deadline::never()); }

    /// get_many() waiting at most `timeout` for the first message.
    /// @throws TimeoutError when none came in time; EndOfStream, DecodeError as get_many().
    template <class Rep, class Period>
    [[nodiscard]] std::vector<T> get_many(std::size_t max, std::chrono::duration<Rep, Period> timeout) {
        std::vector<T> values = try_get_many_for(max, timeout);
        if (values.empty() && max != 0) throw TimeoutError("mproc::Queue: get_many() found no message in time");
        return values;
    }

    /// get_many() of what is there now: empty when nothing is.
    /// @throws EndOfStream once closed and drained; DecodeError as get_many().
    [[nodiscard]] std::vector<T> try_get_many(std::size_t max) {
        return get_many_until(max, detail::Deadline::after(std::chrono::seconds(0)));
    }

    /// get_many() waiting at most `timeout` for the first message: empty when none came.
    /// @throws EndOfStream once closed and drained; DecodeError as get_many().
    template <class Rep, class Period>
    [[nodiscard]] std::vector<T> try_get_many_for(std::size_t max, std::chrono::duration<Rep, Period> timeout) {
        return get_many_until(max, detail::Deadline::after(timeout));
    }

    /// No more puts, in every process: every blocked putter and getter wakes now; getters drain
    /// what is queued, then see EndOfStream. Idempotent.
    void close() noexcept { lanes_.close(); }

    /// Whether close() was called (in any process).
    [[nodiscard]] bool closed() const noexcept { return lanes_.closed(); }

    /// Messages queued now: put (or being put) and not yet taken. A snapshot, like Python's.
    [[nodiscard]] std::size_t qsize() const noexcept { return lanes_.qsize(); }
    /// qsize() == 0.
    [[nodiscard]] bool empty() const noexcept { return qsize() == 0; }
    /// Whether a put would block now: maxsize reached, or (unbounded) no free cell in the ring
    /// (with several lanes, the one this process puts into).
    [[nodiscard]] bool full() const noexcept { return lanes_.full(); }
    /// The maxsize given at construction (0: none).
    [[nodiscard]] std::size_t maxsize() const noexcept { return lanes_.maxsize(); }
    /// The size in bytes of each lane's ring.
    [[nodiscard]] std::size_t ring_bytes() const noexcept { return lanes_.ring_bytes(); }
    /// The lanes the queue was made with (see QueueOptions::lanes).
    [[nodiscard]] std::size_t lanes() const noexcept { return lanes_.count(); }

    /// Messages lost because the process putting or getting them died midway, since creation.
    /// @code
    /// if (q.dropped() != 0) std::fprintf(stderr, "%llu messages lost to crashed workers\n", ...);
    /// @endcode
    [[nodiscard]] std::uint64_t dropped() const noexcept { return lanes_.dropped(); }

    /// @cond
protected:
    explicit Queue(detail::queue_lanes lanes) noexcept : lanes_(std::move(lanes)) {}

    detail::queue_lanes lanes_;
    /// @endcond

private:
    template <class>
    friend struct detail::shared_handle;

    bool put_until(const T& value, const detail::Deadline& deadline) {
        using direct = detail::queue_direct<T>;
        if constexpr (direct::value) {
            return lanes_.put(
                direct::size(value), [&](std::byte* to) noexcept { direct::write(to, value); }, deadline);
        } else {
            // Any other T is encoded straight into its record too: sized first (before the
            // claim, so a codec that throws leaves the queue untouched), then written in place.
            const std::size_t length = encoded_size(value);
            return lanes_.put_or_give_up(
                length, [&](std::byte* to) { return encode_to(std::span<std::byte>(to, length), value) == length; },
                deadline);
        }
    }

    std::size_t put_many_until(std::span<const T> items, const detail::Deadline& deadline) {
        using direct = detail::queue_direct<T>;
        constexpr std::size_t batch = detail::queue_ring::batch_max;
        std::uint64_t lengths[batch];
        std::size_t put = 0;
        while (put < items.size()) {
            const std::span<const T> chunk = items.subspan(put, std::min(batch, items.size() - put));
            // Sized before the claim, as put() does: a codec that throws here leaves the queue
            // untouched for this chunk.
            for (std::size_t i = 0; i < chunk.size(); ++i) {
                if constexpr (direct::value) lengths[i] = direct::size(chunk[i]);
                else lengths[i] = encoded_size(chunk[i]);
            }
            const std::size_t done = lanes_.put_many(
                std::span<const std::uint64_t>(lengths, chunk.size()),
                [&](std::size_t i, std::byte* to) {
                    if constexpr (direct::value) {
                        direct::write(to, chunk[i]);
                        return true;
                    } else {
                        return encode_to(std::span<std::byte>(to, lengths[i]), chunk[i]) == lengths[i];
                    }
                },
                deadline);
            put += done;
            if (done < chunk.size()) break;
        }
        return put;
    }

    static T decode_message(std::span<const std::byte> bytes) {
        if constexpr (detail::queue_raw_v<T>) {
            if (bytes.size() == sizeof(T)) {  // what decode<T> would do, minus its checks
                T value;
                std::memcpy(&value, bytes.data(), sizeof value);
                return value;
            }
        }
        return decode<T>(bytes);  // anything else, and every error, the codec's way
    }

    std::optional<T> get_until(const detail::Deadline& deadline) {
        std::optional<T> out;
        (void)lanes_.get(deadline, [&](std::span<const std::byte> bytes) { out.emplace(decode_message(bytes)); });
        return out;
    }

    std::vector<T> get_many_until(std::size_t max, const detail::Deadline& deadline) {
        constexpr std::size_t batch = detail::queue_ring::batch_max;
        std::vector<T> out;
        if (max == 0) return out;
        out.reserve(std::min(max, batch));
        auto consume = [&](std::span<const std::byte> bytes) { out.push_back(decode_message(bytes)); };
        // The first claim waits; the next ones take only what is ready already.
        std::size_t taken = lanes_.get(deadline, consume, std::min(max, batch));
        while (taken != 0 && out.size() < max) taken = lanes_.get_ready(consume, std::min(max - out.size(), batch));
        return out;
    }
};

/// A Queue whose consumers report each item done, so that a producer can wait for all of them,
/// like Python's JoinableQueue.
/// @code
/// mproc::JoinableQueue<int> jobs;
/// // consumer: for (;;) { int j = jobs.get(); work(j); jobs.task_done(); }
/// for (int j = 0; j < 100; ++j) jobs.put(j);
/// jobs.join();  // returns when task_done() was called for all 100
/// @endcode
template <class T>
class JoinableQueue : public Queue<T> {
public:
    using Queue<T>::Queue;

    /// Marks one item taken by get() as done.
    /// @throws StateError when called more often than items were put.
    void task_done() { this->lanes_.task_done(1); }

    /// Marks `n` items done at once (after a get_many(), say): task_done() `n` times.
    /// @throws StateError when that is more than items were put and not yet done (none marked).
    void task_done(std::size_t n) { this->lanes_.task_done(n); }

    /// Blocks until every item put so far is done (task_done() called, or dropped with a dead
    /// consumer). A consumer that exits after get() without task_done() keeps join() waiting,
    /// as in Python: use the timed form when that can happen.
    void join() { (void)this->lanes_.join(detail::Deadline::never()); }

    /// join() waiting at most `timeout`; false when items were still pending.
    template <class Rep, class Period>
    [[nodiscard]] bool join_for(std::chrono::duration<Rep, Period> timeout) {
        return this->lanes_.join(detail::Deadline::after(timeout));
    }

private:
    template <class>
    friend struct detail::shared_handle;
    explicit JoinableQueue(detail::queue_lanes lanes) noexcept : Queue<T>(std::move(lanes)) {}
};

/// @cond
namespace detail {
/// A queue travels as its lanes' memfds and the sizes it was made with.
template <class T>
struct shared_handle<Queue<T>> : std::true_type {
    static void save(const Queue<T>& q, handle_writer& w) {
        w.word(q.lanes_.count());
        for (std::size_t i = 0; i < q.lanes_.count(); ++i) w.fd(q.lanes_.lane(i).memory_fd());
        w.word(q.lanes_.ring_bytes());
        w.word(q.lanes_.spill_bytes());
    }
    static queue_lanes load_lanes(handle_reader& r) {
        const std::uint64_t count = r.word();
        if (count == 0 || count > queue_lanes::max_lanes)
            throw DecodeError("mproc::Queue: a handle with a bad lane count");
        std::vector<unique_fd> fds;
        for (std::uint64_t i = 0; i < count; ++i) {
            unique_fd fd(::fcntl(r.fd(), F_DUPFD_CLOEXEC, 3));
            if (!fd) throw_errno("fcntl");
            fds.push_back(std::move(fd));
        }
        const std::uint64_t ring_bytes = r.word();
        const std::uint64_t spill_bytes = r.word();
        return queue_lanes(std::move(fds), ring_bytes, spill_bytes);
    }
    static Queue<T> load(handle_reader& r) { return Queue<T>(load_lanes(r)); }
};
template <class T>
struct shared_handle<JoinableQueue<T>> : std::true_type {
    static void save(const JoinableQueue<T>& q, handle_writer& w) { shared_handle<Queue<T>>::save(q, w); }
    static JoinableQueue<T> load(handle_reader& r) {
        return JoinableQueue<T>(shared_handle<Queue<T>>::load_lanes(r));
    }
};
}  // namespace detail
/// @endcond

MPROC_NAMESPACE_END

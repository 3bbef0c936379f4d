#include "support.hpp"

#include <mproc/process.hpp>
#include <mproc/queue.hpp>
#include <mproc/sync.hpp>

#include <catch2/catch.hpp>

#include <pthread.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <csignal>
#include <cstdlib>
#include <cstdint>
#include <fstream>
#include <iterator>
#include <map>
#include <optional>
#include <random>
#include <set>
#include <stdexcept>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

using namespace std::chrono_literals;
using clock_type = std::chrono::steady_clock;

namespace {

// Mappings of this process that match `needle` (/proc/self/maps lines).
int mappings_matching(const std::string& needle) {
    std::ifstream maps("/proc/self/maps");
    int count = 0;
    for (std::string line; std::getline(maps, line);)
        if (line.find(needle) != std::string::npos) ++count;
    return count;
}

// Names in /dev/shm that carry this process's pid (ctest runs other programs in parallel).
std::set<std::string> our_shm_names() {
    const std::string pid = std::to_string(::getpid());
    std::set<std::string> ours;
    for (const auto& n : mproc_test::shm_names())
        if (n.find(pid) != std::string::npos || n.find("mproc") != std::string::npos) ours.insert(n);
    return ours;
}

// A pattern that a corrupted or shifted byte breaks.
std::vector<std::byte> pattern(std::size_t n, unsigned seed) {
    std::vector<std::byte> v(n);
    std::uint32_t x = seed * 2654435761u + 1;
    for (auto& b : v) {
        x = x * 1664525u + 1013904223u;
        b = static_cast<std::byte>(x >> 24);
    }
    return v;
}

// The fault hook: a child that sets g_kill_at dies by SIGKILL at that moment of its next
// put or get (the hook is this process's own; the parent never sets it).
std::atomic<int> g_kill_at{-1};
void kill_at_hook(mproc::detail::queue_point point) {
    if (static_cast<int>(point) == g_kill_at.load()) ::raise(SIGKILL);
}
void die_at(mproc::detail::queue_point point) {
    g_kill_at = static_cast<int>(point);
    mproc::detail::queue_fault_hook = kill_at_hook;
}

template <class R>
void join_bounded(mproc::Process<R>& p, std::chrono::seconds limit = 30s) {
    REQUIRE(p.join(limit));
}

}  // namespace

TEST_CASE("Queue.fifo.one_process", "[queue]") {
    mproc::Queue<int> q;
    CHECK(q.empty());
    CHECK(q.maxsize() == 0);
    for (int i = 0; i < 1000; ++i) q.put(i);
    CHECK(q.qsize() == 1000);
    for (int i = 0; i < 1000; ++i) CHECK(q.get() == i);
    CHECK(q.empty());
    CHECK_FALSE(q.try_get());
}

TEST_CASE("Queue.fifo.across_processes_and_copies", "[queue]") {
    mproc::Queue<std::string> q;
    mproc::Queue<std::string> copy = q;  // a copy is the same queue
    mproc::Process producer([copy]() mutable {
        for (int i = 0; i < 20000; ++i) copy.put("message " + std::to_string(i));
    });
    producer.start();
    for (int i = 0; i < 20000; ++i) REQUIRE(q.get() == "message " + std::to_string(i));
    join_bounded(producer);
    CHECK(producer.exitcode() == 0);
    CHECK(q.dropped() == 0);
}

TEST_CASE("Queue.bounded.put_blocks_when_full", "[queue]") {
    mproc::Queue<int> q(3);
    CHECK(q.maxsize() == 3);
    CHECK(q.try_put(1));
    CHECK(q.try_put(2));
    q.put(3);
    CHECK(q.full());
    CHECK_FALSE(q.try_put(4));
    const auto start = clock_type::now();
    CHECK_FALSE(q.try_put_for(4, 50ms));
    CHECK(clock_type::now() - start >= 50ms);
    CHECK_THROWS_AS(q.put(4, 10ms), mproc::TimeoutError);
    // A getter in another process makes room; the blocked put then goes through.
    mproc::Process getter([q]() mutable {
        std::this_thread::sleep_for(50ms);
        return q.get();
    });
    getter.start();
    q.put(4);
    CHECK(getter.result() == 1);
    for (int i = 2; i <= 4; ++i) CHECK(q.get() == i);
}

TEST_CASE("Queue.bounded.ring_bytes_limit_unbounded_queue", "[queue]") {
    mproc::Queue<std::int64_t> q(mproc::QueueOptions{.ring_bytes = 4096});
    CHECK(q.ring_bytes() == 4096);
    int put = 0;
    while (q.try_put(put)) ++put;
    CHECK(put == 32);  // 4096 bytes of 128-byte cells, one cell per small message
    CHECK(q.full());
    CHECK(q.get() == 0);
    CHECK(q.try_put(99));
    for (int i = 1; i < 32; ++i) CHECK(q.get() == i);
    CHECK(q.get() == 99);
}

TEST_CASE("Queue.timeouts.get", "[queue]") {
    mproc::Queue<int> q;
    auto start = clock_type::now();
    CHECK_FALSE(q.try_get_for(50ms));
    CHECK(clock_type::now() - start >= 50ms);
    start = clock_type::now();
    CHECK_THROWS_AS(q.get(30ms), mproc::TimeoutError);
    CHECK(clock_type::now() - start >= 30ms);
    CHECK(clock_type::now() - start < 2s);
    q.put(5);
    CHECK(q.get(1s) == 5);
}

TEST_CASE("Queue.close.wakes_blocked_getters_and_putters", "[queue]") {
    mproc::Queue<int> q(1);
    q.put(7);
    std::atomic<int> outcomes{0};
    std::thread putter([&] {
        try {
            q.put(8);  // blocks: full
        } catch (const mproc::EndOfStream&) {
            outcomes += 1;
        }
    });
    mproc::Queue<int> empty;
    std::thread getter([&] {
        try {
            (void)empty.get();
        } catch (const mproc::EndOfStream&) {
            outcomes += 10;
        }
    });
    mproc::Process remote_getter([empty]() mutable {
        try {
            (void)empty.get();
            return 1;
        } catch (const mproc::EndOfStream&) {
            return 0;
        }
    });
    remote_getter.start();
    std::this_thread::sleep_for(100ms);
    const auto start = clock_type::now();
    q.close();
    empty.close();
    putter.join();
    getter.join();
    CHECK(remote_getter.result() == 0);
    CHECK(clock_type::now() - start < 1s);
    CHECK(outcomes == 11);
    // Closed: puts refuse, gets drain what is left, then end.
    CHECK(q.closed());
    CHECK_THROWS_AS(q.put(9), mproc::EndOfStream);
    CHECK_THROWS_AS(q.try_put(9), mproc::EndOfStream);
    CHECK(q.get() == 7);
    CHECK_THROWS_AS(q.get(), mproc::EndOfStream);
    CHECK_THROWS_AS(q.try_get(), mproc::EndOfStream);
}

TEST_CASE("Queue.end_of_stream.close_and_sentinel_idioms", "[queue]") {
    SECTION("close: consumers loop until EndOfStream") {
        mproc::Queue<int> q;
        std::vector<mproc::Process<long>> consumers;
        for (int c = 0; c < 3; ++c)
            consumers.emplace_back([q]() mutable {
                long sum = 0;
                try {
                    for (;;) sum += q.get();
                } catch (const mproc::EndOfStream&) {
                }
                return sum;
            });
        for (auto& c : consumers) c.start();
        for (int i = 1; i <= 3000; ++i) q.put(i);
        q.close();
        long total = 0;
        for (auto& c : consumers) total += c.result();
        CHECK(total == 3000L * 3001 / 2);
    }
    SECTION("sentinel: one nullopt per consumer") {
        mproc::Queue<std::optional<int>> q;
        std::vector<mproc::Process<long>> consumers;
        for (int c = 0; c < 3; ++c)
            consumers.emplace_back([q]() mutable {
                long sum = 0;
                while (auto v = q.get()) sum += *v;
                return sum;
            });
        for (auto& c : consumers) c.start();
        for (int i = 1; i <= 3000; ++i) q.put(i);
        for (int c = 0; c < 3; ++c) q.put(std::nullopt);
        long total = 0;
        for (auto& c : consumers) total += c.result();
        CHECK(total == 3000L * 3001 / 2);
    }
}

TEST_CASE("Queue.sizes.one_byte_to_64_MiB", "[queue]") {
    using Bytes = std::vector<std::byte>;
    // A small ring, so that the larger sizes take the spill window.
    mproc::Queue<Bytes> q(mproc::QueueOptions{.ring_bytes = 1 << 20});
    const std::vector<std::size_t> sizes{0,       1,       23,      24,       25,      247,
                                         248,     249,     4096,    65536,    524'288, 524'289,
                                         1 << 20, 3 << 20, 9 << 20, 64 << 20};
    mproc::Process echo([q, sizes]() mutable {
        int good = 0;
        for (std::size_t i = 0; i < sizes.size(); ++i) {
            Bytes got = q.get();
            good += got == pattern(sizes[i], static_cast<unsigned>(i));
        }
        for (std::size_t i = 0; i < sizes.size(); ++i) q.put(pattern(sizes[i], static_cast<unsigned>(i) + 100));
        return good;
    });
    echo.start();
    for (std::size_t i = 0; i < sizes.size(); ++i) q.put(pattern(sizes[i], static_cast<unsigned>(i)));
    CHECK(echo.result() == static_cast<int>(sizes.size()));
    for (std::size_t i = 0; i < sizes.size(); ++i) {
        INFO("size " << sizes[i]);
        CHECK(q.get() == pattern(sizes[i], static_cast<unsigned>(i) + 100));
    }
    // Larger than the ring, put and got by the same process: it spills, no consumer needed.
    q.put(pattern(5 << 20, 7));
    q.put(pattern(5 << 20, 8));
    CHECK(q.get() == pattern(5 << 20, 7));
    CHECK(q.get() == pattern(5 << 20, 8));
}

TEST_CASE("Queue.sizes.beyond_the_spill_window_is_an_error", "[queue]") {
    mproc::Queue<std::string> q(mproc::QueueOptions{.ring_bytes = 64 << 10, .spill_bytes = 1 << 20});
    CHECK_THROWS_AS(q.put(std::string(2 << 20, 'x')), mproc::Error);
    q.put(std::string(600 << 10, 'y'));  // spilled, fits
    q.put("small");
    CHECK(q.get().size() == (600u << 10));
    CHECK(q.get() == "small");
    CHECK_THROWS_AS(mproc::Queue<int>(mproc::QueueOptions{.ring_bytes = 5000}), mproc::Error);
}

TEST_CASE("Queue.decode_error.queue_stays_usable", "[queue]") {
    mproc::Queue<std::string> q;
    q.put("before");
    const std::vector<std::byte> garbage{std::byte{0xff}, std::byte{0xff}, std::byte{0xff}};
    q.put_encoded(garbage);  // a u64 count cut short
    auto huge_count = mproc::encode(std::uint64_t{1} << 60);
    q.put_encoded(huge_count);  // a count far beyond the bytes that follow
    q.put("after");
    CHECK(q.get() == "before");
    CHECK_THROWS_AS(q.get(), mproc::DecodeError);
    CHECK_THROWS_AS(q.get(), mproc::DecodeError);
    CHECK(q.get() == "after");
    CHECK(q.empty());
    CHECK(q.dropped() == 0);
    // Arithmetic types are read without the Decoder when the size is right, with it otherwise.
    mproc::Queue<std::int64_t> numbers;
    numbers.put_encoded(std::vector<std::byte>(3));
    numbers.put_encoded(std::vector<std::byte>(12));
    numbers.put(-5);
    CHECK_THROWS_AS(numbers.get(), mproc::DecodeError);
    CHECK_THROWS_AS(numbers.get(), mproc::DecodeError);
    CHECK(numbers.get() == -5);
}

namespace {
// The queue writes these types without the codec's Encoder: the bytes must be the same.
template <class T>
void check_direct_encoding(const T& value) {
    using direct = mproc::detail::queue_direct<T>;
    static_assert(direct::value);
    // Room to spare: GCC 12 at -O3 flags the copy of an empty vector into an exactly sized
    // buffer (-Warray-bounds on a branch it cannot rule out); in a queue the target is the ring.
    std::vector<std::byte> bytes(direct::size(value) + 64);
    direct::write(bytes.data(), value);
    bytes.resize(direct::size(value));
    CHECK(bytes == mproc::encode(value));
    mproc::Queue<T> q;
    q.put(value);
    CHECK(q.get() == value);
}
}  // namespace

TEST_CASE("Queue.codec.direct_encoding_matches_the_codec", "[queue]") {
    check_direct_encoding(std::int64_t{-42});
    check_direct_encoding(3.25);
    check_direct_encoding('c');
    check_direct_encoding(std::byte{7});
    check_direct_encoding(std::vector<int>{1, 2, 3});
    check_direct_encoding(std::vector<double>{});
    check_direct_encoding(std::vector<std::byte>(1000, std::byte{9}));
    check_direct_encoding(std::string("text"));
    check_direct_encoding(std::u16string(u"wide"));
    static_assert(!mproc::detail::queue_direct<bool>::value);
    static_assert(!mproc::detail::queue_direct<std::vector<bool>>::value);
    static_assert(!mproc::detail::queue_direct<std::vector<std::string>>::value);
}

namespace {
// A codec that misbehaves on demand between the queue's two passes over a value (encoded_size,
// then encode_to into the claimed record): mode 1 throws in the second, mode 2 writes less in
// the second, mode 3 more than it said; mode 4 throws in call number g_flaky_fail_at.
std::atomic<int> g_flaky_mode{0};
std::atomic<int> g_flaky_calls{0};
std::atomic<int> g_flaky_fail_at{-1};

template <class P>
struct Flaky {
    P payload{};
    bool operator==(const Flaky&) const = default;
};
}  // namespace

template <class P>
struct mproc::codec<Flaky<P>> {
    static void encode(Encoder& e, const Flaky<P>& f) {
        const int call = g_flaky_calls++;
        const int mode = g_flaky_mode.load();
        e(f.payload);
        if ((mode == 1 && call % 2 == 1) || (mode == 4 && call == g_flaky_fail_at)) throw std::runtime_error("flaky codec");
        if ((mode == 2 && call % 2 == 0) || (mode == 3 && call % 2 == 1)) e(std::int32_t{0});
    }
    static Flaky<P> decode(Decoder& d) { return Flaky<P>{mproc::decode<P>(d)}; }
};

namespace {
// A put whose encoding fails after its record was claimed: the put throws, nothing is delivered
// or counted as dropped, a consumer already waiting gets the next message, join() is not held.
template <class P>
void check_failed_encoding(const P& payload, int mode) {
    mproc::JoinableQueue<Flaky<P>> q(mproc::QueueOptions{.ring_bytes = 64 << 10});
    mproc::Process consumer([q]() mutable {
        const Flaky<P> f = q.get(10s);
        q.task_done();
        return mproc::encode(f.payload);
    });
    consumer.start();
    std::this_thread::sleep_for(20ms);  // let it wait at the head
    g_flaky_calls = 0;
    g_flaky_mode = mode;
    if (mode == 1) CHECK_THROWS_AS(q.put(Flaky<P>{payload}), std::runtime_error);
    else CHECK_THROWS_AS(q.put(Flaky<P>{payload}), mproc::Error);
    g_flaky_mode = 0;
    CHECK(q.qsize() == 0);
    q.put(Flaky<P>{payload});
    join_bounded(consumer);
    CHECK(mproc::decode<P>(consumer.result()) == payload);
    CHECK(q.join_for(10s));
    CHECK(q.dropped() == 0);
    CHECK(q.empty());
    q.put(Flaky<P>{payload});  // and it goes on
    CHECK(q.get(10s).payload == payload);
}
}  // namespace

TEST_CASE("Queue.codec.any_type_written_in_place_and_a_failed_encoding_given_up", "[queue]") {
    for (int mode = 1; mode <= 3; ++mode) {
        INFO("mode " << mode);
        check_failed_encoding(std::int32_t{7}, mode);                 // in its slot
        check_failed_encoding(std::string(300, 's'), mode);           // in the ring's cells
        check_failed_encoding(std::string(40 << 10, 'b'), mode);      // spilled
    }
    // Types the queue has no shortcut for go through encoded_size and encode_to.
    mproc::Queue<std::map<std::string, std::vector<std::optional<int>>>> q;
    const std::map<std::string, std::vector<std::optional<int>>> m{{"a", {1, std::nullopt}}, {"b", {}}};
    q.put(m);
    CHECK(q.get() == m);
}

TEST_CASE("Queue.signals.eintr_does_not_end_waits", "[queue]") {
    struct sigaction action {}, old {};
    action.sa_handler = [](int) {};
    sigemptyset(&action.sa_mask);
    action.sa_flags = 0;  // no SA_RESTART: every signal interrupts the futex wait
    REQUIRE(::sigaction(SIGUSR1, &action, &old) == 0);
    mproc::Queue<int> q;
    std::atomic<bool> stop{false};
    const pthread_t target = ::pthread_self();
    std::thread storm([&] {
        while (!stop) {
            ::pthread_kill(target, SIGUSR1);
            std::this_thread::sleep_for(1ms);
        }
    });
    const auto start = clock_type::now();
    CHECK_FALSE(q.try_get_for(200ms));
    CHECK(clock_type::now() - start >= 200ms);
    mproc::Process late([q]() mutable {
        std::this_thread::sleep_for(100ms);
        q.put(42);
    });
    late.start();
    CHECK(q.get() == 42);
    stop = true;
    storm.join();
    late.join();
    ::sigaction(SIGUSR1, &old, nullptr);
}

TEST_CASE("Queue.threads.mpmc_in_one_process", "[queue]") {
    // The same queue used by threads (this is what TSan checks most closely).
    mproc::Queue<std::pair<int, int>> q(64);
    constexpr int producers = 3, consumers = 3, each = 5000;
    std::atomic<long> sum{0}, count{0}, out_of_order{0};  // Catch's CHECK is not thread-safe
    std::vector<std::thread> threads;
    for (int p = 0; p < producers; ++p)
        threads.emplace_back([&, p] {
            for (int i = 0; i < each; ++i) q.put({p, i});
        });
    for (int c = 0; c < consumers; ++c)
        threads.emplace_back([&] {
            int last[producers] = {-1, -1, -1};
            try {
                for (;;) {
                    auto [p, i] = q.get();
                    if (i <= last[p]) ++out_of_order;  // FIFO per producer
                    last[p] = i;
                    sum += i;
                    ++count;
                }
            } catch (const mproc::EndOfStream&) {
            }
        });
    for (int p = 0; p < producers; ++p) threads[static_cast<std::size_t>(p)].join();
    q.close();
    for (std::size_t t = producers; t < threads.size(); ++t) threads[t].join();
    CHECK(out_of_order == 0);
    CHECK(count == producers * each);
    CHECK(sum == producers * (long{each} * (each - 1) / 2));
}

namespace {
// 4 producers x 4 consumers, `each` messages per producer: nothing lost, nothing duplicated,
// FIFO per producer as each consumer sees it. `batches`: producers put_many in batches of 1 to
// 40, consumers get_many up to 16 (even ones) or 5 (odd ones).
void mpmc_processes(int each, const mproc::QueueOptions& options, bool batches = false) {
    constexpr int producers = 4, consumers = 4;
    using Totals = std::vector<std::int64_t>;  // per producer: count, sum, sum of squares; then order errors
    mproc::Queue<std::pair<std::int32_t, std::int32_t>> q(options);
    std::vector<mproc::Process<void>> senders;
    std::vector<mproc::Process<Totals>> receivers;
    for (int p = 0; p < producers; ++p)
        senders.emplace_back([q, p, each, batches]() mutable {
            std::vector<std::pair<std::int32_t, std::int32_t>> batch;
            std::size_t target = 1 + static_cast<std::size_t>(p);  // 1 .. 40 in turn (past batch_max too)
            for (std::int32_t i = 0; i < each; ++i) {
                if (!batches) {
                    q.put({p, i});
                    continue;
                }
                batch.emplace_back(p, i);
                if (batch.size() == target) {
                    q.put_many(batch);
                    batch.clear();
                    target = 1 + target % 40;
                }
            }
            q.put_many(batch);
        });
    for (int c = 0; c < consumers; ++c)
        receivers.emplace_back([q, c, batches]() mutable {
            Totals t(3 * producers + 1, 0);
            std::int32_t last[producers] = {-1, -1, -1, -1};
            const std::size_t max = !batches ? 1 : c % 2 == 0 ? 16 : 5;
            try {
                for (;;) {
                    // Without batches, the plain get() (a batch of one from get_many takes the
                    // same claim, but this test is get()'s too).
                    for (auto [p, i] : batches ? q.get_many(max) : std::vector{q.get()}) {
                        if (p < 0 || p >= producers) {
                            ++t.back();
                            continue;
                        }
                        t[3 * p] += 1;
                        t[3 * p + 1] += i;
                        t[3 * p + 2] += std::int64_t{i} * i;
                        if (i <= last[p]) ++t.back();
                        last[p] = i;
                    }
                }
            } catch (const mproc::EndOfStream&) {
            }
            return t;
        });
    for (auto& r : receivers) r.start();
    for (auto& s : senders) s.start();
    for (auto& s : senders) {
        join_bounded(s, 100s);
        CHECK(s.exitcode() == 0);
    }
    q.close();
    Totals all(3 * producers + 1, 0);
    for (auto& r : receivers) {
        join_bounded(r, 100s);
        const Totals t = r.result();
        for (std::size_t i = 0; i < all.size(); ++i) all[i] += t[i];
    }
    const std::int64_t n = each;
    for (int p = 0; p < producers; ++p) {
        INFO("producer " << p);
        CHECK(all[3 * p] == n);
        CHECK(all[3 * p + 1] == n * (n - 1) / 2);
        CHECK(all[3 * p + 2] == (n - 1) * n * (2 * n - 1) / 6);
    }
    CHECK(all.back() == 0);
    CHECK(q.dropped() == 0);
    CHECK(q.empty());
}
}  // namespace

TEST_CASE("Queue.mpmc.four_by_four_checksums", "[queue]") {
    mpmc_processes(20'000, {.ring_bytes = std::size_t{4} << 20});
    mpmc_processes(5'000, {.ring_bytes = 4096});  // a tiny ring: producers wait for room all the time
}

TEST_CASE("Queue.mpmc.four_by_four_250k_each", "[queue][stress]") {
    mpmc_processes(250'000, {.ring_bytes = std::size_t{4} << 20});
}

namespace {
using mproc::detail::queue_point;

// After a process died mid-put or mid-get: a producer and a consumer in two other processes move
// `count` messages (`prefix` + index) through the queue in order, and exactly one was dropped.
void flows_on_after_a_death(mproc::Queue<std::string>& q, int count, const std::string& prefix) {
    mproc::Process producer([q, count, prefix]() mutable {
        for (int i = 0; i < count; ++i) q.put(prefix + std::to_string(i));
    });
    mproc::Process consumer([q, count, prefix]() mutable {
        for (int i = 0; i < count; ++i)
            if (q.get(10s) != prefix + std::to_string(i)) return 1;
        return 0;
    });
    producer.start();
    consumer.start();
    join_bounded(producer);
    join_bounded(consumer);
    CHECK(producer.exitcode() == 0);
    CHECK(consumer.result() == 0);
    CHECK(q.dropped() == 1);
}

// One trial: a child dies at `point` of a put (or get); other processes keep the queue going and
// finish; the lost message is counted.
void dead_producer_trial(queue_point point, std::size_t message_bytes) {
    mproc::Queue<std::string> q(mproc::QueueOptions{.maxsize = 8, .ring_bytes = 64 << 10});
    mproc::Process victim([q, point, message_bytes]() mutable {
        die_at(point);
        q.put(std::string(message_bytes, 'v'));
    });
    victim.start();
    join_bounded(victim);
    REQUIRE(victim.exitcode() == -SIGKILL);
    // Another producer and a consumer, both in other processes, move 200 messages past it.
    flows_on_after_a_death(q, 200, "");
    CHECK(q.empty());
}

void dead_consumer_trial(queue_point point, std::size_t message_bytes) {
    // A ring that the dead consumer's record would fill within a lap.
    mproc::Queue<std::string> q(mproc::QueueOptions{.ring_bytes = 16 << 10});
    q.put(std::string(message_bytes, 'v'));
    mproc::Process victim([q, point]() mutable {
        die_at(point);
        (void)q.get();
    });
    victim.start();
    join_bounded(victim);
    REQUIRE(victim.exitcode() == -SIGKILL);
    flows_on_after_a_death(q, 500, std::string(100, 'a'));
}

// A string of 0 bytes encodes to 8 (its count): the smallest message, kept in its slot.
const std::vector<std::pair<queue_point, std::size_t>> put_moments{
    {queue_point::put_claimed, 10},        // claimed, span not yet written
    {queue_point::put_copying, 10},        // small message half written
    {queue_point::put_copying, 3000},      // ring message half written
    {queue_point::put_copying, 40 << 10},  // spilled message half written
    {queue_point::put_claimed, 0},         // in-slot message claimed
    {queue_point::put_copying, 0},         // in-slot message half written
    {queue_point::put_spanned, 3000},      // span written, the tail not yet moved
    {queue_point::put_spanned, 40 << 10},  // spilled: span written, the tail not yet moved
    {queue_point::put_claimed, 40 << 10},  // spilled: claimed, its block not yet taken
    {queue_point::spill_taken, 40 << 10},  // spilled: its block taken, not yet named (lock held)
    {queue_point::spill_recorded, 40 << 10}  // spilled: named, the lock's note not yet cleared
};
const std::vector<std::pair<queue_point, std::size_t>> get_moments{
    {queue_point::get_claimed, 10},        // claimed, the head not yet moved
    {queue_point::get_consumed, 3000},
    {queue_point::get_claimed, 12 << 10},  // spilled
    {queue_point::get_claimed, 0},         // in-slot message
    {queue_point::get_moved, 0},           // the head moved, nothing read
    {queue_point::get_moved, 3000},
    {queue_point::get_moved, 12 << 10},
    {queue_point::spill_releasing, 12 << 10}};  // spilled: its block let go, not yet on a list
}  // namespace

TEST_CASE("Queue.dead_producer.sigkill_mid_put", "[queue]") {
    for (auto [point, bytes] : put_moments) {
        INFO("point " << static_cast<int>(point) << ", " << bytes << " bytes");
        dead_producer_trial(point, bytes);
    }
}

TEST_CASE("Queue.dead_consumer.sigkill_mid_get", "[queue][one_ring]") {
    for (auto [point, bytes] : get_moments) {
        INFO("point " << static_cast<int>(point) << ", " << bytes << " bytes");
        dead_consumer_trial(point, bytes);
    }
}

TEST_CASE("Queue.dead_holders.one_hundred_trials_each", "[queue][stress][one_ring]") {
    const auto names_before = our_shm_names();
    for (int trial = 0; trial < 100; ++trial) {
        INFO("trial " << trial);
        const auto& put = put_moments[static_cast<std::size_t>(trial) % put_moments.size()];
        dead_producer_trial(put.first, put.second);
        const auto& get = get_moments[static_cast<std::size_t>(trial) % get_moments.size()];
        dead_consumer_trial(get.first, get.second);
    }
    CHECK(our_shm_names() == names_before);
    CHECK(mproc_test::no_children_left());
}

// The victim's second big put announces that it is half way through its copy and waits there;
// the SIGKILL comes from outside at that certain moment.
mproc::Event* big_copy_started = nullptr;
void announce_second_copy(mproc::detail::queue_point point) {
    static int copies = 0;
    if (point != mproc::detail::queue_point::put_copying || ++copies != 2) return;
    big_copy_started->set();
    for (;;) ::pause();
}

TEST_CASE("Queue.dead_producer.kill_during_a_big_copy", "[queue]") {
    mproc::Queue<std::vector<char>> q(2);
    mproc::Event copying;
    big_copy_started = &copying;
    mproc::Process victim([q]() mutable {
        mproc::detail::queue_fault_hook = announce_second_copy;
        const std::vector<char> big(64 << 20, 'x');
        for (;;) q.put(big);
    });
    victim.start();
    REQUIRE(copying.wait_for(30s));  // the first message is in, the second half copied
    victim.kill();
    join_bounded(victim);
    // The completed message comes out whole; the half-written one is dropped, exactly once.
    std::size_t whole = 0;
    while (auto v = q.try_get_for(500ms)) {
        CHECK(v->size() == (64u << 20));
        ++whole;
    }
    CHECK(whole == 1);
    CHECK(q.dropped() == 1);
    q.put(std::vector<char>{'o', 'k'});
    CHECK(q.get(10s).size() == 2);
}

namespace {
// A queue whose spill window holds a handful of blocks: a message over half its ring spills and
// takes a 64 KiB block.
const mproc::QueueOptions small_spill_window{.ring_bytes = 64 << 10, .spill_bytes = 1 << 20};
constexpr std::size_t spilled_bytes = 40 << 10;

// How many spilled messages the queue takes before its spill window is full (put throws), then
// got back and compared: a block handed to two messages at once would corrupt one of them (and
// count one too many), a block lost would count one too few.
int spill_capacity(mproc::Queue<std::string>& q) {
    int held = 0;
    for (;; ++held) {
        REQUIRE(held < 1000);
        try {
            q.put(std::string(spilled_bytes, static_cast<char>('a' + held % 26)));
        } catch (const mproc::Error& e) {
            REQUIRE(std::string(e.what()).find("spill window") != std::string::npos);
            break;
        }
    }
    for (int i = 0; i < held; ++i) {
        const auto got = q.try_get_for(10s);
        REQUIRE(got);
        CHECK(*got == std::string(spilled_bytes, static_cast<char>('a' + i % 26)));
    }
    CHECK(q.empty());
    return held;
}

// Runs `body` in a child that dies by SIGKILL at `point`.
template <class Body>
void die_in_a_child_at(queue_point point, Body body) {
    mproc::Process victim([point, body]() mutable {
        die_at(point);
        body();
    });
    victim.start();
    join_bounded(victim);
    REQUIRE(victim.exitcode() == -SIGKILL);
}

// Small messages through the ring in this process, a lap and more: a record that a dead process
// still holds is found (and dropped) when the ring comes round to it.
void lap_the_ring(mproc::Queue<std::string>& q) {
    for (int i = 0; i < 1200; ++i) {
        q.put("lap");
        REQUIRE(q.try_get_for(10s) == std::optional<std::string>("lap"));
    }
}

int fresh_spill_capacity() {
    mproc::Queue<std::string> fresh(small_spill_window);
    return spill_capacity(fresh);
}
}  // namespace

// A producer of a spilled message killed at each moment around its block: the block is never
// lost and never given back twice, whether it came fresh from the window or from a free list.
TEST_CASE("Queue.dead_producer.spill_block_not_leaked", "[queue]") {
    const int fresh = fresh_spill_capacity();
    REQUIRE(fresh > 2);
    const std::vector<queue_point> moments{
        queue_point::put_claimed,     // claimed, no block taken yet
        queue_point::spill_noted,     // the lock's note written, the block not yet taken
        queue_point::spill_taken,     // block off its list, not yet named (lock held)
        queue_point::spill_recorded,  // named in the record, the lock's note not yet cleared
        queue_point::put_spanned,     // named, lock let go, tail not moved
        queue_point::put_copying};    // half copied
    for (const bool recycled : {false, true}) {
        for (const queue_point point : moments) {
            INFO("point " << static_cast<int>(point) << (recycled ? ", blocks from the free lists" : ", fresh window"));
            mproc::Queue<std::string> q(small_spill_window);
            if (recycled) CHECK(spill_capacity(q) == fresh);
            die_in_a_child_at(point, [q]() mutable { q.put(std::string(spilled_bytes, 'v')); });
            // A get finds the dead producer's record and drops it; nothing else was put.
            CHECK_FALSE(q.try_get_for(100ms));
            CHECK(q.dropped() == 1);
            CHECK(spill_capacity(q) == fresh);
            CHECK(q.dropped() == 1);
        }
    }
}

// A producer of a spilled message that waits for room in the ring holds no block, so a death
// there costs nothing.
TEST_CASE("Queue.dead_producer.spill_block_not_held_while_waiting_for_room", "[queue][one_ring]") {
    const int fresh = fresh_spill_capacity();
    mproc::Queue<std::string> q(small_spill_window);
    int fillers = 0;
    for (const std::size_t bytes : {std::size_t{3000}, std::size_t{0}})  // ring messages, then one-cell ones
        while (q.try_put(std::string(bytes, 'f'))) ++fillers;
    REQUIRE(q.full());
    die_in_a_child_at(queue_point::put_waiting, [q]() mutable { q.put(std::string(spilled_bytes, 'v')); });
    for (int i = 0; i < fillers; ++i) REQUIRE(q.try_get_for(10s));
    CHECK(q.empty());
    CHECK(q.dropped() == 0);
    CHECK(spill_capacity(q) == fresh);
}

// A consumer of a spilled message killed at each moment of its get, the block's release
// included: the block comes back, once, when the ring comes round to its record or when a put
// finds the spill window full.
TEST_CASE("Queue.dead_consumer.spill_block_not_leaked", "[queue]") {
    const int fresh = fresh_spill_capacity();
    for (const bool lap : {false, true}) {
        for (const queue_point point : {queue_point::get_claimed, queue_point::get_moved, queue_point::get_consumed,
                                        queue_point::spill_noted, queue_point::spill_releasing,
                                        queue_point::spill_released}) {
            INFO("point " << static_cast<int>(point) << (lap ? ", the ring lapped" : ", the window filled"));
            mproc::Queue<std::string> q(small_spill_window);
            CHECK(spill_capacity(q) == fresh);  // the message's block comes from a free list
            q.put(std::string(spilled_bytes, 'v'));
            die_in_a_child_at(point, [q]() mutable { (void)q.get(); });
            if (lap) {
                lap_the_ring(q);
                CHECK(q.dropped() == 1);
            }
            CHECK(spill_capacity(q) == fresh);
            CHECK(q.dropped() == 1);
        }
    }
}

TEST_CASE("JoinableQueue.join.returns_when_the_last_task_is_done", "[queue]") {
    mproc::JoinableQueue<int> q;
    CHECK(q.join_for(0ms));  // nothing put: nothing to wait for
    for (int i = 0; i < 10; ++i) q.put(i);
    std::atomic<bool> last_done{false};
    std::thread worker([&] {
        for (int i = 0; i < 10; ++i) {
            (void)q.get();
            if (i == 9) {
                std::this_thread::sleep_for(100ms);
                last_done = true;
            }
            q.task_done();
        }
    });
    CHECK_FALSE(q.join_for(50ms));
    q.join();
    CHECK(last_done);
    worker.join();
    CHECK_THROWS_AS(q.task_done(), mproc::StateError);
}

TEST_CASE("JoinableQueue.join.across_processes_and_dead_consumers", "[queue]") {
    mproc::JoinableQueue<int> q;
    for (int i = 0; i < 100; ++i) q.put(i);
    mproc::Process victim([q]() mutable {
        die_at(queue_point::get_claimed);
        (void)q.get();
    });
    victim.start();
    join_bounded(victim);
    mproc::Process worker([q]() mutable {
        for (int i = 0; i < 99; ++i) {
            (void)q.get();
            q.task_done();
        }
    });
    worker.start();
    // The dead consumer's item counts as done once found: join() does not wait for it forever.
    CHECK(q.join_for(10s));
    join_bounded(worker);
    CHECK(q.dropped() == 1);
}

TEST_CASE("Queue.hygiene.no_names_no_descriptors_no_mappings_left", "[queue]") {
    const auto names_before = our_shm_names();
    const int fds_before = mproc_test::open_fd_count();
    {
        mproc::Queue<std::string> q;
        CHECK(mappings_matching("/dev/shm") == 0);
        CHECK(mappings_matching("mproc-queue") > 0);
        mproc::Process child([q]() mutable { q.put(std::string(8 << 20, 'z')); });
        child.start();
        CHECK(q.get().size() == (8u << 20));
        join_bounded(child);
        // The memfds (one per lane) stay open while the queue lives (a process started by exec
        // maps them from there), and nothing else does.
        CHECK(mproc_test::open_fd_count() == fds_before + static_cast<int>(q.lanes()));
    }
    CHECK(mproc_test::open_fd_count() == fds_before);
    CHECK(mappings_matching("mproc-queue") == 0);
    CHECK(our_shm_names() == names_before);
    CHECK(mproc_test::no_children_left());
}

namespace {
std::atomic<int> g_stop_at{-1};
void stop_at_hook(mproc::detail::queue_point point) {
    if (static_cast<int>(point) == g_stop_at.load()) ::raise(SIGSTOP);
}

// Whether /proc says `pid` is stopped (state T).
bool is_stopped(pid_t pid) {
    std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
    std::string text((std::istreambuf_iterator<char>(stat)), std::istreambuf_iterator<char>());
    const auto close = text.rfind(')');
    return close != std::string::npos && close + 2 < text.size() && text[close + 2] == 'T';
}

// A child that stops (SIGSTOP) at `point` of its first put or get, holding that record.
template <class Body>
mproc::Process<void> stop_holding(queue_point point, Body body) {
    mproc::Process<void> child([point, body]() mutable {
        g_stop_at = static_cast<int>(point);
        mproc::detail::queue_fault_hook = stop_at_hook;
        body();
    });
    child.start();
    const auto t0 = clock_type::now();
    while (!is_stopped(child.pid()) && clock_type::now() - t0 < 10s) std::this_thread::sleep_for(1ms);
    REQUIRE(is_stopped(child.pid()));
    return child;
}

template <class Wait>
auto timed(Wait wait) {
    const auto t0 = clock_type::now();
    auto result = wait();
    const auto took = clock_type::now() - t0;
    CHECK(took >= 100ms);
    CHECK(took < 2s);
    return result;
}
}  // namespace

// A stopped holder is alive: nobody takes its record, and every timed wait behind it still
// returns in time. Once it is killed, its record is dropped and the queue flows again.
TEST_CASE("Queue.timeouts.hold_behind_a_stopped_holder", "[queue]") {
    SECTION("a consumer stopped holding its claim") {
        mproc::Queue<long> q;
        q.put(1);
        q.put(2);
        auto holder = stop_holding(queue_point::get_claimed, [q]() mutable { (void)q.get(); });
        CHECK_FALSE(timed([&] { return q.try_get_for(100ms); }));
        CHECK_THROWS_AS(timed([&] { return q.get(100ms); }), mproc::TimeoutError);
        holder.kill();
        REQUIRE(holder.join(10s));
        CHECK(q.get(10s) == 2);
        CHECK(q.dropped() == 1);
    }
    SECTION("a producer stopped holding its claim, in a bounded queue") {
        mproc::Queue<std::string> q(4);
        auto holder = stop_holding(queue_point::put_spanned, [q]() mutable { q.put(std::string(100, 'h')); });
        CHECK_FALSE(timed([&] { return q.try_put_for("x", 100ms); }));
        CHECK_FALSE(timed([&] { return q.try_get_for(100ms); }));
        CHECK_THROWS_AS(timed([&] { return (q.put("y", 100ms), 0); }), mproc::TimeoutError);
        holder.kill();
        REQUIRE(holder.join(10s));
        q.put("after");
        CHECK(q.get(10s) == "after");
        CHECK(q.dropped() == 1);
    }
}

namespace {
// CPU time this thread spends in `wait`, in ms.
template <class Wait>
double thread_cpu_ms(Wait wait) {
    const auto now = [] {
        timespec ts{};
        ::clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
        return static_cast<double>(ts.tv_sec) * 1e3 + static_cast<double>(ts.tv_nsec) / 1e6;
    };
    const double t0 = now();
    (void)wait();
    return now() - t0;
}
}  // namespace

// Waiting 400 ms behind a stopped holder sleeps: it used to yield in a loop, a whole core's worth.
TEST_CASE("Queue.timeouts.waiting_behind_a_stopped_holder_sleeps", "[queue]") {
    mproc::Queue<std::string> q(4);
    q.put("first");
    auto consumer = stop_holding(queue_point::get_claimed, [q]() mutable { (void)q.get(); });
    CHECK(thread_cpu_ms([&] { return q.try_get_for(400ms); }) < 100);
    consumer.kill();
    REQUIRE(consumer.join(10s));
    auto producer = stop_holding(queue_point::put_spanned, [q]() mutable { q.put(std::string(100, 'h')); });
    CHECK(thread_cpu_ms([&] { return q.try_put_for("x", 400ms); }) < 100);
    producer.kill();
    REQUIRE(producer.join(10s));
}

namespace {
// Eight producers put `per` messages (producer, sequence, and every 997th a 48 KB padding that
// takes the spill window) through a small ring; one is SIGKILLed at a random moment. The
// consumer must see every survivor's messages once and in order, the victim's as an unbroken
// prefix, and at most the victim's last message dropped. `batch` > 1: producers put_many in
// batches of 1 to `batch` and the consumer takes up to `batch` at a time; at most the victim's
// last claim (`batch` messages) is dropped.
void one_of_eight_killed(std::size_t ring_bytes, std::uint32_t seed, std::size_t batch = 1) {
    INFO("ring " << ring_bytes << ", seed " << seed << ", batch " << batch);
    constexpr int producers = 8;
    constexpr std::uint64_t per = 12'500;
    std::mt19937 random(seed);
    const int victim = static_cast<int>(random() % producers);
    const std::uint64_t kill_after = 1'000 + random() % 60'000;
    mproc::Queue<std::vector<std::uint64_t>> q(mproc::QueueOptions{.ring_bytes = ring_bytes});
    std::vector<mproc::Process<void>> children;
    for (int p = 0; p < producers; ++p)
        children.emplace_back([q, p, batch]() mutable {
            std::vector<std::vector<std::uint64_t>> pending;
            // Batch sizes 1 .. batch in turn (a size never above `batch`: the bound on drops
            // below rests on it).
            std::size_t target = 1 + static_cast<std::size_t>(p) % batch;
            for (std::uint64_t n = 0; n < per; ++n) {
                std::vector<std::uint64_t> m{static_cast<std::uint64_t>(p), n};
                if (n % 997 == 0) m.resize(6'000, n);
                if (batch == 1) {
                    q.put(m);
                    continue;
                }
                pending.push_back(std::move(m));
                if (pending.size() == target) {
                    q.put_many(pending);
                    pending.clear();
                    target = 1 + target % batch;
                }
            }
            if (!pending.empty()) q.put_many(pending);
        });
    for (auto& c : children) c.start();
    std::vector<std::uint64_t> next(producers, 0);
    std::uint64_t received = 0, bad = 0;
    bool killed = false;
    const auto take = [&](const std::vector<std::uint64_t>& m) {
        ++received;
        if (m.size() < 2 || m[0] >= producers || m[1] != next[m[0]]) {
            ++bad;  // a duplicate, a gap or garbage
            return;
        }
        ++next[m[0]];
    };
    const auto survivors_done = [&] {
        for (int p = 0; p < producers; ++p)
            if (p != victim && next[static_cast<std::size_t>(p)] != per) return false;
        return true;
    };
    while (!survivors_done() && bad == 0) {
        // (batch 1: get()'s own calls, which this test guarded before batches came)
        std::vector<std::vector<std::uint64_t>> got;
        if (batch > 1) got = q.try_get_many_for(batch, 20s);
        else if (auto m = q.try_get_for(20s)) got.push_back(std::move(*m));
        if (got.empty()) FAIL("no message for 20 s: " << received << " received");
        for (const auto& m : got) take(m);
        if (!killed && received >= kill_after) {
            children[static_cast<std::size_t>(victim)].kill();
            killed = true;
        }
    }
    for (auto& c : children) REQUIRE(c.join(30s));
    q.close();
    try {
        for (;;) {
            if (batch == 1) take(q.get(10s));
            else
                for (const auto& m : q.get_many(batch, 10s)) take(m);
        }
    } catch (const mproc::EndOfStream&) {
    }
    CHECK(bad == 0);
    for (int p = 0; p < producers; ++p)
        if (p != victim) CHECK(next[static_cast<std::size_t>(p)] == per);
    const std::uint64_t victim_got = next[static_cast<std::size_t>(victim)];
    CHECK(q.dropped() <= batch);
    if (children[static_cast<std::size_t>(victim)].exitcode() == 0) {
        CHECK(victim_got == per);  // it finished before the kill
        CHECK(q.dropped() == 0);
    }
    CHECK(received == (producers - 1) * per + victim_got);
    CHECK(q.empty());
}
}  // namespace

TEST_CASE("Queue.dead_producer.one_of_eight_killed_at_random", "[queue]") {
    const std::uint32_t seed = std::random_device{}();
    one_of_eight_killed(std::size_t{64} << 10, seed);      // producers wait for room all the time
    one_of_eight_killed(std::size_t{4} << 20, seed + 1);
}

TEST_CASE("Queue.dead_producer.one_of_eight_batch_producers_killed_at_random", "[queue]") {
    const std::uint32_t seed = std::random_device{}();
    one_of_eight_killed(std::size_t{64} << 10, seed, 16);
    one_of_eight_killed(std::size_t{4} << 20, seed + 1, 16);
}

// ---- README promise: close() wakes a putter blocked in another process ----
// (Their includes are here, so that this block merges cleanly beside edits above it.)

#include <mproc/sync.hpp>

namespace {
// The scheduler state of `pid` from /proc/PID/stat ('R' running, 'S' asleep...), or 0.
char process_state(pid_t pid) {
    std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
    std::string text((std::istreambuf_iterator<char>(stat)), std::istreambuf_iterator<char>());
    const auto paren = text.rfind(')');
    return paren != std::string::npos && paren + 2 < text.size() ? text[paren + 2] : 0;
}
}  // namespace

TEST_CASE("Queue.close.wakes_a_putter_blocked_in_another_process", "[queue]") {
    mproc::Queue<int> q(1);
    q.put(7);  // full
    mproc::Event putting;
    mproc::Process putter([q, putting]() mutable {
        putting.set();
        try {
            q.put(8);  // blocks: the queue is full and nobody gets
            return 1;
        } catch (const mproc::EndOfStream&) {
            return 0;
        }
    });
    putter.start();
    REQUIRE(putting.wait_for(10s));
    // Asleep inside put(), twice in a row 20 ms apart (not just passing through a syscall).
    const auto give_up = clock_type::now() + 10s;
    int asleep = 0;
    while (asleep < 2 && clock_type::now() < give_up) {
        asleep = process_state(putter.pid()) == 'S' ? asleep + 1 : 0;
        std::this_thread::sleep_for(20ms);
    }
    REQUIRE(asleep == 2);
    CHECK(putter.is_alive());
    const auto t0 = clock_type::now();
    q.close();
    REQUIRE(putter.join(10s));
    CHECK(clock_type::now() - t0 < 1s);
    CHECK(putter.exitcode() == 0);
    if (putter.exitcode() == 0) CHECK(putter.result() == 0);  // EndOfStream, not a put
    CHECK(q.get() == 7);
    CHECK_THROWS_AS(q.get(), mproc::EndOfStream);  // the blocked 8 never went in
    CHECK(q.dropped() == 0);
}

// ---- Batches: put_many and get_many ----

namespace {
// A batch of every kind of record: in its slot (an empty string encodes to its 8-byte count),
// one cell, several cells, each told apart by its letter.
std::vector<std::string> mixed_batch(int n, char first = 'a') {
    std::vector<std::string> batch;
    for (int i = 0; i < n; ++i) {
        const std::size_t sizes[] = {0, 10, 300};
        batch.emplace_back(sizes[i % 3], static_cast<char>(first + i % 26));
    }
    return batch;
}

// Every message up to (not including) `end`, each within 10 s.
std::vector<std::string> drain_until(mproc::Queue<std::string>& q, const std::string& end) {
    std::vector<std::string> got;
    for (;;) {
        auto v = q.try_get_for(10s);
        REQUIRE(v);
        if (*v == end) return got;
        got.push_back(std::move(*v));
    }
}

// The fault hook again, at the nth time a moment comes (batches pass some moments once per record).
std::atomic<int> g_kill_countdown{0};
void kill_at_nth_hook(mproc::detail::queue_point point) {
    if (static_cast<int>(point) == g_kill_at.load() && --g_kill_countdown == 0) ::raise(SIGKILL);
}
void die_at(mproc::detail::queue_point point, int nth) {
    g_kill_at = static_cast<int>(point);
    g_kill_countdown = nth;
    mproc::detail::queue_fault_hook = kill_at_nth_hook;
}
}  // namespace

TEST_CASE("Queue.batch.order_and_mixed_sizes", "[queue]") {
    mproc::Queue<std::string> q(mproc::QueueOptions{.ring_bytes = 64 << 10});
    const auto batch = mixed_batch(100);  // more than one claim takes (32)
    q.put_many(batch);
    CHECK(q.qsize() == 100);
    std::vector<std::string> got;
    for (const std::size_t max : {1, 7, 32, 100}) {
        const auto part = q.get_many(max);
        CHECK(part.size() == std::min<std::size_t>(max, 100 - got.size()));
        got.insert(got.end(), part.begin(), part.end());
    }
    while (got.size() < 100) {
        const auto rest = q.get_many(100);
        got.insert(got.end(), rest.begin(), rest.end());
    }
    CHECK(got == batch);
    CHECK(q.empty());
    CHECK(q.get_many(0).empty());
    // Numbers (written directly) and an empty batch.
    mproc::Queue<std::int64_t> numbers;
    numbers.put_many(std::vector<std::int64_t>{});
    std::vector<std::int64_t> values(1000);
    for (std::size_t i = 0; i < values.size(); ++i) values[i] = static_cast<std::int64_t>(i) * 7 - 3;
    numbers.put_many(values);
    std::vector<std::int64_t> back;
    while (back.size() < values.size()) {
        const auto part = numbers.get_many(64);
        CHECK(part.size() <= 64);
        back.insert(back.end(), part.begin(), part.end());
    }
    CHECK(back == values);
    CHECK(numbers.dropped() == 0);
}

TEST_CASE("Queue.batch.spilled_messages_in_a_batch", "[queue]") {
    mproc::Queue<std::string> q(small_spill_window);
    std::vector<std::string> batch = mixed_batch(5);
    batch.insert(batch.begin() + 2, std::string(spilled_bytes, 'S'));
    batch.push_back(std::string(spilled_bytes, 'T'));
    q.put_many(batch);
    CHECK(q.get_many(100) == batch);  // a get_many takes spilled records in its claim too
    CHECK(q.empty());
    CHECK(spill_capacity(q) == fresh_spill_capacity());
}

TEST_CASE("Queue.batch.across_processes", "[queue]") {
    // 4 producers put_many in batches of 1 to 40, 4 consumers get_many up to 16 or 5.
    mpmc_processes(20'000, {.ring_bytes = std::size_t{16} << 10}, true);
}

TEST_CASE("Queue.batch.bounds_timeouts_and_close", "[queue]") {
    mproc::Queue<int> q(5);
    const std::vector<int> seven{1, 2, 3, 4, 5, 6, 7};
    CHECK(q.try_put_many(seven) == 5);  // maxsize counts records
    CHECK(q.full());
    CHECK(q.try_put_many(seven) == 0);
    auto start = clock_type::now();
    CHECK(q.try_put_many_for(seven, 50ms) == 0);
    CHECK(clock_type::now() - start >= 50ms);
    CHECK(q.try_get_many(3) == std::vector<int>{1, 2, 3});
    CHECK(q.try_put_many_for(std::span<const int>(seven).subspan(5), 1s) == 2);
    CHECK(q.get_many(10) == std::vector<int>{4, 5, 6, 7});
    CHECK(q.try_get_many(10).empty());
    start = clock_type::now();
    CHECK(q.try_get_many_for(10, 50ms).empty());
    CHECK(clock_type::now() - start >= 50ms);
    CHECK_THROWS_AS(q.get_many(10, 10ms), mproc::TimeoutError);
    // A put_many blocked for room goes on when another process takes some.
    mproc::Process getter([q]() mutable {
        std::this_thread::sleep_for(50ms);
        return static_cast<int>(q.get_many(5, 10s).size());
    });
    getter.start();
    q.put_many(seven);  // 5 go in at once, 2 once the getter made room
    join_bounded(getter);
    CHECK(getter.result() == 5);
    CHECK(q.get_many(10) == std::vector<int>{6, 7});
    // Closed: what is queued comes out, then EndOfStream; put_many throws.
    q.put_many(std::vector<int>{8, 9});
    q.close();
    CHECK_THROWS_AS(q.put_many(seven), mproc::EndOfStream);
    CHECK_THROWS_AS(q.try_put_many(seven), mproc::EndOfStream);
    CHECK(q.get_many(10) == std::vector<int>{8, 9});
    CHECK_THROWS_AS(q.get_many(10), mproc::EndOfStream);
    CHECK_THROWS_AS(q.try_get_many(10), mproc::EndOfStream);
}

TEST_CASE("Queue.batch.failed_encoding_and_decoding", "[queue]") {
    // The codec fails writing the second item: the first is delivered, the rest not, nothing
    // counts as dropped, and the queue goes on.
    mproc::Queue<Flaky<std::string>> q(mproc::QueueOptions{.ring_bytes = 64 << 10});
    std::vector<Flaky<std::string>> batch;
    for (const auto& s : mixed_batch(6)) batch.push_back({s});
    // Six calls size the batch, then one writes each item: the eighth call writes the second.
    g_flaky_calls = 0;
    g_flaky_fail_at = 7;
    g_flaky_mode = 4;
    CHECK_THROWS_AS(q.put_many(batch), std::runtime_error);
    g_flaky_mode = 0;
    const auto got = q.try_get_many(10);
    CHECK(got.size() == 1);
    if (!got.empty()) CHECK(got[0] == batch[0]);
    // The given-up records count in qsize() until a get passes them, as after a failed put().
    CHECK(q.try_get_many(10).empty());
    CHECK(q.empty());
    CHECK(q.dropped() == 0);
    q.put_many(batch);
    CHECK(q.get_many(10, 10s) == batch);
    // A message that is not a T in a batch: get_many throws DecodeError, the queue stays usable.
    mproc::Queue<std::string> strings(mproc::QueueOptions{.ring_bytes = 64 << 10});
    strings.put("before");
    const std::vector<std::byte> garbage{std::byte{0xff}, std::byte{0xff}, std::byte{0xff}};
    strings.put_encoded(garbage);
    strings.put("after");
    CHECK_THROWS_AS(strings.get_many(10), mproc::DecodeError);
    strings.put("next");
    CHECK(strings.get_many(10, 10s) == std::vector<std::string>{"next"});
    // Every record of that batch was freed: the ring laps.
    for (int i = 0; i < 1200; ++i) {
        REQUIRE(strings.try_put_for("lap", 10s));
        REQUIRE(strings.try_get_for(10s));
    }
    CHECK(strings.dropped() == 0);
}

namespace {
// A consumer's loop: `count` items taken up to `max` at a time, each batch then marked done.
void get_many_and_task_done(mproc::JoinableQueue<int>& q, int count, std::size_t max) {
    for (int done = 0; done < count;) {
        const auto part = q.get_many(max, 10s);
        q.task_done(part.size());
        done += static_cast<int>(part.size());
    }
}
}  // namespace

TEST_CASE("JoinableQueue.batch.task_done_n_and_join", "[queue]") {
    mproc::JoinableQueue<int> q;
    std::vector<int> items(100);
    for (int i = 0; i < 100; ++i) items[static_cast<std::size_t>(i)] = i;
    q.put_many(items);
    mproc::Process worker([q]() mutable { get_many_and_task_done(q, 100, 16); });
    worker.start();
    CHECK(q.join_for(30s));
    join_bounded(worker);
    CHECK(worker.exitcode() == 0);
    CHECK_THROWS_AS(q.task_done(1), mproc::StateError);
    q.put_many(std::vector<int>{1, 2});
    CHECK_THROWS_AS(q.task_done(3), mproc::StateError);  // nothing counted then
    q.task_done(2);
    CHECK(q.join_for(0ms));
    // A consumer killed holding part of a batch: its items count as done once found.
    q.put_many(items);
    mproc::Process victim([q]() mutable {
        die_at(queue_point::get_many_claimed, 3);
        (void)q.get_many(10);
    });
    victim.start();
    join_bounded(victim);
    REQUIRE(victim.exitcode() == -SIGKILL);
    mproc::Process rest([q]() mutable { get_many_and_task_done(q, 96, 32); });
    rest.start();
    CHECK(q.join_for(30s));
    join_bounded(rest);
    CHECK(q.dropped() == 4);
}

namespace {
// A producer killed at the nth `point` of a put_many of `batch`: the first `delivered` messages
// arrive whole and in order, the `lost` ones it had claimed count once each in dropped() (those
// it had not claimed yet were never put), and no spill block is lost.
void dead_batch_producer_trial(queue_point point, int nth, const std::vector<std::string>& batch,
                               std::size_t delivered, std::size_t lost) {
    mproc::Queue<std::string> q(small_spill_window);
    die_in_a_child_at(point, [q, point, nth, batch]() mutable {
        die_at(point, nth);
        q.put_many(batch);
    });
    q.put("end");  // finds the tail behind a dead claimer, if it is
    const auto got = drain_until(q, "end");
    CHECK(got == std::vector<std::string>(batch.begin(), batch.begin() + static_cast<std::ptrdiff_t>(delivered)));
    CHECK(q.dropped() == lost);
    CHECK(q.empty());
    CHECK(spill_capacity(q) == fresh_spill_capacity());
    CHECK(q.dropped() == lost);
}

// A consumer killed at the nth `point` of a get_many(max) from a queue holding `batch`: the
// others get exactly the messages after the ones it claimed, in order, and what it held is
// counted once it is found (here by lapping the ring).
void dead_batch_consumer_trial(queue_point point, int nth, std::size_t max, const std::vector<std::string>& batch,
                               std::size_t claimed, std::size_t lost) {
    mproc::Queue<std::string> q(small_spill_window);
    q.put_many(batch);
    die_in_a_child_at(point, [q, point, nth, max]() mutable {
        die_at(point, nth);
        (void)q.get_many(max);
    });
    q.put("end");
    const auto got = drain_until(q, "end");
    CHECK(got == std::vector<std::string>(batch.begin() + static_cast<std::ptrdiff_t>(claimed), batch.end()));
    lap_the_ring(q);
    CHECK(q.dropped() == lost);
    CHECK(spill_capacity(q) == fresh_spill_capacity());
    CHECK(q.dropped() == lost);
}
}  // namespace

TEST_CASE("Queue.dead_producer.sigkill_mid_batch", "[queue][one_ring]") {
    const auto ten = mixed_batch(10);
    // {point, nth, delivered, lost}: a claim of all ten, ten writes, then ten publishes.
    const std::vector<std::tuple<queue_point, int, std::size_t, std::size_t>> moments{
        {queue_point::put_claimed, 1, 0, 1},          // the first record claimed, its span not stored
        {queue_point::put_many_claimed, 4, 0, 5},     // five claimed, the fifth without its span
        {queue_point::put_many_claimed, 9, 0, 10},    // all ten claimed, the last without its span
        {queue_point::put_spanned, 1, 0, 10},         // all claimed and spanned, the tail not moved
        {queue_point::put_copying, 2, 0, 10},         // the second record half written
        {queue_point::put_many_published, 3, 3, 7},   // all written, three published
        {queue_point::put_many_published, 9, 9, 1}};  // all written, nine published
    for (auto [point, nth, delivered, lost] : moments) {
        INFO("point " << static_cast<int>(point) << " #" << nth);
        dead_batch_producer_trial(point, nth, ten, delivered, lost);
    }
    // A spilled message takes a claim of its own, between the records before and after it.
    std::vector<std::string> spilled = mixed_batch(4);
    spilled.insert(spilled.begin() + 2, std::string(spilled_bytes, 'S'));
    for (auto [point, nth] : {std::pair{queue_point::spill_recorded, 1}, std::pair{queue_point::put_copying, 3}}) {
        INFO("spilled, point " << static_cast<int>(point) << " #" << nth);
        dead_batch_producer_trial(point, nth, spilled, 2, 1);
    }
}

TEST_CASE("Queue.dead_consumer.sigkill_mid_batch", "[queue]") {
    const auto ten = mixed_batch(10);
    // {point, nth, max, claimed, lost}: a consumer's death loses what it claimed, nothing after.
    const std::vector<std::tuple<queue_point, int, std::size_t, std::size_t, std::size_t>> moments{
        {queue_point::get_many_claimed, 2, 6, 3, 3},  // three claimed, the head not moved
        {queue_point::get_claimed, 1, 6, 6, 6},       // six claimed, the head not moved
        {queue_point::get_moved, 1, 6, 6, 6},         // the head past the six, nothing read
        {queue_point::get_consumed, 2, 6, 6, 5},      // the first freed, the second read
        {queue_point::get_consumed, 6, 6, 6, 1}};     // the last read, not yet freed
    for (auto [point, nth, max, claimed, lost] : moments) {
        INFO("point " << static_cast<int>(point) << " #" << nth);
        dead_batch_consumer_trial(point, nth, max, ten, claimed, lost);
    }
    // A spilled record in the batch, its consumer killed while letting its block go.
    std::vector<std::string> spilled = mixed_batch(4);
    spilled.insert(spilled.begin() + 1, std::string(spilled_bytes, 'S'));
    dead_batch_consumer_trial(queue_point::spill_releasing, 1, 3, spilled, 3, 2);
}

// Lanes (QueueOptions::lanes): producers dealt rings of their own. The ctest run with
// MPROC_QUEUE_LANES=4 runs every test above with four lanes too (but those tagged [one_ring]).

TEST_CASE("Queue.lanes.four_by_four_checksums", "[queue][lanes]") {
    // Four lanes: a ring per producer; three: two producers share one. A tiny ring: producers
    // wait for room in their lane all the time. Batches: one claim per batch in each lane.
    mpmc_processes(20'000, {.ring_bytes = std::size_t{4} << 20, .lanes = 4});
    mpmc_processes(20'000, {.ring_bytes = std::size_t{4} << 20, .lanes = 3});
    mpmc_processes(5'000, {.ring_bytes = 4096, .lanes = 4});
    mpmc_processes(20'000, {.ring_bytes = std::size_t{16} << 10, .lanes = 4}, true);
}

TEST_CASE("Queue.lanes.options_and_errors", "[queue][lanes]") {
    CHECK(mproc::Queue<int>(mproc::QueueOptions{.lanes = 5}).lanes() == 5);
    CHECK(mproc::Queue<int>(mproc::QueueOptions{.maxsize = 4}).lanes() == 1);
    CHECK_THROWS_WITH(mproc::Queue<int>(mproc::QueueOptions{.maxsize = 4, .lanes = 2}),
                      Catch::Contains("a queue with a maxsize has one lane"));
    CHECK_THROWS_WITH(mproc::Queue<int>(mproc::QueueOptions{.lanes = 65}), Catch::Contains("lanes must be from 1 to 64"));
    // Not given: the environment variable, checked; else one.
    const char* before = std::getenv("MPROC_QUEUE_LANES");
    const std::string saved = before ? before : "";
    ::setenv("MPROC_QUEUE_LANES", "3", 1);
    CHECK(mproc::Queue<int>().lanes() == 3);
    CHECK(mproc::Queue<int>(4).lanes() == 1);  // a maxsize: one lane
    for (const char* bad : {"0", "65", "four", "4x", ""}) {
        ::setenv("MPROC_QUEUE_LANES", bad, 1);
        CHECK_THROWS_WITH(mproc::Queue<int>(), Catch::Contains("MPROC_QUEUE_LANES must be a number from 1 to 64"));
    }
    ::unsetenv("MPROC_QUEUE_LANES");
    CHECK(mproc::Queue<int>().lanes() == 1);
    if (before) ::setenv("MPROC_QUEUE_LANES", saved.c_str(), 1);
}

TEST_CASE("Queue.lanes.order_per_producer_and_a_blocked_get_takes_from_every_lane", "[queue][lanes]") {
    mproc::Queue<std::pair<int, int>> q(mproc::QueueOptions{.lanes = 4});
    // One consumer, blocked in get() (no timeout) before anything is put: each producer's first
    // put, in a lane of its own, must wake it.
    mproc::Process<std::vector<int>> consumer([q]() mutable {
        std::vector<int> next(4, 0);
        for (int n = 0; n < 4 * 1000; ++n) {
            const auto [p, i] = q.get();
            if (i != next[static_cast<std::size_t>(p)]++) return std::vector<int>{-1};
        }
        return next;
    });
    consumer.start();
    std::this_thread::sleep_for(50ms);  // the consumer is asleep by now, most likely
    std::vector<mproc::Process<void>> producers;
    for (int p = 0; p < 4; ++p)
        producers.emplace_back([q, p]() mutable {
            for (int i = 0; i < 1000; ++i) {
                q.put({p, i});
                if (i % 100 == 0) std::this_thread::sleep_for(1ms);  // let the consumer sleep again
            }
        });
    for (auto& p : producers) p.start();
    for (auto& p : producers) join_bounded(p);
    join_bounded(consumer);
    CHECK(consumer.result() == std::vector<int>(4, 1000));
    CHECK(q.empty());
}

TEST_CASE("Queue.lanes.close_drains_every_lane", "[queue][lanes]") {
    mproc::Queue<int> q(mproc::QueueOptions{.lanes = 4});
    std::vector<mproc::Process<void>> producers;
    for (int p = 0; p < 4; ++p)
        producers.emplace_back([q, p]() mutable {
            for (int i = 0; i < 10; ++i) q.put(p * 100 + i);
        });
    for (auto& p : producers) p.start();
    for (auto& p : producers) join_bounded(p);
    q.close();
    CHECK_THROWS_AS(q.put(1), mproc::EndOfStream);
    std::vector<int> got;
    try {
        for (;;) got.push_back(q.get(10s));
    } catch (const mproc::EndOfStream&) {
    }
    std::sort(got.begin(), got.end());
    std::vector<int> want;
    for (int p = 0; p < 4; ++p)
        for (int i = 0; i < 10; ++i) want.push_back(p * 100 + i);
    CHECK(got == want);
    CHECK_THROWS_AS(q.try_get(), mproc::EndOfStream);
}

TEST_CASE("Queue.lanes.a_dead_producer_holds_up_only_its_lane_and_is_found_while_others_are_busy",
          "[queue][lanes]") {
    // Messages are producer * 1'000'000 + index (an int goes through put's halved copy, where
    // the victim dies).
    mproc::Queue<int> q(mproc::QueueOptions{.lanes = 4});
    // The first producer is dealt lane 0 and dies with its record claimed at that lane's head
    // (the tail moved past it, half the message written).
    mproc::Process<void> victim([q]() mutable {
        die_at(queue_point::put_copying);
        q.put(-1);
    });
    victim.start();
    join_bounded(victim);
    REQUIRE(victim.exitcode() == -SIGKILL);
    // Producers 1 to 3 are dealt lanes 1 to 3 and producer 4 lane 0 again, behind the dead
    // record (if they start in that order, which the pauses make likely; any order tests the
    // same thing with another producer behind it). Producer 1 keeps its lane busy throughout.
    constexpr int busy = 200'000;
    std::vector<mproc::Process<void>> producers;
    for (int p = 1; p <= 4; ++p) {
        producers.emplace_back([q, p]() mutable {
            for (int i = 0; i < (p == 1 ? busy : 100); ++i) q.put(p * 1'000'000 + i);
        });
        producers.back().start();
        std::this_thread::sleep_for(20ms);
    }
    std::vector<int> next(5, 0);
    std::vector<int> busy_seen_when_done(5, 0);
    int out_of_order = 0;
    while (next[1] < busy || next[2] < 100 || next[3] < 100 || next[4] < 100) {
        const auto got = q.try_get_for(10s);
        REQUIRE(got);
        const auto p = static_cast<std::size_t>(*got / 1'000'000);
        REQUIRE((p >= 1 && p <= 4));
        if (*got % 1'000'000 != next[p]++) ++out_of_order;
        if (p != 1 && next[p] == 100) busy_seen_when_done[p] = next[1];
    }
    for (auto& p : producers) join_bounded(p);
    CHECK(out_of_order == 0);
    // Whichever producer was behind the dead record was not left until the busy lane ran dry.
    for (std::size_t p = 2; p <= 4; ++p) {
        INFO("producer " << p);
        CHECK(busy_seen_when_done[p] < busy);
    }
    CHECK(q.dropped() == 1);
    CHECK_FALSE(q.try_get());
    CHECK(q.empty());
}

TEST_CASE("Queue.lanes.a_dead_producer_is_found_by_a_get_that_finds_nothing_else", "[queue][lanes]") {
    mproc::Queue<int> q(mproc::QueueOptions{.lanes = 4});
    mproc::Process<void> victim([q]() mutable {
        die_at(queue_point::put_copying);
        q.put(1);
    });
    victim.start();
    join_bounded(victim);
    REQUIRE(victim.exitcode() == -SIGKILL);
    CHECK(q.qsize() == 1);     // claimed and counted, never to be published
    CHECK_FALSE(q.try_get());  // looks at the stuck head at once: its holder is dead
    CHECK(q.dropped() == 1);
    CHECK(q.empty());
    q.put(2);
    CHECK(q.get(10s) == 2);
}

TEST_CASE("JoinableQueue.lanes.join_counts_every_lane_and_dead_consumers", "[queue][lanes]") {
    mproc::JoinableQueue<int> q(mproc::QueueOptions{.lanes = 4});
    std::vector<mproc::Process<void>> producers;
    for (int p = 0; p < 4; ++p)
        producers.emplace_back([q]() mutable {
            for (int i = 0; i < 50; ++i) q.put(i);
        });
    for (auto& p : producers) p.start();
    for (auto& p : producers) join_bounded(p);
    CHECK_FALSE(q.join_for(0ms));
    // This process is dealt the first lane to get from, so the victim's first look is lane 1.
    (void)q.get(10s);
    q.task_done();
    // A consumer killed holding an item (the head already moved past it).
    mproc::Process<void> victim([q]() mutable {
        die_at(queue_point::get_moved);
        (void)q.get();
    });
    victim.start();
    join_bounded(victim);
    REQUIRE(victim.exitcode() == -SIGKILL);
    mproc::Process<void> worker([q]() mutable {
        for (int i = 0; i < 198; ++i) {
            (void)q.get(10s);
            q.task_done();
        }
    });
    worker.start();
    CHECK(q.join_for(30s));
    join_bounded(worker);
    CHECK(q.dropped() == 1);
    CHECK_THROWS_AS(q.task_done(), mproc::StateError);
}

TEST_CASE("Queue.lanes.full_is_the_lane_a_process_puts_into_and_asking_deals_nothing", "[queue][lanes]") {
    mproc::Queue<int> q(mproc::QueueOptions{.ring_bytes = 4096, .lanes = 2});
    CHECK_FALSE(q.full());
    int put = 0;
    while (q.try_put(put)) ++put;  // this process's lane (the first) until it is full
    CHECK(put > 0);
    CHECK(q.full());
    // A process that only asks is dealt nothing: the next one to put gets the second lane,
    // which has room, not the first again.
    mproc::Process<bool> asker([q]() mutable { return q.full(); });
    asker.start();
    join_bounded(asker);
    CHECK_FALSE(asker.result());
    mproc::Process<bool> putter([q]() mutable { return q.try_put(-1) && !q.full(); });
    putter.start();
    join_bounded(putter);
    CHECK(putter.result());
    CHECK(q.qsize() == static_cast<std::size_t>(put) + 1);
}

// Queue throughput between processes, beside the baselines in the same binary:
//   - a hand-written lock-free SPSC ring of 8-byte slots (the floor of what shared memory costs)
//   - Boost.Interprocess message_queue (when Boost is found; its /dev/shm names are removed)
//   - a single-thread 1 MiB memcpy (for the 1 MiB workload)
//   - bare MPMC rings claiming by ticket, by CAS on the cursor or, as the queue, on the slot
// Goals: SPSC 8-byte >= 3x Boost; 1 MiB >= 1.2x Boost and >= 0.3x memcpy; 4x4 MPMC beside Boost.
//   ./bench_queue --benchmark_repetitions=5 --benchmark_report_aggregates_only=true
// Each iteration sends a batch and waits until the consumers have received all of it, so the
// time covers delivery, not just the producer's side.
#include <mproc/detail/futex.hpp>
#include <mproc/detail/shm.hpp>
#include <mproc/queue.hpp>

#include <benchmark/benchmark.h>

#ifdef MPROC_HAVE_BOOST
#include <boost/interprocess/ipc/message_queue.hpp>
#endif

#include <sched.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <csignal>
#include <cstdint>
#include <cstring>
#include <string>
#include <thread>
#include <type_traits>
#include <functional>
#include <vector>

namespace {

constexpr std::int64_t small_batch = 1'000'000;
constexpr std::int64_t big_batch = 200;
constexpr std::size_t big_bytes = std::size_t{1} << 20;

// Counters shared with the children: messages received by each consumer (a line each, so that
// counting costs a consumer no more than a store), and a go signal for producers.
struct shared_counts {
    struct alignas(64) counter {
        std::atomic<std::int64_t> value{0};
    };
    counter received[8];
    alignas(64) mproc::detail::futex_word go{0};
    mproc::detail::futex_word go_waiters{0};

    [[nodiscard]] std::int64_t total() const {
        std::int64_t sum = 0;
        for (const auto& c : received) sum += c.value.load(std::memory_order_acquire);
        return sum;
    }
    void count(int consumer, std::int64_t n) {
        received[consumer].value.store(n, std::memory_order_release);
    }
};

// Forks `n` children running body(i) forever; kill_all() ends them.
class children {
public:
    template <class Body>
    children(int n, Body body) {
        for (int i = 0; i < n; ++i) {
            const pid_t pid = ::fork();
            if (pid == 0) {
                body(i);
                ::_exit(0);
            }
            pids_.push_back(pid);
        }
    }
    ~children() {
        for (pid_t p : pids_) ::kill(p, SIGKILL);
        for (pid_t p : pids_) ::waitpid(p, nullptr, 0);
    }
    children(const children&) = delete;
    children& operator=(const children&) = delete;

private:
    std::vector<pid_t> pids_;
};

// Waits (sleeping, so as not to steal a core from the workers) until `target` arrived.
void wait_received(const shared_counts& counts, std::int64_t target) {
    while (counts.total() < target)
        std::this_thread::sleep_for(std::chrono::microseconds(20));
}

// Calls receive(): one message received, or as many as it returns (a batch).
template <class Receive>
std::int64_t received(Receive& receive) {
    if constexpr (std::is_void_v<decltype(receive())>) {
        receive();
        return 1;
    } else {
        return static_cast<std::int64_t>(receive());
    }
}

// Sends in batches of `size`: send(v) gathers, and the batch goes out with put_many when full
// (every benchmark's message count is a multiple of it).
class batcher {
public:
    explicit batcher(mproc::Queue<std::int64_t>& q, std::size_t size) : q_(q), size_(size) { pending_.reserve(size); }
    void operator()(std::int64_t v) {
        pending_.push_back(v);
        if (pending_.size() == size_) {
            q_.put_many(pending_);
            pending_.clear();
        }
    }

private:
    mproc::Queue<std::int64_t>& q_;
    std::size_t size_;
    std::vector<std::int64_t> pending_;
};
constexpr std::size_t batch_size = 16;

// One producer (this process) and one consumer process. send(i) sends message i; the consumer
// calls receive() forever and counts.
template <class Send, class Receive>
void spsc(benchmark::State& state, std::int64_t batch, std::size_t message_bytes, Send send, Receive receive) {
    mproc::detail::shared_mapping memory(sizeof(shared_counts));
    auto* counts = new (memory.data()) shared_counts;
    children consumer(1, [&](int) {
        for (std::int64_t n = 0;;) {
            n += received(receive);
            counts->count(0, n);
        }
    });
    std::int64_t sent = 0;
    for (auto _ : state) {
        for (std::int64_t i = 0; i < batch; ++i) send(sent + i);
        sent += batch;
        wait_received(*counts, sent);
    }
    state.SetItemsProcessed(sent);
    state.SetBytesProcessed(sent * static_cast<std::int64_t>(message_bytes));
}

// ---- the raw baseline: a Lamport ring of 8-byte slots, indices cached, busy-waiting ----

struct raw_ring {
    static constexpr std::uint64_t slots = 1 << 16;
    alignas(64) std::atomic<std::uint64_t> head{0};
    alignas(64) std::atomic<std::uint64_t> tail{0};
    alignas(64) std::int64_t data[slots];
};

void Raw_spsc_ring_8B(benchmark::State& state) {
    mproc::detail::shared_mapping memory(sizeof(raw_ring));
    auto* ring = new (memory.data()) raw_ring;
    std::uint64_t tail = 0, head_seen = 0;  // the producer's view
    std::uint64_t head = 0, tail_seen = 0;  // the consumer's view (in the child)
    spsc(state, small_batch, 8,
         [&](std::int64_t v) {
             while (tail - head_seen >= raw_ring::slots) head_seen = ring->head.load(std::memory_order_acquire);
             ring->data[tail % raw_ring::slots] = v;
             ring->tail.store(++tail, std::memory_order_release);
         },
         [&] {
             while (head == tail_seen) tail_seen = ring->tail.load(std::memory_order_acquire);
             benchmark::DoNotOptimize(ring->data[head % raw_ring::slots]);
             ring->head.store(++head, std::memory_order_release);
         });
}
BENCHMARK(Raw_spsc_ring_8B)->UseRealTime()->Unit(benchmark::kMillisecond);

// ---- mproc ----

void Mproc_queue_spsc_8B(benchmark::State& state) {
    mproc::Queue<std::int64_t> q;
    spsc(state, small_batch, 8, [&](std::int64_t v) { q.put(v); },
         [&] { benchmark::DoNotOptimize(q.get()); });
}
BENCHMARK(Mproc_queue_spsc_8B)->UseRealTime()->Unit(benchmark::kMillisecond);

// The same messages put_many and get_many in batches of 16 (one claim per batch).
void Mproc_queue_spsc_8B_batch16(benchmark::State& state) {
    mproc::Queue<std::int64_t> q;
    batcher send(q, batch_size);
    spsc(state, small_batch / batch_size * batch_size, 8, std::ref(send),
         [&] { return q.get_many(batch_size).size(); });
}
BENCHMARK(Mproc_queue_spsc_8B_batch16)->UseRealTime()->Unit(benchmark::kMillisecond);

void Mproc_queue_spsc_1MiB(benchmark::State& state) {
    mproc::Queue<std::vector<std::byte>> q(mproc::QueueOptions{.ring_bytes = static_cast<std::size_t>(state.range(0))});
    const std::vector<std::byte> message(big_bytes, std::byte{1});
    spsc(state, big_batch, big_bytes, [&](std::int64_t) { q.put(message); },
         [&] { benchmark::DoNotOptimize(q.get()); });
}
// A 1 MiB ring: each message is over half of it and takes the spill window.
BENCHMARK(Mproc_queue_spsc_1MiB)->Arg(1 << 20)->Arg(4 << 20)->Arg(16 << 20)->ArgName("ring")->UseRealTime()->Unit(benchmark::kMillisecond);

void Memcpy_1MiB(benchmark::State& state) {
    std::vector<std::byte> from(big_bytes, std::byte{1}), to(big_bytes);
    std::int64_t copies = 0;
    for (auto _ : state) {
        for (std::int64_t i = 0; i < big_batch; ++i) {
            std::memcpy(to.data(), from.data(), big_bytes);
            benchmark::ClobberMemory();
        }
        copies += big_batch;
    }
    state.SetItemsProcessed(copies);
    state.SetBytesProcessed(copies * static_cast<std::int64_t>(big_bytes));
}
BENCHMARK(Memcpy_1MiB)->UseRealTime()->Unit(benchmark::kMillisecond);

// 4 producer processes and 4 consumer processes; each iteration moves `batch` messages.
template <class Send, class Receive>
void mpmc(benchmark::State& state, std::int64_t batch, Send send, Receive receive) {
    constexpr int producers = 4, consumers = 4;
    mproc::detail::shared_mapping memory(sizeof(shared_counts));
    auto* counts = new (memory.data()) shared_counts;
    children receivers(consumers, [&](int c) {
        for (std::int64_t n = 0;;) {
            n += received(receive);
            counts->count(c, n);
        }
    });
    children senders(producers, [&](int p) {
        for (std::uint32_t round = 1;; ++round) {
            // Sleep until the parent starts this round.
            (void)mproc::detail::wait_until(counts->go, counts->go_waiters,
                                            [&](std::uint32_t g) { return g >= round; },
                                            mproc::detail::Deadline::never());
            for (std::int64_t i = 0; i < batch / producers; ++i) send(p * batch + i);
        }
    });
    std::int64_t moved = 0;
    for (auto _ : state) {
        counts->go.fetch_add(1, std::memory_order_seq_cst);
        mproc::detail::futex_wake(counts->go);
        moved += batch;
        wait_received(*counts, moved);
    }
    state.SetItemsProcessed(moved);
}

void Mproc_queue_mpmc_4x4_8B(benchmark::State& state) {
    mproc::Queue<std::int64_t> q;
    mpmc(state, 1 << 20, [&](std::int64_t v) { q.put(v); }, [&] { benchmark::DoNotOptimize(q.get()); });
}
BENCHMARK(Mproc_queue_mpmc_4x4_8B)->UseRealTime()->Unit(benchmark::kMillisecond);

void Mproc_queue_mpmc_4x4_8B_batch16(benchmark::State& state) {
    mproc::Queue<std::int64_t> q;
    batcher send(q, batch_size);
    mpmc(state, 1 << 20, std::ref(send), [&] { return q.get_many(batch_size).size(); });
}
BENCHMARK(Mproc_queue_mpmc_4x4_8B_batch16)->UseRealTime()->Unit(benchmark::kMillisecond);

// The rows above with the lanes given (above: the default, one): a ring per producer (4),
// two producers per ring (2), one ring (1), more rings than producers (8).
void Mproc_queue_mpmc_4x4_8B_lanes(benchmark::State& state) {
    mproc::Queue<std::int64_t> q(mproc::QueueOptions{.lanes = static_cast<std::size_t>(state.range(0))});
    mpmc(state, 1 << 20, [&](std::int64_t v) { q.put(v); }, [&] { benchmark::DoNotOptimize(q.get()); });
}
BENCHMARK(Mproc_queue_mpmc_4x4_8B_lanes)->Arg(1)->Arg(2)->Arg(4)->Arg(8)->ArgName("lanes")->UseRealTime()->Unit(benchmark::kMillisecond);

void Mproc_queue_mpmc_4x4_8B_batch16_lanes(benchmark::State& state) {
    mproc::Queue<std::int64_t> q(mproc::QueueOptions{.lanes = static_cast<std::size_t>(state.range(0))});
    batcher send(q, batch_size);
    mpmc(state, 1 << 20, std::ref(send), [&] { return q.get_many(batch_size).size(); });
}
BENCHMARK(Mproc_queue_mpmc_4x4_8B_batch16_lanes)->Arg(1)->Arg(4)->ArgName("lanes")->UseRealTime()->Unit(benchmark::kMillisecond);

// ---- claim protocols, bare: issue 14's candidates for an MPMC queue that scales with cores ----
// No crash safety, no close, no sizes: 8-byte messages in slots with a turn word (4 x lap: free
// for that lap's producer, + 1 claimed by it, + 2 ready, + 3 claimed by a consumer), 64 bytes
// each as in the prototypes the issue measured, 16 for the queue's own protocol as the queue
// lays them out (on 2 cores the slot size moved no row). A side claims in one of these ways:
//   ticket:     fetch_add on its cursor, then it waits for its own slot's turn: no claim ever
//               fails, but that slot waits for this very process;
//   cursor_cas: a CAS on the cursor once the slot there has its turn (Vyukov's): whoever runs
//               takes what is there;
//   slot_cas:   a CAS on the slot's turn, then a store moves the cursor: the queue's own protocol
//               (its slot CAS also names the claimer, so that a dead one is found), stripped
//               down; the others wait for that store, producers spinning a little first;
//   slot_cas_spinning: the same, consumers spinning a little too before they yield (the
//               issue names their yield as a many-core cost; on 2 cores the spin costs);
//   slot_cas_helping: the same claim, but whoever finds a slot claimed moves the cursor past
//               it itself (a CAS, as the claimer's own move then is): no one waits for a
//               claimer's store, and a claim still names its holder.
// So the rows tell the protocols apart, and the slot_cas row tells the bare harness from the
// queue. Waiting as the queue does: polls spaced out, spin ~10 us, yield ~50 us, then a futex
// sleep on the slot's turn word (sliced: a cursor that moves does not wake it).
enum class claim_by { ticket, cursor_cas, slot_cas, slot_cas_spinning, slot_cas_helping };

template <claim_by Put, claim_by Get, std::size_t SlotBytes>
struct bare_mpmc_ring {
    static constexpr std::uint64_t slots = 1 << 16;
    struct alignas(SlotBytes) slot {
        mproc::detail::futex_word turn{0};
        std::int64_t value = 0;
    };
    alignas(64) std::atomic<std::uint64_t> tail{0};
    alignas(64) std::atomic<std::uint64_t> head{0};
    struct alignas(64) count {
        mproc::detail::futex_word value{0};
    };
    count sleeping[2];  // [0]: producers waiting for a free slot, [1]: consumers for a ready one
    slot ring[slots];

    void put(std::int64_t v) {
        const std::uint64_t t = claim<Put>(tail, 0, sleeping[0].value);
        ring[t % slots].value = v;
        pass(ring[t % slots], turn_of(t, 2), sleeping[1].value);
    }
    std::int64_t get() {
        const std::uint64_t t = claim<Get>(head, 2, sleeping[1].value);
        const std::int64_t v = ring[t % slots].value;
        pass(ring[t % slots], turn_of(t, 4), sleeping[0].value);
        return v;
    }

private:
    static std::uint32_t turn_of(std::uint64_t ticket, std::uint32_t step) {
        return static_cast<std::uint32_t>(ticket / slots * 4 + step);
    }
    // Returns the ticket of the slot claimed, whose turn was `4 x lap + step`.
    template <claim_by How>
    std::uint64_t claim(std::atomic<std::uint64_t>& cursor, std::uint32_t step, mproc::detail::futex_word& sleepers) {
        if constexpr (How == claim_by::ticket) {
            const std::uint64_t t = cursor.fetch_add(1, std::memory_order_seq_cst);
            slot& s = ring[t % slots];
            wait_for(s, sleepers, [&] { return s.turn.load(std::memory_order_acquire) == turn_of(t, step); });
            return t;
        }
        constexpr bool by_slot = How != claim_by::cursor_cas;
        constexpr bool helping = How == claim_by::slot_cas_helping;
        const bool spin = step == 0 || How == claim_by::slot_cas_spinning;
        for (;;) {
            std::uint64_t t = cursor.load(std::memory_order_acquire);
            slot& s = ring[t % slots];
            std::uint32_t seen = s.turn.load(std::memory_order_acquire);
            const auto behind = static_cast<std::int32_t>(seen - turn_of(t, step));
            if (behind == 0) {
                if constexpr (How == claim_by::cursor_cas) {
                    if (cursor.compare_exchange_weak(t, t + 1, std::memory_order_seq_cst)) return t;
                } else if (s.turn.compare_exchange_weak(seen, seen + 1, std::memory_order_seq_cst)) {
                    if (helping) {
                        std::uint64_t expected = t;  // fails when a helper moved it already
                        cursor.compare_exchange_strong(expected, t + 1, std::memory_order_acq_rel);
                    } else {
                        cursor.store(t + 1, std::memory_order_release);
                    }
                    return t;
                }
            } else if (helping && behind == 1) {
                cursor.compare_exchange_strong(t, t + 1, std::memory_order_acq_rel);
            } else if (by_slot && behind == 1) {
                // Claimed, and its claimer has not moved the cursor yet.
                for (int i = 0; i < 64 && spin && cursor.load(std::memory_order_acquire) == t; ++i)
                    mproc::detail::cpu_relax();
                if (cursor.load(std::memory_order_acquire) == t) ::sched_yield();
            } else if (behind < 0) {  // not this lap's turn yet: empty, or full
                wait_for(s, sleepers, [&] {
                    return s.turn.load(std::memory_order_acquire) != seen || cursor.load(std::memory_order_relaxed) != t;
                });
            }  // else the cursor we read is stale
        }
    }
    template <class Ready>
    void wait_for(slot& s, mproc::detail::futex_word& sleepers, Ready ready) {
        for (int gap = 4; gap <= 64; gap *= 2) {
            if (ready()) return;
            for (int i = 0; i < gap; ++i) mproc::detail::cpu_relax();
        }
        const auto start = std::chrono::steady_clock::now();
        for (auto now = start; now - start < std::chrono::microseconds(60); now = std::chrono::steady_clock::now()) {
            if (ready()) return;
            if (now - start < std::chrono::microseconds(10)) {
                for (int i = 0; i < 64; ++i) mproc::detail::cpu_relax();
            } else {
                ::sched_yield();
            }
        }
        while (!ready()) {
            sleepers.fetch_add(1, std::memory_order_seq_cst);
            const std::uint32_t seen = s.turn.load(std::memory_order_seq_cst);
            if (!ready())
                (void)mproc::detail::futex_wait(s.turn, seen, mproc::detail::Deadline::after(std::chrono::milliseconds(1)));
            sleepers.fetch_sub(1, std::memory_order_relaxed);
        }
    }
    static void pass(slot& s, std::uint32_t turn, mproc::detail::futex_word& sleepers) {
        s.turn.store(turn, std::memory_order_seq_cst);
        if (sleepers.load(std::memory_order_seq_cst) != 0) mproc::detail::futex_wake(s.turn);
    }
};

template <claim_by Put, claim_by Get, std::size_t SlotBytes = 64>
void bare_mpmc(benchmark::State& state) {
    using ring = bare_mpmc_ring<Put, Get, SlotBytes>;
    mproc::detail::shared_mapping memory(sizeof(ring));
    auto* r = new (memory.data()) ring;
    mpmc(state, 1 << 20, [&](std::int64_t v) { r->put(v); }, [&] { benchmark::DoNotOptimize(r->get()); });
}
void Bare_slot_cas_mpmc_4x4_8B(benchmark::State& state) { bare_mpmc<claim_by::slot_cas, claim_by::slot_cas, 16>(state); }
BENCHMARK(Bare_slot_cas_mpmc_4x4_8B)->UseRealTime()->Unit(benchmark::kMillisecond);
void Bare_slot_cas_spinning_mpmc_4x4_8B(benchmark::State& state) {
    bare_mpmc<claim_by::slot_cas_spinning, claim_by::slot_cas_spinning, 16>(state);
}
BENCHMARK(Bare_slot_cas_spinning_mpmc_4x4_8B)->UseRealTime()->Unit(benchmark::kMillisecond);
void Bare_slot_cas_helping_mpmc_4x4_8B(benchmark::State& state) {
    bare_mpmc<claim_by::slot_cas_helping, claim_by::slot_cas_helping, 16>(state);
}
BENCHMARK(Bare_slot_cas_helping_mpmc_4x4_8B)->UseRealTime()->Unit(benchmark::kMillisecond);
void Bare_ticket_mpmc_4x4_8B(benchmark::State& state) { bare_mpmc<claim_by::ticket, claim_by::ticket>(state); }
BENCHMARK(Bare_ticket_mpmc_4x4_8B)->UseRealTime()->Unit(benchmark::kMillisecond);
void Bare_cursor_cas_mpmc_4x4_8B(benchmark::State& state) { bare_mpmc<claim_by::cursor_cas, claim_by::cursor_cas>(state); }
BENCHMARK(Bare_cursor_cas_mpmc_4x4_8B)->UseRealTime()->Unit(benchmark::kMillisecond);
void Bare_ticket_put_cas_get_mpmc_4x4_8B(benchmark::State& state) { bare_mpmc<claim_by::ticket, claim_by::cursor_cas>(state); }
BENCHMARK(Bare_ticket_put_cas_get_mpmc_4x4_8B)->UseRealTime()->Unit(benchmark::kMillisecond);

#ifdef MPROC_HAVE_BOOST
namespace bip = boost::interprocess;

// A message_queue under a unique /dev/shm name, removed before and after (also on exceptions).
class boost_queue {
public:
    boost_queue(std::size_t max_messages, std::size_t max_bytes)
        : name_("mproc-bench-queue-" + std::to_string(::getpid())) {
        bip::message_queue::remove(name_.c_str());
        queue_.emplace(bip::create_only, name_.c_str(), max_messages, max_bytes);
    }
    ~boost_queue() {
        queue_.reset();
        bip::message_queue::remove(name_.c_str());
    }
    bip::message_queue& operator*() { return *queue_; }

private:
    std::string name_;
    std::optional<bip::message_queue> queue_;
};

void receive_8_bytes(boost_queue& q) {
    std::int64_t v;
    std::size_t got;
    unsigned priority;
    (*q).receive(&v, sizeof v, got, priority);
    benchmark::DoNotOptimize(v);
}

void Boost_message_queue_spsc_8B(benchmark::State& state) {
    boost_queue q(16384, 8);
    spsc(state, small_batch, 8, [&](std::int64_t v) { (*q).send(&v, sizeof v, 0); },
         [&] { receive_8_bytes(q); });
}
BENCHMARK(Boost_message_queue_spsc_8B)->UseRealTime()->Unit(benchmark::kMillisecond);

void Boost_message_queue_spsc_1MiB(benchmark::State& state) {
    boost_queue q(4, big_bytes);
    const std::vector<std::byte> message(big_bytes, std::byte{1});
    std::vector<std::byte> into(big_bytes);
    spsc(state, big_batch, big_bytes, [&](std::int64_t) { (*q).send(message.data(), message.size(), 0); },
         [&] {
             std::size_t got;
             unsigned priority;
             (*q).receive(into.data(), into.size(), got, priority);
             benchmark::DoNotOptimize(into.data());
         });
}
BENCHMARK(Boost_message_queue_spsc_1MiB)->UseRealTime()->Unit(benchmark::kMillisecond);

void Boost_message_queue_mpmc_4x4_8B(benchmark::State& state) {
    boost_queue q(16384, 8);
    mpmc(state, 1 << 20, [&](std::int64_t v) { (*q).send(&v, sizeof v, 0); },
         [&] { receive_8_bytes(q); });
}
BENCHMARK(Boost_message_queue_mpmc_4x4_8B)->UseRealTime()->Unit(benchmark::kMillisecond);
#endif

}  // namespace

BENCHMARK_MAIN();

// Locks, atomics and Event beside their raw OS baselines:
//   - Lock uncontended acquire+release vs a raw process-shared robust pthread_mutex_t (goal 1.3x)
//   - 2 processes x 1,000,000 locked increments of a SharedValue vs the same with a raw robust
//     mutex (goal 1.5x)
//   - SharedValue::fetch_add vs a raw std::atomic in a shared mapping
//   - Event set/wait round trip between two processes vs a raw futex ping-pong
//   ./bench_sync --benchmark_repetitions=5 --benchmark_report_aggregates_only=true
// Python's figure for the locked counter: python3 benchmarks/python_locked_counter.py
#include <mproc/shared.hpp>
#include <mproc/sync.hpp>

#include <benchmark/benchmark.h>

#include <linux/futex.h>
#include <pthread.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <climits>
#include <cstdint>
#include <mutex>

namespace {

// A raw robust, process-shared mutex and a counter in one anonymous shared mapping.
struct raw_block {
    pthread_mutex_t mutex;
    long counter;
};

raw_block* make_raw_block() {
    void* p = ::mmap(nullptr, sizeof(raw_block), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS,
                     -1, 0);
    auto* b = static_cast<raw_block*>(p);
    pthread_mutexattr_t attr;
    pthread_mutexattr_init(&attr);
    pthread_mutexattr_setpshared(&attr, PTHREAD_PROCESS_SHARED);
    pthread_mutexattr_setrobust(&attr, PTHREAD_MUTEX_ROBUST);
    pthread_mutex_init(&b->mutex, &attr);
    pthread_mutexattr_destroy(&attr);
    b->counter = 0;
    return b;
}

void raw_lock(pthread_mutex_t* m) {
    if (pthread_mutex_lock(m) == EOWNERDEAD) pthread_mutex_consistent(m);
}

// Runs body() in `n` forked children and waits for them.
template <class Body>
void in_children(int n, Body body) {
    pid_t pids[16];
    for (int i = 0; i < n; ++i) {
        pids[i] = ::fork();
        if (pids[i] == 0) {
            body();
            ::_exit(0);
        }
    }
    for (int i = 0; i < n; ++i) ::waitpid(pids[i], nullptr, 0);
}

constexpr long increments = 1'000'000;

}  // namespace

static void Raw_robust_mutex_uncontended(benchmark::State& state) {
    raw_block* b = make_raw_block();
    for (auto _ : state) {
        raw_lock(&b->mutex);
        pthread_mutex_unlock(&b->mutex);
    }
    ::munmap(b, sizeof *b);
}
BENCHMARK(Raw_robust_mutex_uncontended);

static void Lock_uncontended(benchmark::State& state) {
    mproc::Lock lock;
    for (auto _ : state) {
        lock.acquire();
        lock.release();
    }
}
BENCHMARK(Lock_uncontended);

// Args: processes, increments each. {2, 1000000} is the goal's figure; {4, 100000} is the
// shape of python_locked_counter.py. us_per_increment = wall time / all increments.
static void Raw_robust_mutex_locked_increments(benchmark::State& state) {
    const int procs = static_cast<int>(state.range(0));
    const long n = state.range(1);
    raw_block* b = make_raw_block();
    for (auto _ : state) {
        b->counter = 0;
        in_children(procs, [b, n] {
            for (long i = 0; i < n; ++i) {
                raw_lock(&b->mutex);
                ++b->counter;
                pthread_mutex_unlock(&b->mutex);
            }
        });
        if (b->counter != procs * n) state.SkipWithError("lost increments");
    }
    state.SetItemsProcessed(state.iterations() * procs * n);
    ::munmap(b, sizeof *b);
}
BENCHMARK(Raw_robust_mutex_locked_increments)
    ->Args({2, increments})->Args({4, 100'000})->Unit(benchmark::kMillisecond)->UseRealTime();

static void SharedValue_locked_increments(benchmark::State& state) {
    const int procs = static_cast<int>(state.range(0));
    const long n = state.range(1);
    mproc::SharedValue<long> v(0);
    for (auto _ : state) {
        v.value() = 0;
        in_children(procs, [&v, n] {
            for (long i = 0; i < n; ++i) {
                std::lock_guard g(v.get_lock());
                ++v.value();
            }
        });
        if (v.value() != procs * n) state.SkipWithError("lost increments");
    }
    state.SetItemsProcessed(state.iterations() * procs * n);
}
BENCHMARK(SharedValue_locked_increments)
    ->Args({2, increments})->Args({4, 100'000})->Unit(benchmark::kMillisecond)->UseRealTime();

static void Raw_shared_atomic_fetch_add(benchmark::State& state) {
    void* p = ::mmap(nullptr, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    auto* a = new (p) std::atomic<long>(0);
    for (auto _ : state) benchmark::DoNotOptimize(a->fetch_add(1));
    ::munmap(p, 4096);
}
BENCHMARK(Raw_shared_atomic_fetch_add);

static void SharedValue_fetch_add(benchmark::State& state) {
    mproc::SharedValue<long> v(0);
    for (auto _ : state) benchmark::DoNotOptimize(v.fetch_add(1));
}
BENCHMARK(SharedValue_fetch_add);

static void Raw_shared_atomic_2procs_fetch_add(benchmark::State& state) {
    void* p = ::mmap(nullptr, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    auto* a = new (p) std::atomic<long>(0);
    for (auto _ : state)
        in_children(2, [a] {
            for (long i = 0; i < increments; ++i) a->fetch_add(1);
        });
    state.SetItemsProcessed(state.iterations() * 2 * increments);
    ::munmap(p, 4096);
}
BENCHMARK(Raw_shared_atomic_2procs_fetch_add)->Unit(benchmark::kMillisecond)->UseRealTime();

static void SharedValue_2procs_fetch_add(benchmark::State& state) {
    mproc::SharedValue<long> v(0);
    for (auto _ : state)
        in_children(2, [&v] {
            for (long i = 0; i < increments; ++i) v.fetch_add(1);
        });
    state.SetItemsProcessed(state.iterations() * 2 * increments);
}
BENCHMARK(SharedValue_2procs_fetch_add)->Unit(benchmark::kMillisecond)->UseRealTime();

namespace {
long futex(std::atomic<std::uint32_t>* word, int op, std::uint32_t value) {
    return ::syscall(SYS_futex, reinterpret_cast<std::uint32_t*>(word), op, value, nullptr, nullptr, 0);
}
// The simplest correct futex hand-off: no spinning, no waiter count, always FUTEX_WAKE.
void raw_wait_for(std::atomic<std::uint32_t>* word, std::uint32_t want) {
    for (std::uint32_t v; (v = word->load(std::memory_order_acquire)) != want;)
        futex(word, FUTEX_WAIT, v);
}
void raw_post(std::atomic<std::uint32_t>* word, std::uint32_t v) {
    word->store(v, std::memory_order_release);
    futex(word, FUTEX_WAKE, INT_MAX);
}
}  // namespace

static void Raw_futex_ping_pong(benchmark::State& state) {
    void* p = ::mmap(nullptr, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    auto* ping = new (p) std::atomic<std::uint32_t>(0);
    auto* pong = new (static_cast<char*>(p) + 64) std::atomic<std::uint32_t>(0);
    const pid_t child = ::fork();
    if (child == 0) {
        for (std::uint32_t round = 1;; ++round) {  // ends by SIGKILL
            raw_wait_for(ping, round);
            raw_post(pong, round);
        }
    }
    std::uint32_t round = 0;
    for (auto _ : state) {
        ++round;
        raw_post(ping, round);
        raw_wait_for(pong, round);
    }
    ::kill(child, SIGKILL);
    ::waitpid(child, nullptr, 0);
    ::munmap(p, 4096);
}
BENCHMARK(Raw_futex_ping_pong)->UseRealTime();

static void Event_ping_pong(benchmark::State& state) {
    mproc::Event ping, pong, stop;
    const pid_t child = ::fork();
    if (child == 0) {
        for (;;) {
            ping.wait();
            ping.clear();
            if (stop.is_set()) ::_exit(0);
            pong.set();
        }
    }
    for (auto _ : state) {
        ping.set();
        pong.wait();
        pong.clear();
    }
    stop.set();
    ping.set();
    ::waitpid(child, nullptr, 0);
}
BENCHMARK(Event_ping_pong)->UseRealTime();

BENCHMARK_MAIN();

// Lock, RLock, Semaphore, BoundedSemaphore, Event, Condition, Barrier across processes: normal
// use, owner death, timeouts, EINTR. Every wait in a test is bounded, so a bug fails the test
// instead of hanging it.
#include "support.hpp"

#include <mproc/process.hpp>
#include <mproc/shared.hpp>
#include <mproc/sync.hpp>

#include <catch2/catch.hpp>

#include <sys/syscall.h>

#include <atomic>
#include <chrono>
#include <climits>
#include <fstream>
#include <future>
#include <set>
#include <string>
#include <csignal>
#include <mutex>
#include <optional>
#include <thread>
#include <vector>

using namespace std::chrono_literals;
using clock_type = std::chrono::steady_clock;

namespace {


auto since(clock_type::time_point t0) { return clock_type::now() - t0; }

// Runs a child that takes `acquire`, signals `held`, and SIGKILLs itself after `hold_for`.
template <class Acquire>
mproc::Process<void> die_holding(Acquire acquire, mproc::Event held, std::chrono::milliseconds hold_for) {
    mproc::Process<void> child([=]() mutable {
        acquire();
        held.set();
        std::this_thread::sleep_for(hold_for);
        ::raise(SIGKILL);
    });
    child.start();
    REQUIRE(held.wait_for(10s));
    return child;
}

}  // namespace

TEST_CASE("Lock.counter.four_processes", "[sync]") {
    const auto names_before = mproc_test::our_shm_names();
    mproc::Lock lock;
    mproc::SharedValue<long> counter(0);
    mproc_test::run_children(4, [&](int) {
        for (int i = 0; i < 100'000; ++i) {
            std::lock_guard g(lock);
            counter.value() += 1;
        }
    });
    CHECK(counter.value() == 400'000);
    CHECK(mproc_test::our_shm_names() == names_before);  // anonymous mappings: no names
}

TEST_CASE("Lock.std_guards.compile_and_work", "[sync]") {
    mproc::Lock a, b;
    {
        std::lock_guard g(a);
        CHECK_FALSE(a.owner_died());
    }
    {
        std::unique_lock u(a, std::defer_lock);
        CHECK(u.try_lock_for(10ms));
        CHECK(u.owns_lock());
        u.unlock();
        CHECK(u.try_lock_until(clock_type::now() + 10ms));
    }
    {
        std::scoped_lock both(a, b);
    }
    mproc::Lock copy = a;  // a copy is the same lock
    copy.acquire();
    CHECK_FALSE(a.try_acquire());
    a.release();
    CHECK(a.try_acquire());
    a.release();
}

TEST_CASE("Lock.errors.relock_and_foreign_release", "[sync]") {
    mproc::Lock lock;
    CHECK_THROWS_AS(lock.release(), mproc::StateError);
    lock.acquire();
    CHECK_THROWS_AS(lock.acquire(), mproc::StateError);
    mproc::Process other([&] {
        try {
            lock.release();  // held by the parent's thread, not ours
            return 1;
        } catch (const mproc::StateError&) {
            return 0;
        }
    });
    other.start();
    CHECK(other.result() == 0);
    lock.release();
}

TEST_CASE("Lock.timeout.expires_while_held", "[sync]") {
    mproc::Lock lock;
    mproc::Event held, done;
    mproc::Process holder([&] {
        std::lock_guard g(lock);
        held.set();
        (void)done.wait_for(30s);
    });
    holder.start();
    REQUIRE(held.wait_for(10s));
    auto t0 = clock_type::now();
    CHECK_FALSE(lock.try_acquire_for(100ms));
    CHECK(since(t0) >= 100ms);
    CHECK_FALSE(lock.try_acquire());
    done.set();
    CHECK(lock.try_acquire_for(10s));
    CHECK_FALSE(lock.owner_died());
    lock.release();
    holder.join();
}

TEST_CASE("Lock.owner_death.sigkill", "[sync]") {
    mproc::Lock lock;
    mproc::SharedValue<int> data(0);
    SECTION("dead before the next acquire") {
        auto child = die_holding([&] { lock.acquire(); data.value() = 42; }, mproc::Event(), 0ms);
        REQUIRE(child.join(10s));
        CHECK(child.exitcode() == -SIGKILL);
        REQUIRE(lock.try_acquire_for(5s));
    }
    SECTION("dies while the parent waits") {
        auto child = die_holding([&] { lock.acquire(); data.value() = 42; }, mproc::Event(), 200ms);
        auto t0 = clock_type::now();
        REQUIRE(lock.try_acquire_for(10s));
        CHECK(since(t0) < 5s);
    }
    CHECK(lock.owner_died());
    CHECK(data.value() == 42);  // the data is still reachable
    lock.release();
    std::lock_guard again(lock);  // usable afterwards, and no longer flagged
    CHECK_FALSE(lock.owner_died());
}

TEST_CASE("RLock.recursion_and_owner_death", "[sync]") {
    mproc::RLock r;
    r.acquire();
    r.acquire();
    {
        std::lock_guard g(r);
    }
    mproc::Process probe([&] { return r.try_acquire() ? 1 : 0; });
    probe.start();
    CHECK(probe.result() == 0);
    r.release();
    r.release();
    CHECK_THROWS_AS(r.release(), mproc::StateError);

    auto child = die_holding([&] { r.acquire(); r.acquire(); }, mproc::Event(), 100ms);
    REQUIRE(r.try_acquire_for(10s));
    CHECK(r.owner_died());
    r.acquire();  // inner acquisition keeps the outer's verdict
    CHECK(r.owner_died());
    r.release();
    r.release();
    REQUIRE(r.try_acquire());
    CHECK_FALSE(r.owner_died());
    r.release();
}

TEST_CASE("Semaphore.concurrency.two_of_six", "[sync]") {
    mproc::Semaphore sem(2);
    mproc::SharedValue<int> inside(0), most(0);
    mproc_test::run_children(6, [&](int) {
        for (int i = 0; i < 20; ++i) {
            std::lock_guard g(sem);
            const int now = inside.fetch_add(1) + 1;
            int seen = most.load();
            while (now > seen && !most.compare_exchange(seen, now)) {}
            std::this_thread::sleep_for(1ms);
            inside.fetch_sub(1);
        }
    });
    CHECK(most.value() == 2);
    CHECK(sem.get_value() == 2);
}

TEST_CASE("Semaphore.timeouts_and_bounds", "[sync]") {
    mproc::Semaphore sem(1);
    CHECK(sem.try_acquire());
    CHECK_FALSE(sem.try_acquire());
    auto t0 = clock_type::now();
    CHECK_FALSE(sem.try_acquire_for(50ms));
    CHECK(since(t0) >= 50ms);
    mproc::Process giver([&] {
        std::this_thread::sleep_for(50ms);
        sem.release();
    });
    giver.start();
    CHECK(sem.try_acquire_for(10s));
    giver.join();

    mproc::BoundedSemaphore bounded(2);
    bounded.acquire();
    bounded.release();
    CHECK_THROWS_AS(bounded.release(), mproc::StateError);
    CHECK(bounded.get_value() == 2);
    mproc::Semaphore plain(0);
    plain.release(3);  // an unbounded semaphore may grow
    CHECK(plain.get_value() == 3);
}

TEST_CASE("Event.cross_process", "[sync]") {
    mproc::Event ping, pong;
    CHECK_FALSE(ping.is_set());
    CHECK_FALSE(ping.wait_for(20ms));
    mproc::Process child([&] {
        if (!ping.wait_for(10s)) return 1;
        pong.set();
        return 0;
    });
    child.start();
    ping.set();
    CHECK(pong.wait_for(10s));
    CHECK(child.result() == 0);
    CHECK(ping.is_set());
    ping.wait();  // set: returns at once
    ping.clear();
    CHECK_FALSE(ping.is_set());
    CHECK_FALSE(ping.wait_for(10ms));
}

TEST_CASE("Condition.cross_process.predicate", "[sync]") {
    mproc::Condition cv;
    mproc::SharedValue<int> stage(0);
    std::vector<mproc::Process<int>> waiters;
    for (int i = 0; i < 3; ++i)
        waiters.emplace_back([&] {
            std::unique_lock lk(cv);
            stage.value() += 1;  // announce: waiting
            cv.notify_all();
            return cv.wait_for(lk, 10s, [&] { return stage.value() >= 100; }) ? 0 : 1;
        });
    for (auto& w : waiters) w.start();
    {
        std::unique_lock lk(cv);
        REQUIRE(cv.wait_for(lk, 10s, [&] { return stage.value() == 3; }));
        stage.value() = 100;
        cv.notify_all();
    }
    for (auto& w : waiters) CHECK(w.result() == 0);

    std::lock_guard g(cv);  // Python's spelling: the caller holds the condition's own lock
    auto t0 = clock_type::now();
    CHECK_FALSE(cv.wait_for(50ms));
    CHECK(since(t0) >= 50ms);
    CHECK_FALSE(cv.wait_for(20ms, [] { return false; }));
}

TEST_CASE("Condition.owner_death", "[sync]") {
    mproc::Condition cv;
    SECTION("lock holder dies") {
        auto child = die_holding([&] { cv.acquire(); }, mproc::Event(), 0ms);
        REQUIRE(cv.try_acquire_for(10s));
        CHECK(cv.owner_died());
        cv.release();
    }
    SECTION("holder dies while another waits on the condition") {
        std::unique_lock lk(cv);
        mproc::Process<void> child([&] {
            cv.acquire();  // the parent's wait released the lock
            ::raise(SIGKILL);
        });
        child.start();
        CHECK_FALSE(cv.wait_for(lk, 300ms));  // nobody notifies; the lock comes back anyway
        CHECK(lk.owns_lock());
        CHECK(cv.owner_died());
    }
    std::lock_guard g(cv);
    CHECK_FALSE(cv.owner_died());
}

TEST_CASE("Barrier.rounds.four_processes", "[sync]") {
    constexpr int rounds = 20;
    mproc::Barrier bar(4);
    CHECK(bar.parties() == 4);
    mproc::SharedArray<int> seen(4 * rounds, 0);  // seen[round * 4 + index]
    auto member = [&] {
        for (int round = 0; round < rounds; ++round) {
            auto index = bar.wait_for(30s);
            if (!index) return;
            seen[round * 4 + *index] += 1;  // each index is handed out once per round
        }
    };
    std::vector<mproc::Process<void>> children;
    for (int i = 0; i < 3; ++i) children.emplace_back(member);
    for (auto& c : children) c.start();
    member();  // the parent is the fourth member
    for (auto& c : children) REQUIRE(c.join(30s));
    for (int v : seen) CHECK(v == 1);
    CHECK(bar.n_waiting() == 0);
    CHECK_FALSE(bar.broken());
}

TEST_CASE("Barrier.member_dies.others_get_error", "[sync]") {
    mproc::Barrier bar(3);
    mproc::Process<void> victim([&] { (void)bar.wait_for(30s); });
    victim.start();
    auto t0 = clock_type::now();
    while (bar.n_waiting() < 1 && since(t0) < 10s) std::this_thread::sleep_for(1ms);
    REQUIRE(bar.n_waiting() == 1);
    mproc::Process survivor([&] {
        try {
            (void)bar.wait_for(30s);
            return 1;
        } catch (const mproc::BrokenBarrierError&) {
            return 0;
        }
    });
    survivor.start();
    while (bar.n_waiting() < 2 && since(t0) < 10s) std::this_thread::sleep_for(1ms);
    victim.kill();
    t0 = clock_type::now();
    CHECK(survivor.result() == 0);
    CHECK(since(t0) < 5s);
    CHECK(bar.broken());
    CHECK_THROWS_AS(bar.wait(), mproc::BrokenBarrierError);
    bar.reset();  // usable again once reset
    CHECK_FALSE(bar.broken());
    mproc_test::run_children(3, [&](int) { (void)bar.wait_for(30s); });
}

TEST_CASE("Barrier.abort_timeout_reset", "[sync]") {
    mproc::Barrier bar(2);
    mproc::Process waiter([&] {
        try {
            (void)bar.wait_for(30s);
            return 1;
        } catch (const mproc::BrokenBarrierError&) {
            return 0;
        }
    });
    waiter.start();
    auto t0 = clock_type::now();
    while (bar.n_waiting() < 1 && since(t0) < 10s) std::this_thread::sleep_for(1ms);
    bar.abort();
    CHECK(waiter.result() == 0);
    bar.reset();
    t0 = clock_type::now();
    CHECK_FALSE(bar.wait_for(50ms));  // alone: times out, and breaks the barrier
    CHECK(since(t0) >= 50ms);
    CHECK(bar.broken());
    bar.reset();
    CHECK_THROWS_AS(mproc::Barrier(0), mproc::StateError);
    mproc::Barrier one(1);
    CHECK(one.wait() == 0);
}

namespace {
volatile std::sig_atomic_t signals_seen = 0;
extern "C" void count_signal(int) { signals_seen = signals_seen + 1; }

// Installs a SIGUSR1 handler without SA_RESTART, so blocking calls see EINTR.
struct sigusr1_handler {
    sigusr1_handler() {
        struct sigaction sa {};
        sa.sa_handler = count_signal;
        sigemptyset(&sa.sa_mask);
        sa.sa_flags = 0;
        ::sigaction(SIGUSR1, &sa, &old);
        signals_seen = 0;
    }
    ~sigusr1_handler() { ::sigaction(SIGUSR1, &old, nullptr); }
    struct sigaction old {};
};

// A child that sends SIGUSR1 to the parent every 2 ms for `span`, then runs `then()`.
template <class Then>
mproc::Process<void> pester(std::chrono::milliseconds span, Then then) {
    const pid_t parent = ::getpid();
    mproc::Process<void> child([=]() mutable {
        for (auto t0 = clock_type::now(); since(t0) < span;) {
            ::kill(parent, SIGUSR1);
            std::this_thread::sleep_for(2ms);
        }
        then();
    });
    child.start();
    return child;
}
}  // namespace

TEST_CASE("Sync.eintr.waits_resume", "[sync]") {
    sigusr1_handler handler;
    mproc::Event ev;
    mproc::Semaphore sem(0);
    mproc::Lock lock;
    mproc::Condition cv;
    SECTION("timed waits still last their full timeout") {
        auto child = pester(300ms, [] {});
        auto t0 = clock_type::now();
        CHECK_FALSE(ev.wait_for(150ms));
        CHECK_FALSE(sem.try_acquire_for(50ms));
        {
            std::unique_lock lk(cv);
            CHECK_FALSE(cv.wait_for(lk, 50ms));
        }
        CHECK(since(t0) >= 250ms);
        child.join();
    }
    SECTION("blocking waits return when satisfied, not when interrupted") {
        auto child = pester(200ms, [=]() mutable {
            ev.set();
            sem.release();
        });
        auto t0 = clock_type::now();
        ev.wait();
        sem.acquire();
        CHECK(since(t0) >= 200ms);
        child.join();
    }
    SECTION("lock waits") {
        mproc::Event held;
        mproc::Process<void> holder([&] {
            std::lock_guard g(lock);
            held.set();
            std::this_thread::sleep_for(300ms);
        });
        holder.start();
        REQUIRE(held.wait_for(10s));
        auto child = pester(250ms, [] {});
        CHECK_FALSE(lock.try_acquire_for(100ms));
        lock.acquire();
        lock.release();
        child.join();
        holder.join();
    }
    CHECK(signals_seen > 0);
}

namespace {
int futex_calls = 0;
long interrupted_futex(std::uint32_t* word, int op, std::uint32_t value, const timespec* timeout) {
    if ((op & FUTEX_CMD_MASK) == FUTEX_WAIT && ++futex_calls % 2 == 1) {
        errno = EINTR;
        return -1;
    }
    return mproc::detail::raw_futex(word, op, value, timeout);
}
}  // namespace

TEST_CASE("Sync.eintr.injected_futex_failures", "[sync]") {
    mproc_test::ScopedSys sys;
    sys->futex = interrupted_futex;
    mproc::Event ev;
    auto t0 = clock_type::now();
    CHECK_FALSE(ev.wait_for(30ms));
    CHECK(since(t0) >= 30ms);
    CHECK(futex_calls > 0);
    mproc::detail::futex_word word{5};
    CHECK(mproc::detail::futex_wait(word, 4, mproc::detail::Deadline::never()) ==
          mproc::detail::futex_status::changed);
    CHECK(mproc::detail::futex_wait(word, 5, mproc::detail::Deadline::after(5ms)) ==
          mproc::detail::futex_status::timeout);
}

// A member whose round was released, but that died before it could leave (stopped, then
// killed), was no longer waiting: the next round must work, not find the barrier broken.
// After a member died, the barrier still works for two live parties: this process and a child
// both pass the next round, and it is not left broken.
void next_round_fills_and_releases(mproc::Barrier& bar) {
    mproc::Process next([&] { return bar.wait_for(10s).has_value(); });
    next.start();
    std::optional<std::size_t> mine;
    CHECK_NOTHROW(mine = bar.wait_for(10s));
    CHECK(mine.has_value());
    REQUIRE(next.join(15s));
    CHECK(next.exitcode() == 0);
    if (next.exitcode() == 0) CHECK(next.result());
    CHECK_FALSE(bar.broken());
}

TEST_CASE("Sync.barrier.member_dying_after_release_does_not_break_the_next_round", "[sync]") {
    mproc::Barrier bar(2);
    mproc::Process<void> late([&] { (void)bar.wait_for(30s); });
    late.start();
    const auto t0 = clock_type::now();
    while (bar.n_waiting() < 1 && since(t0) < 10s) std::this_thread::sleep_for(1ms);
    REQUIRE(bar.n_waiting() == 1);
    std::this_thread::sleep_for(20ms);  // asleep in the futex wait
    REQUIRE(::kill(late.pid(), SIGSTOP) == 0);
    REQUIRE(bar.wait_for(10s));  // releases the round; `late` cannot leave it while stopped
    late.kill();                 // now it dies, counted inside a released round
    REQUIRE(late.join(10s));
    next_round_fills_and_releases(bar);
}

// Every timed wait returns in time while the other side is stopped (SIGSTOP) holding what it
// waits for, and again once that side is dead.
TEST_CASE("Sync.timeouts.hold_with_a_stopped_or_dead_holder", "[sync]") {
    mproc::Lock lock;
    mproc::RLock rlock;
    mproc::Semaphore sem(1);
    mproc::Event never_set;
    mproc::Barrier bar(3);
    mproc::Event held;
    mproc::Process<void> holder([&] {
        lock.acquire();
        rlock.acquire();
        rlock.acquire();
        sem.acquire();
        held.set();
        (void)bar.wait_for(60s);  // one of three: the round never fills
        std::this_thread::sleep_for(60s);
    });
    holder.start();
    REQUIRE(held.wait_for(10s));
    const auto t1 = clock_type::now();
    while (bar.n_waiting() < 1 && since(t1) < 10s) std::this_thread::sleep_for(1ms);
    REQUIRE(::kill(holder.pid(), SIGSTOP) == 0);
    const auto in_time = [](auto&& wait) {
        const auto t0 = clock_type::now();
        const bool got = wait();
        const auto took = since(t0);
        CHECK(took >= 50ms);
        CHECK(took < 2s);
        return got;
    };
    for (int round = 0; round < 2; ++round) {
        INFO("round " << round << (round == 0 ? " (holder stopped)" : " (holder dead)"));
        if (round == 0) {
            CHECK_FALSE(in_time([&] { return lock.try_acquire_for(50ms); }));
            CHECK_FALSE(in_time([&] { return rlock.try_acquire_for(50ms); }));
        }
        CHECK_FALSE(in_time([&] { return sem.try_acquire_for(50ms); }));  // its unit is lost
        CHECK_FALSE(in_time([&] { return never_set.wait_for(50ms); }));
        mproc::Condition cv(lock);
        if (round == 1) {
            std::unique_lock lk(cv);
            CHECK(cv.owner_died());
            CHECK_FALSE(in_time([&] { return cv.wait_for(lk, 50ms); }));
        }
        if (round == 0) {
            CHECK_FALSE(in_time([&] { return bar.wait_for(50ms).has_value(); }));  // breaks it
            CHECK(bar.broken());
            holder.kill();
            REQUIRE(holder.join(10s));
        }
    }
    REQUIRE(rlock.try_acquire_for(5s));
    CHECK(rlock.owner_died());
    rlock.release();
}

// Waiters SIGKILLed while asleep on a Condition or an Event leave nothing broken: the lock is
// free (not owner-died), and the next waiter is woken by the next notify or set.
TEST_CASE("Sync.waiter_killed.condition_and_event_go_on", "[sync]") {
    mproc::Condition cv;
    mproc::Event ev;
    mproc::SharedValue<int> go(0);
    const auto waiter = [&] {
        return mproc::Process([&] {
            std::unique_lock lk(cv);
            go.value() += 1;  // announce under the lock: the parent's acquire means we wait
            if (!cv.wait_for(lk, 20s, [&] { return go.value() >= 100; })) return 1;
            lk.unlock();
            return ev.wait_for(20s) ? 0 : 2;
        });
    };
    auto doomed = waiter();
    doomed.start();
    const auto t0 = clock_type::now();
    while (go.get() < 1 && since(t0) < 10s) std::this_thread::sleep_for(1ms);
    doomed.kill();  // asleep in the condition's wait, not holding the lock
    REQUIRE(doomed.join(10s));
    mproc::Process<void> doomed_on_event([&] { (void)ev.wait_for(20s); });
    doomed_on_event.start();
    std::this_thread::sleep_for(50ms);  // asleep in the event's wait (or about to be)
    doomed_on_event.kill();
    REQUIRE(doomed_on_event.join(10s));
    auto next = waiter();
    next.start();
    while (go.get() < 2 && since(t0) < 10s) std::this_thread::sleep_for(1ms);
    {
        std::lock_guard g(cv);
        CHECK_FALSE(cv.owner_died());
        go.value() = 100;
        cv.notify();  // one wake-up: it must not go to the dead waiter
    }
    std::this_thread::sleep_for(50ms);
    ev.set();
    REQUIRE(next.join(15s));
    CHECK(next.exitcode() == 0);
    if (next.exitcode() == 0) CHECK(next.result() == 0);
}

// ---- README promises: a Barrier member that dies before wait(); release() of a Lock from
// another thread of the owner's process ----

// "A member that dies before reaching wait() looks like a slow one (use wait_for)": nothing
// breaks the barrier for it; wait_for() times out at its deadline, as with a member that is
// merely late (and, as in Python, that timeout then breaks the barrier until reset()).
TEST_CASE("Barrier.member_dies_before_wait.looks_like_a_slow_one", "[sync]") {
    for (bool while_waiting : {false, true}) {
        INFO((while_waiting ? "dies while the other waits" : "died before the other waits"));
        mproc::Barrier bar(2);
        mproc::Process<void> never_arrives([&, while_waiting] {
            const auto t0 = clock_type::now();
            while (while_waiting && bar.n_waiting() < 1 && since(t0) < 10s) std::this_thread::sleep_for(1ms);
            ::raise(SIGKILL);
            (void)bar.wait();  // never reached
        });
        never_arrives.start();
        if (!while_waiting) REQUIRE(never_arrives.join(10s));
        const auto t0 = clock_type::now();
        std::optional<std::size_t> mine{42};
        CHECK_NOTHROW(mine = bar.wait_for(400ms));
        CHECK_FALSE(mine.has_value());  // timed out, as with a slow member
        CHECK(since(t0) >= 400ms);
        REQUIRE(never_arrives.join(10s));
        CHECK(never_arrives.exitcode() == -SIGKILL);
        CHECK(bar.broken());  // by the timeout
        bar.reset();
        mproc::Process<void> arrives([&] { (void)bar.wait_for(30s); });
        arrives.start();
        CHECK(bar.wait_for(30s).has_value());  // usable again once reset
        REQUIRE(arrives.join(10s));
    }
}

// "Only the thread that acquired a Lock may release it": another thread of the same process
// (same pid, so a pid check would not see it) gets StateError, and the lock stays held.
TEST_CASE("Lock.release_from_another_thread_of_the_owners_process", "[sync]") {
    mproc::Lock lock;
    lock.acquire();
    bool refused = false;
    std::thread other([&] {
        try {
            lock.release();
        } catch (const mproc::StateError&) {
            refused = true;
        }
    });
    other.join();
    CHECK(refused);
    std::optional<bool> got;
    std::thread taker([&] { got = lock.try_acquire_for(50ms); });  // still held by this thread
    taker.join();
    CHECK(got == false);
    mproc::Process elsewhere([&] { return lock.try_acquire_for(50ms); });
    elsewhere.start();
    CHECK_FALSE(elsewhere.result());
    lock.release();  // the owner's release works
    CHECK(lock.try_acquire());
    lock.release();
}

namespace {
// The notifier of the lost-wake test dies between changing the word and its futex wake: its
// FUTEX_WAKE never happens. FUTEX_WAITs go through, and the last word waited on is remembered
// so that a failing run can still free its waiter.
// The seam is installed once, before the waiter starts (swapping it while the waiter reads it
// would be a data race); `dropping_wakes` turns the notifier's death on.
std::atomic<int> dropped_wakes{0};
std::atomic<bool> dropping_wakes{false};
std::atomic<std::uint32_t*> last_waited_word{nullptr};
long futex_recording_waits(std::uint32_t* word, int op, std::uint32_t value, const timespec* timeout) {
    if ((op & FUTEX_CMD_MASK) == FUTEX_WAIT) last_waited_word = word;
    return mproc::detail::raw_futex(word, op, value, timeout);
}
long futex_without_wakes(std::uint32_t* word, int op, std::uint32_t value, const timespec* timeout) {
    if ((op & FUTEX_CMD_MASK) == FUTEX_WAKE && dropping_wakes) {
        dropped_wakes.fetch_add(1);
        return 0;
    }
    return futex_recording_waits(word, op, value, timeout);
}

// The system call thread `tid` of this process is blocked in, or -1 while it runs.
long blocked_syscall(pid_t tid) {
    std::ifstream file("/proc/self/task/" + std::to_string(tid) + "/syscall");
    long number = -1;
    return file >> number ? number : -1;
}
}  // namespace

// A notifier killed between its counter bump and its futex wake must not leave an untimed
// wait() asleep for ever: the waiter is certainly asleep in FUTEX_WAIT (the kernel says so) when
// the flag is set, and the wake that set() owes it is dropped.
TEST_CASE("Sync.lost_wake.untimed_wait_rechecks_its_word", "[sync][fault]") {
    mproc_test::ScopedSys sys;
    sys->futex = futex_without_wakes;
    mproc::Event ev;
    std::atomic<pid_t> tid{0};
    std::promise<void> returned;
    std::future<void> waited = returned.get_future();
    std::thread waiter([&] {
        tid = static_cast<pid_t>(::syscall(SYS_gettid));
        ev.wait();
        returned.set_value();
    });
    const auto t0 = clock_type::now();
    while ((tid == 0 || blocked_syscall(tid) != SYS_futex) && since(t0) < 10s)
        std::this_thread::sleep_for(1ms);
    REQUIRE(blocked_syscall(tid) == SYS_futex);
    dropping_wakes = true;
    ev.set();
    CHECK(dropped_wakes == 1);  // the wake was due (the waiter was counted) and was lost
    const bool woke = waited.wait_for(10s) == std::future_status::ready;
    CHECK(woke);
    if (!woke) (void)mproc::detail::raw_futex(last_waited_word, FUTEX_WAKE, INT_MAX, nullptr);
    waiter.join();
}

// A member killed inside the barrier's own critical section, counted in `inside` but before it
// took its slot (the test hook kills it at exactly that point): the barrier is broken, and after
// reset() the next round fills and releases instead of waiting for the dead member to leave.
TEST_CASE("Sync.barrier.member_dying_inside_the_critical_section_is_counted_out", "[sync][fault]") {
    mproc::Barrier bar(2);
    mproc::Process<void> victim([&] {
        mproc::detail::barrier_counted_hook = [] { ::raise(SIGKILL); };
        (void)bar.wait_for(30s);
    });
    victim.start();
    REQUIRE(victim.join(10s));
    REQUIRE(victim.exitcode() == -SIGKILL);
    CHECK_THROWS_AS(bar.wait_for(10s), mproc::BrokenBarrierError);
    CHECK(bar.broken());
    bar.reset();
    CHECK_FALSE(bar.broken());
    next_round_fills_and_releases(bar);
}

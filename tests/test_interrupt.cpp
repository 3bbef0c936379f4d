// Ctrl-C during a Pool's waits: InterruptScope turns SIGINT into mproc::Interrupted, and
// PoolOptions::on_interrupt lets a program with its own handler stop a wait.
#include "support.hpp"

#include <mproc/interrupt.hpp>
#include <mproc/pool.hpp>

#include <catch2/catch.hpp>

#include <pthread.h>
#include <signal.h>

#include <atomic>
#include <chrono>
#include <stdexcept>
#include <thread>
#include <vector>

using namespace std::chrono_literals;

namespace {
int sleep_ms(int ms) {
    std::this_thread::sleep_for(std::chrono::milliseconds(ms));
    return ms;
}

// Sends `sig` to `thread` (this process's) after `delay`, from another thread; joins on scope exit.
class DelayedSignal {
public:
    DelayedSignal(int sig, std::chrono::milliseconds delay, pthread_t thread = ::pthread_self())
        : sender_([=] {
              std::this_thread::sleep_for(delay);
              ::pthread_kill(thread, sig);
          }) {}
    ~DelayedSignal() { sender_.join(); }

private:
    std::thread sender_;
};

using clock_type = std::chrono::steady_clock;
}  // namespace

TEST_CASE("Interrupt.ctrl_c_ends_a_map_and_the_pool_goes_on", "[pool][interrupt]") {
    const auto method = GENERATE(mproc_test::every_start_method());
    CAPTURE(method);
    mproc::Pool pool(mproc_test::pool_options(method));
    const auto pids_before = pool.pids();
    {
        mproc::InterruptScope ctrl_c;
        CHECK_FALSE(ctrl_c.interrupted());
        const auto t0 = clock_type::now();
        {
            // The signal goes to the sender thread itself: the handler runs there, and the
            // main thread's wait must still wake.
            std::thread sender([] {
                std::this_thread::sleep_for(300ms);
                ::kill(::getpid(), SIGINT);
            });
            CHECK_THROWS_AS(pool.map(sleep_ms, std::vector<int>(40, 30000), 1), mproc::Interrupted);
            sender.join();
        }
        CHECK(clock_type::now() - t0 < 2s);  // the tasks would take 10 minutes
        CHECK(ctrl_c.interrupted());
    }
    // The workers that ran the 30-second tasks were replaced; the pool works at once.
    const auto t1 = clock_type::now();
    CHECK(pool.map(sleep_ms, std::vector<int>{1, 2, 3}) == std::vector<int>{1, 2, 3});
    CHECK(clock_type::now() - t1 < 2s);
    CHECK(pool.pids() != pids_before);
}

TEST_CASE("Interrupt.future_get_and_imap", "[pool][interrupt]") {
    mproc::Pool pool(2);
    mproc::InterruptScope ctrl_c;
    auto slow = pool.submit(sleep_ms, 1500);
    {
        DelayedSignal sig(SIGINT, 200ms);
        CHECK_THROWS_AS(slow.get(), mproc::Interrupted);
    }
    CHECK(slow.get() == 1500);  // the task went on; its future is still good
    std::vector<int> seen;
    {
        DelayedSignal sig(SIGINT, 300ms);
        auto results = pool.imap(sleep_ms, std::vector<int>{1, 2, 30000, 4});
        try {
            for (int x : results) seen.push_back(x);
            FAIL("imap was not interrupted");
        } catch (const mproc::Interrupted&) {
        }
    }
    CHECK(seen == std::vector<int>{1, 2});
    CHECK(pool.apply(sleep_ms, 5) == 5);
}

namespace {
volatile sig_atomic_t user_stop = 0;
void user_handler(int) { user_stop = 1; }
}  // namespace

TEST_CASE("Interrupt.on_interrupt_hook_with_the_programs_own_handler", "[pool][interrupt]") {
    struct sigaction action {}, previous {};
    action.sa_handler = user_handler;
    sigemptyset(&action.sa_mask);
    REQUIRE(::sigaction(SIGUSR1, &action, &previous) == 0);
    mproc::PoolOptions opts;
    opts.processes = 2;
    opts.on_interrupt = [] {
        if (user_stop) throw std::runtime_error("stopped by the user's handler");
    };
    mproc::Pool pool(opts);
    const auto t0 = clock_type::now();
    {
        DelayedSignal sig(SIGUSR1, 300ms);
        CHECK_THROWS_WITH(pool.map(sleep_ms, std::vector<int>(10, 30000), 1), "stopped by the user's handler");
    }
    CHECK(clock_type::now() - t0 < 2s);
    CHECK(pool.map(sleep_ms, std::vector<int>{7}) == std::vector<int>{7});
    ::sigaction(SIGUSR1, &previous, nullptr);
    user_stop = 0;
}

TEST_CASE("Interrupt.scope_restores_the_previous_disposition", "[interrupt]") {
    struct sigaction before {}, after {};
    ::sigaction(SIGINT, nullptr, &before);
    {
        mproc::InterruptScope outer;
        mproc::InterruptScope inner;
        struct sigaction during {};
        ::sigaction(SIGINT, nullptr, &during);
        CHECK(during.sa_handler != before.sa_handler);
    }
    ::sigaction(SIGINT, nullptr, &after);
    CHECK(after.sa_handler == before.sa_handler);
}

// ---- README promises: Interrupted from join() and fork_map, an interrupted map cancels its
// queued tasks, workers ignore a SIGINT sent to the whole process group ----
// (Their includes are here, so that this block merges cleanly beside edits above it.)

#include <mproc/fork_map.hpp>

#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <set>
#include <string>

TEST_CASE("Interrupt.pool_join_and_fork_map", "[pool][interrupt]") {
    mproc::InterruptScope ctrl_c;
    {
        mproc::Pool pool(2);
        auto slow = pool.submit(sleep_ms, 30000);
        pool.close();
        const auto t0 = clock_type::now();
        {
            DelayedSignal sig(SIGINT, 300ms);
            CHECK_THROWS_AS(pool.join(), mproc::Interrupted);
        }
        CHECK(clock_type::now() - t0 < 2s);  // the task would take 30 s
    }  // the destructor stops the worker still in its task
    mproc::PoolOptions two;
    two.processes = 2;
    const auto t0 = clock_type::now();
    {
        DelayedSignal sig(SIGINT, 300ms);
        CHECK_THROWS_AS(mproc::fork_map([](int ms) { return sleep_ms(ms); }, std::vector<int>(8, 30000), two),
                        mproc::Interrupted);
    }
    CHECK(clock_type::now() - t0 < 2s);
    CHECK(ctrl_c.interrupted());
    CHECK(mproc_test::no_children_left());  // fork_map's workers are gone, reaped
}

namespace {
std::atomic<int>* tasks_started = nullptr;  // in a shared mapping made before the pool

int counted_sleep(int ms) {
    tasks_started->fetch_add(1);
    return sleep_ms(ms);
}
}  // namespace

// Short tasks: the running ones end within the 100 ms of grace, so no worker is killed and
// nothing but the cancellation keeps the idle workers from starting the queued tasks.
TEST_CASE("Interrupt.map_cancels_its_queued_tasks", "[pool][interrupt]") {
    void* shared = ::mmap(nullptr, sizeof(std::atomic<int>), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    REQUIRE(shared != MAP_FAILED);
    tasks_started = new (shared) std::atomic<int>(0);
    {
        mproc::Pool pool(2);
        std::atomic<int> at_signal{-1};
        {
            mproc::InterruptScope ctrl_c;
            std::thread sender([&, main = ::pthread_self()] {
                std::this_thread::sleep_for(300ms);
                at_signal = tasks_started->load();
                ::pthread_kill(main, SIGINT);
            });
            CHECK_THROWS_AS(pool.map(counted_sleep, std::vector<int>(200, 20), 1), mproc::Interrupted);
            sender.join();
        }
        // Each worker may have claimed one more task as the signal arrived; then none.
        const int at_throw = tasks_started->load();
        INFO("started: " << at_signal.load() << " at the signal, " << at_throw << " when map threw");
        CHECK(at_throw <= at_signal.load() + 2);
        CHECK(at_throw < 200);
        CHECK(pool.map(sleep_ms, std::vector<int>{1, 2, 3, 4}, 1) == std::vector<int>{1, 2, 3, 4});
        std::this_thread::sleep_for(200ms);
        CHECK(tasks_started->load() == at_throw);  // the idle workers never started the rest
    }
    ::munmap(shared, sizeof(std::atomic<int>));
}

namespace {
int pid_after_sleep(int ms) {
    sleep_ms(ms);
    return static_cast<int>(::getpid());
}
}  // namespace

// Ctrl-C in a terminal signals the whole foreground process group, the workers included. They
// ignore it: the parent decides (here, inside an InterruptScope, it goes on).
TEST_CASE("Interrupt.workers_ignore_sigint_sent_to_the_process_group", "[pool][interrupt]") {
    const auto method = GENERATE(mproc_test::every_start_method());
    CAPTURE(method);
    // A child that leads its own group, so that the signal reaches nothing but it and its workers
    // (and its own forkserver: a forked child starts its own).
    mproc::Process group([method]() -> std::string {
        if (::setpgid(0, 0) != 0) return "setpgid failed";
        // The pool first: its workers are forked with SIGINT's default action (they would
        // inherit the scope's handler otherwise), which would kill them if they did not ignore it.
        mproc::Pool pool(mproc_test::pool_options(method));
        mproc::InterruptScope ctrl_c;
        const auto workers = pool.pids();
        // Every worker runs a task first, so that each is past its start (the window between a
        // worker's fork and its first line has its own test below).
        std::set<int> ran;
        for (const auto give_up = clock_type::now() + 10s; ran.size() < workers.size() && clock_type::now() < give_up;)
            for (int pid : pool.map(pid_after_sleep, std::vector<int>(workers.size(), 30), 1)) ran.insert(pid);
        if (ran.size() != workers.size()) return "a worker never ran a task";
        ::kill(0, SIGINT);  // the whole group, as the terminal does
        if (!ctrl_c.interrupted()) return "the signal did not reach the group";
        // A pending signal is acted on before a process runs any more of its code: a worker
        // that runs a task now has met its SIGINT.
        for (int pid : pool.map(pid_after_sleep, std::vector<int>(8, 30), 1))
            if (std::find(workers.begin(), workers.end(), pid) == workers.end())
                return "a task ran on a new worker " + std::to_string(pid);
        std::this_thread::sleep_for(100ms);
        for (pid_t p : workers)
            if (!mproc_test::running(p)) return "worker " + std::to_string(p) + " died";
        if (pool.pids() != workers) return "a worker was replaced";
        return "";
    });
    group.start();
    REQUIRE(group.join(30s));
    CHECK(group.result() == "");
}

// The window between a worker's fork and its first line: a SIGINT that lands there (the fork
// seam raises one in every new child before it returns, so the moment is certain) must not kill
// the worker. Without the blocked-then-ignored SIGINT of fork_child, every worker dies at birth.
pid_t fork_then_sigint() {
    const pid_t pid = ::fork();
    if (pid == 0) ::raise(SIGINT);
    return pid;
}

TEST_CASE("Interrupt.sigint_between_a_workers_fork_and_its_first_line", "[pool][interrupt]") {
    mproc::Process child([]() -> std::string {
        mproc_test::ScopedSys sys;
        sys->fork = fork_then_sigint;
        mproc::Pool pool(2);
        const auto workers = pool.pids();
        if (pool.map(pid_after_sleep, std::vector<int>(4, 1), 1).size() != 4) return "the map failed";
        if (pool.pids() != workers) return "a worker died of the SIGINT raised at its fork";
        return "";
    });
    child.start();
    REQUIRE(child.join(30s));
    CHECK(child.result() == "");
}

// The same window for workers started by exec: a SIGINT raised in the new program before
// mproc::init (spawn's worker, the forkserver itself) and in a forkserver's child as it reads its
// request (the hook in tests/test_main.cpp, switched on by the environment) must kill neither.
// Without SIGINT blocked from the exec on (and kept ignored in the server's children), every
// spawned worker dies at birth and the forkserver dies before it serves anyone.
TEST_CASE("Interrupt.sigint_between_a_workers_exec_and_its_first_line", "[pool][interrupt]") {
    const auto method = GENERATE(mproc::StartMethod::spawn, mproc::StartMethod::forkserver);
    CAPTURE(method);
    mproc::Process child([method]() -> std::string {
        // In a forked child: the environment, and the forkserver it starts, are its own.
        if (::setenv("MPROC_TEST_SIGINT_AT_START", "1", 1) != 0) return "setenv failed";
        mproc::Pool pool(mproc_test::pool_options(method));
        const auto workers = pool.pids();
        std::vector<mproc::Future<int>> tasks;
        for (int i = 0; i < 4; ++i) tasks.push_back(pool.submit(pid_after_sleep, 1));
        for (auto& task : tasks)
            if (!task.wait_for(10s)) return "no worker lived to run a task";
        if (pool.pids() != workers) return "a worker died of the SIGINT raised at its start";
        return "";
    });
    child.start();
    REQUIRE(child.join(60s));
    CHECK(child.result() == "");
}

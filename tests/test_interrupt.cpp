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
    const auto method = GENERATE(mproc::StartMethod::fork, mproc::StartMethod::forkserver, mproc::StartMethod::spawn);
    INFO("start method " << static_cast<int>(method));
    mproc::PoolOptions opts;
    opts.processes = 2;
    opts.start_method = method;
    mproc::Pool pool(opts);
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

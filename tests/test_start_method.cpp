// Start methods: spawn (the program executed afresh) and forkserver (forks of a server started by
// exec), through mproc::init in tests/test_main.cpp.
#include "support.hpp"

#include <mproc/pool.hpp>
#include <mproc/process.hpp>
#include <mproc/start_method.hpp>

#include <catch2/catch.hpp>

#include <fcntl.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <csignal>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

using namespace std::chrono_literals;
using mproc_test::pool_options;
using mproc_test::running;

namespace {

int square(int n) { return n * n; }

// Changed by the caller before start: a fresh program sees the value it starts with.
int changed_in_parent = 1;
int read_changed_in_parent() { return changed_in_parent; }

std::string throw_range_error(std::string what) { throw std::out_of_range(what); }

int kill_self() {
    ::raise(SIGKILL);
    return 0;
}

int sleep_forever() {
    for (;;) ::pause();
}

pid_t parent_of_child() { return ::getppid(); }

// Held forever by one of the caller's threads; the task locks it too.
std::mutex held_by_a_thread;
int lock_the_held_mutex(int n) {
    std::lock_guard guard(held_by_a_thread);
    return n + 1;
}

/// 8 threads, one of which holds held_by_a_thread until the scope ends.
class BusyThreads {
public:
    BusyThreads() {
        threads_.emplace_back([this] {
            std::lock_guard guard(held_by_a_thread);
            locked_ = true;
            while (!stop_) std::this_thread::sleep_for(1ms);
        });
        for (int i = 0; i < 7; ++i)
            threads_.emplace_back([this] {
                while (!stop_) std::this_thread::sleep_for(1ms);
            });
        while (!locked_) std::this_thread::sleep_for(1ms);
    }
    ~BusyThreads() {
        stop_ = true;
        for (auto& t : threads_) t.join();
    }

private:
    std::atomic<bool> stop_{false}, locked_{false};
    std::vector<std::thread> threads_;
};

/// Restores the executable mproc::init recorded when a test has changed it.
struct ImageRestorer {
    mproc::detail::exec_image saved = mproc::detail::image();
    ~ImageRestorer() { mproc::detail::image() = saved; }
};

const mproc::StartMethod exec_methods[] = {mproc::StartMethod::spawn, mproc::StartMethod::forkserver};

}  // namespace

TEST_CASE("StartMethod.process.result", "[start_method]") {
    mproc::Process s(square, 12);
    s.start(mproc::spawn);
    CHECK(s.result() == 144);
    CHECK(s.exitcode() == 0);
    mproc::Process f(square, 13);
    f.start(mproc::forkserver);
    CHECK(f.result() == 169);
    CHECK(f.exitcode() == 0);
    // A captureless lambda travels by its type.
    mproc::Process l([](std::string a, std::string b) { return a + b; }, std::string("spa"), std::string("wn"));
    l.start(mproc::spawn);
    CHECK(l.result() == "spawn");
}

TEST_CASE("StartMethod.process.fresh_program", "[start_method]") {
    changed_in_parent = 2;
    for (auto method : exec_methods) {
        CAPTURE(method);
        mproc::Process p(read_changed_in_parent);
        p.start(method);
        CHECK(p.result() == 1);  // not the caller's 2
    }
    mproc::Process forked(read_changed_in_parent);
    forked.start();
    CHECK(forked.result() == 2);
    changed_in_parent = 1;
}

TEST_CASE("StartMethod.process.parent", "[start_method]") {
    mproc::Process s(parent_of_child);
    s.start(mproc::spawn);
    CHECK(s.result() == ::getpid());
    mproc::Process f(parent_of_child);
    f.start(mproc::forkserver);
    const pid_t server = mproc::detail::forkserver_connection().server_pid();
    CHECK(server > 0);
    CHECK(f.result() == server);
}

TEST_CASE("StartMethod.process.exception", "[start_method]") {
    for (auto method : exec_methods) {
        CAPTURE(method);
        mproc::Process p(throw_range_error, std::string("far away"));
        p.start(method);
        try {
            (void)p.result();
            FAIL("no exception");
        } catch (const mproc::RemoteError& e) {
            CHECK(std::string(e.what()).find("std::out_of_range") != std::string::npos);
            CHECK(std::string(e.what()).find("far away") != std::string::npos);
        }
        CHECK(p.exitcode() == 1);
    }
}

TEST_CASE("StartMethod.process.crash_reports_signal", "[start_method]") {
    for (auto method : exec_methods) {
        CAPTURE(method);
        mproc::Process p(kill_self);
        p.start(method);
        CHECK_THROWS_AS(p.result(), mproc::ProcessCrashed);
        CHECK(p.exitcode() == -SIGKILL);
    }
}

TEST_CASE("StartMethod.process.kill_and_timeout", "[start_method]") {
    for (auto method : exec_methods) {
        CAPTURE(method);
        mproc::Process p(sleep_forever);
        p.start(method);
        CHECK_FALSE(p.join(100ms));
        CHECK(p.is_alive());
        p.kill();
        REQUIRE(p.join(10s));
        CHECK(p.exitcode() == -SIGKILL);
    }
}

TEST_CASE("StartMethod.process.destructor_stops_child", "[start_method]") {
    for (auto method : exec_methods) {
        CAPTURE(method);
        pid_t pid = 0;
        {
            mproc::Process p(sleep_forever);
            p.terminate_grace = 100ms;
            p.start(method);
            pid = p.pid();
        }
        // Gone, and (for spawn, our own child) reaped: no zombie.
        const auto until = std::chrono::steady_clock::now() + 5s;
        while (::kill(pid, 0) == 0 && std::chrono::steady_clock::now() < until) std::this_thread::sleep_for(1ms);
        CHECK(::kill(pid, 0) != 0);
    }
}

namespace {
bool sigint_has_its_default_action() {
    struct sigaction now {};
    return ::sigaction(SIGINT, nullptr, &now) == 0 && now.sa_handler == SIG_DFL;
}
}  // namespace

// An exec'd process starts with SIGINT blocked, then ignored (a Pool worker must not die of a
// Ctrl-C before its first line); a Process's callable gets the default action back, as a
// program started afresh has it.
TEST_CASE("StartMethod.process.sigint_has_its_default_action", "[start_method]") {
    for (auto method : exec_methods) {
        CAPTURE(method);
        mproc::Process p(sigint_has_its_default_action);
        p.start(method);
        CHECK(p.result());
    }
}

TEST_CASE("StartMethod.process.default_method", "[start_method]") {
    changed_in_parent = 2;
    mproc::set_start_method(mproc::StartMethod::spawn);
    mproc::Process p(read_changed_in_parent);
    p.start();
    mproc::set_start_method(mproc::StartMethod::fork);
    CHECK(p.result() == 1);
    mproc::Process tagged(mproc::forkserver, read_changed_in_parent);
    tagged.start();  // the constructor's method
    CHECK(tagged.result() == 1);
    changed_in_parent = 1;
}

TEST_CASE("StartMethod.process.stateful_callable_refused", "[start_method]") {
    int captured = 5;
    mproc::Process p([captured] { return captured; });
    CHECK_THROWS_WITH(p.start(mproc::spawn), Catch::Contains("must be stateless"));
    CHECK(p.pid() == 0);
}

TEST_CASE("StartMethod.process.without_init", "[start_method]") {
    ImageRestorer restore;
    mproc::detail::image().initialized = false;
    for (auto method : exec_methods) {
        CAPTURE(method);
        mproc::Process p(square, 2);
        if (method == mproc::StartMethod::forkserver && mproc::detail::forkserver_connection().server_pid() != 0)
            continue;  // a running server needs no new exec
        CHECK_THROWS_WITH(p.start(method), Catch::Contains("mproc::init(argc, argv)"));
        CHECK_THROWS_AS(mproc::Process(square, 2).start(method), mproc::StateError);
    }
}

TEST_CASE("StartMethod.process.executable_changed_on_disk", "[start_method]") {
    ImageRestorer restore;
    const std::string copy = "/tmp/mproc_test_exe_" + std::to_string(::getpid());
    std::filesystem::copy_file("/proc/self/exe", copy, std::filesystem::copy_options::overwrite_existing);
    std::filesystem::permissions(copy, std::filesystem::perms::owner_all);
    mproc::detail::record_image(restore.saved.argv0.c_str(), copy);
    {
        mproc::Process same(square, 3);
        same.start(mproc::spawn);  // the copy is the same program
        CHECK(same.result() == 9);
    }
    {
        // An upgrade in place: the file that exec would run is no longer the program.
        int fd = ::open(copy.c_str(), O_WRONLY | O_APPEND);
        REQUIRE(fd >= 0);
        REQUIRE(::write(fd, "x", 1) == 1);
        ::close(fd);
        mproc::Process changed(square, 3);
        CHECK_THROWS_WITH(changed.start(mproc::spawn), Catch::Contains("was changed on disk after mproc::init"));
    }
    std::filesystem::remove(copy);
}

TEST_CASE("StartMethod.process.threads_holding_a_lock", "[start_method]") {
    BusyThreads busy;
    SECTION("fork: the child inherits the lock held by another thread and hangs") {
        mproc::Process p(lock_the_held_mutex, 1);
        p.start();
        CHECK_FALSE(p.join(1s));
        p.kill();
        REQUIRE(p.join(10s));
    }
    SECTION("spawn and forkserver: a fresh program, no lock held") {
        for (auto method : exec_methods) {
            CAPTURE(method);
            for (int i = 0; i < 20; ++i) {
                mproc::Process p(lock_the_held_mutex, i);
                p.start(method);
                REQUIRE(p.join(30s));
                CHECK(p.result() == i + 1);
            }
        }
    }
}

TEST_CASE("StartMethod.process.children_die_with_the_parent", "[start_method]") {
    for (auto method : exec_methods) {
        CAPTURE(method);
        int fds[2];
        REQUIRE(::pipe2(fds, O_CLOEXEC) == 0);
        // A middle process (forked) starts a child by `method`, says who it and the server are,
        // and is then SIGKILLed: both must end.
        mproc::Process middle([&, method] {
            ::close(fds[0]);
            mproc::Process child(sleep_forever);
            child.start(method);
            const pid_t pids[2] = {child.pid(), mproc::detail::forkserver_connection().server_pid()};
            if (::write(fds[1], pids, sizeof pids) != sizeof pids) return;
            sleep_forever();
        });
        middle.start();
        ::close(fds[1]);
        pid_t pids[2] = {0, 0};
        REQUIRE(::read(fds[0], pids, sizeof pids) == sizeof pids);
        ::close(fds[0]);
        REQUIRE(running(pids[0]));
        if (method == mproc::StartMethod::forkserver) REQUIRE(running(pids[1]));
        middle.kill();
        REQUIRE(middle.join(10s));
        const auto until = std::chrono::steady_clock::now() + 2s;
        while ((running(pids[0]) || (pids[1] > 0 && running(pids[1]))) && std::chrono::steady_clock::now() < until)
            std::this_thread::sleep_for(1ms);
        CHECK_FALSE(running(pids[0]));
        if (pids[1] > 0) CHECK_FALSE(running(pids[1]));
    }
}

namespace {
bool is_odd(int n) { return n % 2 != 0; }
}  // namespace

TEST_CASE("StartMethod.pool.map", "[start_method]") {
    std::vector<int> numbers(1000);
    for (int i = 0; i < 1000; ++i) numbers[i] = i;
    for (auto method : exec_methods) {
        CAPTURE(method);
        changed_in_parent = 2;  // before the workers start: forked ones would see it
        mproc::Pool pool(pool_options(method));
        const auto flags = pool.map(is_odd, numbers);
        REQUIRE(flags.size() == numbers.size());
        for (int i = 0; i < 1000; ++i) CHECK(flags[i] == (i % 2 != 0));
        CHECK(pool.submit([](std::string s) { return s + "!"; }, std::string("spawned")).get() == "spawned!");
        CHECK(pool.apply([](int) { return read_changed_in_parent(); }, 0) == 1);  // a fresh program
        changed_in_parent = 1;
    }
}

TEST_CASE("StartMethod.pool.threads_holding_a_lock", "[start_method]") {
    BusyThreads busy;
    const std::vector<int> numbers{1, 2, 3, 4};
    SECTION("fork: the task hangs on the inherited lock and task_timeout reports it") {
        auto opts = pool_options(mproc::StartMethod::fork);
        opts.task_timeout = 500ms;
        mproc::Pool pool(opts);
        CHECK_THROWS_AS(pool.map(lock_the_held_mutex, numbers), mproc::TimeoutError);
    }
    SECTION("spawn and forkserver: 100 of 100 maps succeed") {
        for (auto method : exec_methods) {
            CAPTURE(method);
            auto opts = pool_options(method);
            opts.task_timeout = 30s;
            mproc::Pool pool(opts);
            int ok = 0;
            for (int i = 0; i < 100; ++i) ok += pool.map(lock_the_held_mutex, numbers) == std::vector<int>{2, 3, 4, 5};
            CHECK(ok == 100);
        }
    }
}

TEST_CASE("StartMethod.process.many_never_waited", "[start_method]") {
    // Children that end while nobody waits for them: their statuses pile up at the forkserver
    // until read, which must not stop it from starting more.
    std::vector<mproc::Process<int>> children;
    for (int i = 0; i < 3000; ++i) {
        children.emplace_back(square, i);
        children.back().start(mproc::forkserver);
    }
    for (int i = 0; i < 3000; ++i) CHECK(children[i].result() == i * i);
}

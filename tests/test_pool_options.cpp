#include "support.hpp"

#include <mproc/pool.hpp>
#include <mproc/shared.hpp>

#include <catch2/catch.hpp>

#include <pty.h>
#include <sys/wait.h>

#include <algorithm>
#include <chrono>
#include <set>
#include <stdexcept>
#include <string>
#include <thread>
#include <utility>
#include <vector>

using namespace std::chrono_literals;

namespace {
// What the initializer did in the worker that runs a task: how many times it ran there, and
// when it last did (CLOCK_MONOTONIC, one clock for every process).
int initializer_runs = 0;
std::int64_t initialized_at_ns = 0;
void count_initializer_run() {
    ++initializer_runs;
    initialized_at_ns = mproc::detail::monotonic_ns();
}
std::pair<int, std::int64_t> initializer_seen_by_a_task(int) {
    std::this_thread::sleep_for(2ms);  // so that every worker takes some tasks
    return {initializer_runs, initialized_at_ns};
}
}  // namespace

TEST_CASE("PoolOptions.initializer_runs_once_per_worker", "[pool][options]") {
    const auto method = GENERATE(mproc_test::every_start_method());
    CAPTURE(method);
    auto opts = mproc_test::pool_options(method, 3);
    opts.initializer = count_initializer_run;
    std::int64_t constructed_at_ns = 0;
    {
        mproc::Pool pool(opts);
        constructed_at_ns = mproc::detail::monotonic_ns();
        for (const auto& [runs, at_ns] : pool.map(initializer_seen_by_a_task, std::vector<int>(30, 0), 1)) {
            CHECK(runs == 1);
            CHECK(at_ns <= constructed_at_ns);  // the constructor waits for every initializer
        }
        CHECK(initializer_runs == 0);  // it ran in the workers, not here
    }
    mproc::SharedValue<long> runs(0);
    auto capturing = mproc_test::pool_options(method, 3);
    capturing.initializer = [runs]() mutable { runs.fetch_add(1); };
    if (method == mproc::StartMethod::fork) {
        // A forked worker runs the parent's own std::function: it may capture anything.
        mproc::Pool pool(capturing);
        CHECK(runs.load() == 3);
        CHECK(pool.map([](int x) { return x + 1; }, std::vector<int>{1, 2, 3}) == std::vector<int>{2, 3, 4});
        CHECK(runs.load() == 3);
    } else {
        // A fresh program cannot see the caller's variables: refused, before any worker starts.
        CHECK_THROWS_WITH(mproc::Pool(capturing), Catch::Contains("the initializer must be a plain function"));
        CHECK(runs.load() == 0);
    }
}

TEST_CASE("PoolOptions.initializer_that_throws_fails_the_constructor", "[pool][options]") {
    const auto method = GENERATE(mproc_test::every_start_method());
    CAPTURE(method);
    auto opts = mproc_test::pool_options(method);
    opts.initializer = +[] { throw std::runtime_error("no database"); };
    try {
        mproc::Pool pool(opts);
        FAIL("the constructor did not throw");
    } catch (const mproc::RemoteError& e) {
        CHECK(e.type_name() == "std::runtime_error");
        CHECK(e.message().find("no database") != std::string::npos);
    }
    CHECK(mproc_test::no_children_left());
}

TEST_CASE("PoolOptions.max_tasks_per_child_replaces_workers", "[pool][options]") {
    const auto method = GENERATE(mproc_test::every_start_method());
    CAPTURE(method);
    auto opts = mproc_test::pool_options(method);
    opts.max_tasks_per_child = 1;
    mproc::Pool pool(opts);
    const auto pids = pool.map([](int) { return static_cast<int>(::getpid()); }, std::vector<int>(10, 0), 1);
    CHECK(std::set<int>(pids.begin(), pids.end()).size() == 10);  // every task in a fresh worker
    CHECK(pool.map([](int x) { return x * 2; }, std::vector<int>{1, 2, 3}, 1) == std::vector<int>{2, 4, 6});
}

TEST_CASE("PoolOptions.task_timeout_kills_only_the_slow_task", "[pool][options]") {
    const auto method = GENERATE(mproc_test::every_start_method());
    CAPTURE(method);
    auto opts = mproc_test::pool_options(method);
    opts.task_timeout = 200ms;
    mproc::Pool pool(opts);
    const auto before = pool.pids();
    const auto t0 = std::chrono::steady_clock::now();
    auto slow = pool.submit([] {
        std::this_thread::sleep_for(30s);
        return 0;
    });
    std::vector<mproc::Future<int>> quick;
    for (int i = 0; i < 4; ++i) quick.push_back(pool.submit([](int x) { return x * 10; }, i));
    try {
        (void)slow.get();
        FAIL("the slow task was not stopped");
    } catch (const mproc::TimeoutError& e) {
        CHECK(e.task_index() == 0u);
    }
    CHECK(std::chrono::steady_clock::now() - t0 < 5s);
    for (int i = 0; i < 4; ++i) CHECK(quick[static_cast<std::size_t>(i)].get() == i * 10);
    CHECK(pool.apply([](int x) { return x; }, 7) == 7);  // a replacement took the killed worker's place
    // Only the slow task's worker was killed: the other one is still there, beside a replacement.
    const auto after = pool.pids();
    REQUIRE(before.size() == 2);
    CHECK(after.size() == 2);
    CHECK(std::set<pid_t>(after.begin(), after.end()).size() == 2);
    const auto survived = std::count_if(before.begin(), before.end(), [&after](pid_t p) {
        return std::find(after.begin(), after.end(), p) != after.end();
    });
    CHECK(survived == 1);
}

TEST_CASE("PoolOptions.task_timeout_per_call", "[pool][options]") {
    mproc::Pool pool(2);
    mproc::MapOptions call;
    call.chunksize = 1;
    call.task_timeout = 200ms;
    const auto t0 = std::chrono::steady_clock::now();
    try {
        (void)pool.map([](int x) {
            if (x == 5) std::this_thread::sleep_for(30s);
            return x;
        }, std::views::iota(0, 8), call);
        FAIL("map did not throw");
    } catch (const mproc::TimeoutError& e) {
        CHECK(e.task_index() == 5u);
    }
    CHECK(std::chrono::steady_clock::now() - t0 < 5s);
    CHECK(pool.map([](int x) { return x; }, std::views::iota(0, 3)) == std::vector<int>{0, 1, 2});
}

TEST_CASE("PoolOptions.progress_callback_reaches_total", "[pool][options]") {
    std::vector<std::pair<std::size_t, std::size_t>> reports;
    mproc::PoolOptions opts;
    opts.processes = 2;
    opts.on_progress = [&reports](std::size_t done, std::size_t total) { reports.emplace_back(done, total); };
    mproc::Pool pool(opts);
    (void)pool.map([](int x) {
        std::this_thread::sleep_for(5ms);
        return x;
    }, std::views::iota(0, 100), 1);
    REQUIRE(!reports.empty());
    CHECK(reports.back() == std::pair<std::size_t, std::size_t>{100, 100});
    for (std::size_t i = 1; i < reports.size(); ++i) CHECK(reports[i].first >= reports[i - 1].first);
    CHECK(reports.size() >= 3);  // ~250 ms of work, a report every 100 ms and one at the end
}

namespace {
// Runs a map with the progress bar on, its stderr on `fd`, and returns 0 when the map was right.
int map_with_bar() {
    mproc::PoolOptions opts;
    opts.processes = 2;
    opts.progress = true;
    mproc::Pool pool(opts);
    auto r = pool.map([](int x) {
        std::this_thread::sleep_for(10ms);
        return x;
    }, std::views::iota(0, 60), 1);
    return r.size() == 60 ? 0 : 1;
}

std::string read_all(int fd) {
    std::string out;
    char buf[4096];
    ssize_t n;
    while ((n = ::read(fd, buf, sizeof buf)) > 0) out.append(buf, static_cast<std::size_t>(n));
    return out;
}
}  // namespace

TEST_CASE("PoolOptions.progress_bar_on_a_terminal", "[pool][options]") {
    int master = -1;
    const pid_t pid = ::forkpty(&master, nullptr, nullptr, nullptr);
    REQUIRE(pid >= 0);
    if (pid == 0) ::_exit(map_with_bar());
    const std::string screen = read_all(master);  // ends with EIO once the child is gone
    ::close(master);
    int status = 0;
    REQUIRE(::waitpid(pid, &status, 0) == pid);
    CHECK(WIFEXITED(status));
    CHECK(WEXITSTATUS(status) == 0);
    CHECK(screen.find("60/60") != std::string::npos);
    CHECK(screen.find("/s ETA") != std::string::npos);
    CHECK(screen.find('\r') != std::string::npos);
    REQUIRE(!screen.empty());
    CHECK(screen.back() == '\n');  // the bar ends on its own line
}

TEST_CASE("PoolOptions.progress_bar_silent_without_a_terminal", "[pool][options]") {
    int fds[2];
    REQUIRE(::pipe(fds) == 0);
    const pid_t pid = ::fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
        ::dup2(fds[1], STDERR_FILENO);
        ::close(fds[0]);
        ::close(fds[1]);
        ::_exit(map_with_bar());
    }
    ::close(fds[1]);
    const std::string written = read_all(fds[0]);
    ::close(fds[0]);
    int status = 0;
    REQUIRE(::waitpid(pid, &status, 0) == pid);
    CHECK(WEXITSTATUS(status) == 0);
    CHECK(written.empty());
}

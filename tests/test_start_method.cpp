// Start methods: spawn (the program executed afresh) and forkserver (forks of a server started by
// exec), through mproc::init in tests/test_main.cpp.
#include "support.hpp"

#include <mproc/pool.hpp>
#include <mproc/process.hpp>
#include <mproc/queue.hpp>
#include <mproc/shared.hpp>
#include <mproc/start_method.hpp>
#include <mproc/sync.hpp>

#include <catch2/catch.hpp>

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/utsname.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <numeric>
#include <optional>
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

TEST_CASE("StartMethod.process.request_larger_than_the_socket_buffer", "[start_method]") {
    // Small requests are queued before the child exists; one of 4 MB cannot be (nobody reads
    // yet), so it is sent after the start: both must arrive whole.
    const auto sum = [](std::vector<std::int64_t> v) { return std::accumulate(v.begin(), v.end(), std::int64_t{0}); };
    for (std::size_t n : {std::size_t{10}, std::size_t{500'000}}) {
        std::vector<std::int64_t> numbers(n);
        std::iota(numbers.begin(), numbers.end(), 1);
        for (auto method : exec_methods) {
            CAPTURE(method, n);
            mproc::Process p(sum, numbers);
            p.start(method);
            REQUIRE(p.join(30s));
            CHECK(p.result() == static_cast<std::int64_t>(n * (n + 1) / 2));
        }
    }
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

namespace {
int result_of(mproc::Process<int>& p) { return p.result(); }
}  // namespace

TEST_CASE("StartMethod.process.stateful_callable_refused", "[start_method]") {
    int captured = 5;
    // Deduced: the type knows only fork can start it (p.start(mproc::spawn) does not compile,
    // tests/compile_fail/process_start_spawn_capturing_lambda.cpp), yet it is a Process<int>.
    mproc::Process deduced([captured] { return captured; });
    static_assert(std::is_base_of_v<mproc::Process<int>, decltype(deduced)>);
    static_assert(std::is_same_v<decltype(mproc::Process(square, 2)), mproc::Process<int>>);
    CHECK_THROWS_WITH(deduced.start(mproc::StartMethod::spawn), Catch::Contains("must be stateless"));
    CHECK(deduced.pid() == 0);
    deduced.start();
    CHECK(result_of(deduced) == 5);

    // Named Process<int>: the callable is erased, so the tagged start checks when called.
    mproc::Process<int> erased([captured] { return captured; });
    CHECK_THROWS_WITH(erased.start(mproc::spawn), Catch::Contains("must be stateless"));
    CHECK(erased.pid() == 0);

    std::vector<mproc::Process<int>> moved;
    moved.push_back(mproc::Process([captured] { return captured + 1; }));
    moved.back().start();
    CHECK(moved.back().result() == 6);
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

// A forkserver that ends before it says hello (here the program exec runs is /bin/true, as when
// the executable cannot run as a server) is reported at once, never waited on: the caller must
// not hold the server's ends of the sockets itself. Then the next start makes a new server. In a
// forked child, whose forkserver connection is its own.
TEST_CASE("StartMethod.forkserver.server_gone_before_hello_is_reported", "[start_method][fault]") {
    mproc::Process<int> child([] {
        ImageRestorer restore;
        mproc::detail::record_image(restore.saved.argv0.c_str(), "/bin/true");
        int outcome = 0;
        try {
            mproc::Process p(square, 4);
            p.start(mproc::forkserver);
            outcome = 1;  // started, which it cannot have
        } catch (const mproc::EndOfStream&) {
            outcome = 2;
        }
        mproc::detail::image() = restore.saved;
        mproc::Process again(square, 5);
        again.start(mproc::forkserver);
        return again.result() == 25 ? outcome : 3;
    });
    child.start();
    const bool ended = child.join(30s);
    if (!ended) child.kill();
    REQUIRE(ended);
    CHECK(child.result() == 2);
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

namespace {
/// The parent pid /proc says `pid` has (0 when gone). comm has no spaces in these tests.
pid_t parent_pid_of(pid_t pid) {
    std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
    std::string pid_field, comm, state;
    pid_t ppid = 0;
    if (!(stat >> pid_field >> comm >> state >> ppid)) return 0;
    return ppid;
}
}  // namespace

namespace {
/// Continued by the first sendmsg with descriptors after the test sets it: the request to a
/// stopped server, which carries the child's socket (the task's frame goes before, without).
pid_t server_to_continue = 0;
ssize_t sendmsg_then_continue_the_server(int fd, const msghdr* message, int flags) {
    const ssize_t sent = ::sendmsg(fd, message, flags);
    if (server_to_continue != 0 && message->msg_controllen != 0) {
        ::kill(server_to_continue, SIGCONT);
        server_to_continue = 0;
    }
    return sent;
}

/// The forkserver's spare: its one child that serves no request yet (none of `serving`), once
/// there is one (at most 5 s); 0 when none came.
pid_t wait_for_spare(pid_t server, const std::vector<pid_t>& serving = {}) {
    const auto until = std::chrono::steady_clock::now() + 5s;
    while (std::chrono::steady_clock::now() < until) {
        for (pid_t child : mproc_test::child_pids(server))
            if (std::find(serving.begin(), serving.end(), child) == serving.end() && running(child)) return child;
        std::this_thread::sleep_for(1ms);
    }
    return 0;
}
}  // namespace

TEST_CASE("StartMethod.process.children_die_with_the_parent", "[start_method]") {
    for (auto method : exec_methods) {
        CAPTURE(method);
        int fds[2];
        REQUIRE(::pipe2(fds, O_CLOEXEC) == 0);
        // A middle process (forked) starts a child by `method`, says who it, the server and the
        // server's spare child are, and is then SIGKILLed: all must end.
        mproc::Process middle([&, method] {
            ::close(fds[0]);
            mproc::Process child(sleep_forever);
            child.start(method);
            const pid_t server = mproc::detail::forkserver_connection().server_pid();
            const pid_t pids[3] = {child.pid(), server, server != 0 ? wait_for_spare(server, {child.pid()}) : 0};
            if (::write(fds[1], pids, sizeof pids) != sizeof pids) return;
            sleep_forever();
        });
        middle.start();
        ::close(fds[1]);
        pid_t pids[3] = {0, 0, 0};
        REQUIRE(::read(fds[0], pids, sizeof pids) == sizeof pids);
        ::close(fds[0]);
        REQUIRE(running(pids[0]));
        if (method == mproc::StartMethod::forkserver) {
            REQUIRE(running(pids[1]));
            REQUIRE(running(pids[2]));
        }
        middle.kill();
        REQUIRE(middle.join(10s));
        const auto any_running = [&] {
            return std::any_of(std::begin(pids), std::end(pids), [](pid_t pid) { return pid > 0 && running(pid); });
        };
        const auto until = std::chrono::steady_clock::now() + 2s;
        while (any_running() && std::chrono::steady_clock::now() < until) std::this_thread::sleep_for(1ms);
        for (pid_t pid : pids)
            if (pid > 0) CHECK_FALSE(running(pid));
    }
}

namespace {
/// The spare the forkserver announced to this process and nobody took, once there is one that
/// is none of `not_these` (at most 5 s); 0 when none came.
pid_t wait_for_announced_spare(const std::vector<pid_t>& not_these = {}) {
    const auto until = std::chrono::steady_clock::now() + 5s;
    while (std::chrono::steady_clock::now() < until) {
        const pid_t spare = mproc::detail::forkserver_connection().announced_spare();
        if (spare != 0 && std::find(not_these.begin(), not_these.end(), spare) == not_these.end()) return spare;
        std::this_thread::sleep_for(1ms);
    }
    return 0;
}

int requests_to_the_server = 0;  // messages with descriptors: only requests carry them
ssize_t counting_sendmsg(int fd, const msghdr* message, int flags) {
    if (message->msg_controllen != 0) ++requests_to_the_server;
    return ::sendmsg(fd, message, flags);
}

int sleep_then_square(int ms) {
    std::this_thread::sleep_for(std::chrono::milliseconds(ms));
    return ms * ms;
}
}  // namespace

namespace {
/// The body of the two tests below. The server's status mode is chosen when it starts, at the
/// first forkserver use of the process: ctest runs every test case in a process of its own.
void a_spare_child_takes_the_next_start() {
    mproc::Process first(square, 1);
    first.start(mproc::forkserver);
    REQUIRE(first.result() == 1);
    const pid_t server = mproc::detail::forkserver_connection().server_pid();
    REQUIRE(server > 0);
    // Between starts the server holds exactly one child: the spare, announced to the caller.
    const pid_t spare = wait_for_announced_spare();
    REQUIRE(spare > 0);
    CHECK(mproc_test::child_pids(server) == std::vector<pid_t>{spare});

    // The start writes its request to the spare: nothing goes to the server.
    mproc::Process next(square, 7);
    {
        mproc_test::ScopedSys sys;
        sys->sendmsg = counting_sendmsg;
        requests_to_the_server = 0;
        next.start(mproc::forkserver);
    }
    CHECK(requests_to_the_server == 0);
    CHECK(next.pid() == spare);
    CHECK(next.result() == 49);
    CHECK(next.exitcode() == 0);

    // A spare killed while it sleeps is reported like any child: the caller drops it and takes
    // the one forked after it.
    const pid_t killed = wait_for_announced_spare({spare});
    REQUIRE(killed > 0);
    REQUIRE(::kill(killed, SIGKILL) == 0);
    const pid_t after_killed = wait_for_announced_spare({spare, killed});
    REQUIRE(after_killed > 0);
    mproc::Process again(square, 8);
    again.start(mproc::forkserver);
    CHECK(again.pid() == after_killed);
    CHECK(again.result() == 64);

    // A spare found dead only when the request is written to it (EPIPE): the start asks the
    // server for a fresh fork instead. Made certain: the server is stopped (asleep in its poll
    // first) before the spare is killed, so no report of the death can reach the caller first,
    // and continued from the sys() seam once the request for the fresh fork is sent.
    const pid_t doomed = wait_for_announced_spare({spare, killed, after_killed});
    REQUIRE(doomed > 0);
    const auto until = std::chrono::steady_clock::now() + 5s;
    while (mproc_test::process_state(server) != 'S' && std::chrono::steady_clock::now() < until)
        std::this_thread::sleep_for(1ms);
    REQUIRE(::kill(server, SIGSTOP) == 0);
    while (mproc_test::process_state(server) != 'T' && std::chrono::steady_clock::now() < until)
        std::this_thread::sleep_for(1ms);
    REQUIRE(mproc_test::process_state(server) == 'T');
    REQUIRE(::kill(doomed, SIGKILL) == 0);
    while (!mproc_test::ended_with_every_thread(doomed) && std::chrono::steady_clock::now() < until)
        std::this_thread::sleep_for(1ms);
    REQUIRE(mproc_test::ended_with_every_thread(doomed));
    mproc::Process after(square, 9);
    {
        mproc_test::ScopedSys sys;
        sys->sendmsg = sendmsg_then_continue_the_server;
        server_to_continue = server;
        const auto continue_anyway = [&] {  // whatever start() did: later tests need the server
            if (server_to_continue != 0) ::kill(server, SIGCONT);
        };
        try {
            after.start(mproc::forkserver);
        } catch (...) {
            continue_anyway();
            throw;
        }
        CHECK(server_to_continue == 0);  // the seam ran: the request went by sendmsg
        continue_anyway();
    }
    CHECK(after.pid() != doomed);
    CHECK(after.result() == 81);
    CHECK(after.exitcode() == 0);
    // The dead spare's status, sent once the server ran again, was dropped, and another came.
    CHECK(wait_for_announced_spare({doomed, after.pid()}) > 0);
}
}  // namespace

TEST_CASE("StartMethod.forkserver.a_spare_child_takes_the_next_start", "[start_method]") {
    a_spare_child_takes_the_next_start();
}

TEST_CASE("StartMethod.forkserver.a_spare_child_takes_the_next_start.statuses_sent", "[start_method]") {
    mproc::detail::forkserver_sends_statuses_for_tests = true;  // statuses of dead spares forgotten
    a_spare_child_takes_the_next_start();
}

namespace {
/// Whether the running kernel is at least major.minor (uname).
bool kernel_at_least(int major, int minor) {
    utsname name{};
    if (::uname(&name) != 0) return false;
    int got_major = 0, got_minor = 0;
    if (std::sscanf(name.release, "%d.%d", &got_major, &got_minor) != 2) return false;
    return got_major > major || (got_major == major && got_minor >= minor);
}

/// A forkserver child's own child's exit code, -100 when it was lost (reaped by the kernel:
/// the server's SIGCHLD setting must not reach its children). Killed, so that the code cannot
/// be inferred from a result it sent.
int exit_code_of_own_child() {
    mproc::Process child(kill_self);
    child.start();
    child.join();
    return child.exitcode().value_or(-100);
}

/// Runs in a fresh process (a fork: its forkserver is its own, started by the first start
/// here) with exit statuses sent by the server as messages or not; returns what went wrong.
std::string forkserver_exit_codes(bool statuses_as_messages) {
    mproc::Process<std::string> checker([statuses_as_messages] {
        std::string wrong;
        const auto expect = [&](bool ok, const char* what) {
            if (!ok) wrong += std::string(what) + "; ";
        };
        mproc::detail::forkserver_sends_statuses_for_tests = statuses_as_messages;
        mproc::Process returns(square, 6);
        returns.start(mproc::forkserver);
        expect(returns.result() == 36 && returns.exitcode() == 0, "a returned value: exit code 0");
        const bool by_pidfd = mproc::detail::forkserver_connection().exits_by_pidfd();
        expect(by_pidfd == (!statuses_as_messages && kernel_at_least(6, 15)),
               "statuses read from pidfds exactly where asked and the kernel has PIDFD_INFO_EXIT (6.15)");
        mproc::Process parent(exit_code_of_own_child);
        parent.start(mproc::forkserver);
        expect(parent.result() == -SIGKILL, "a child's own child reaped by it, with its exit code");
        for (int round = 0; round < 2; ++round) {  // the first start of a round may take the spare
            mproc::Process throws(throw_range_error, std::string("no"));
            throws.start(mproc::forkserver);
            expect(throws.join(10s) && throws.exitcode() == 1, "an exception: exit code 1");
            mproc::Process killed(kill_self);
            killed.start(mproc::forkserver);
            expect(killed.join(10s) && killed.exitcode() == -SIGKILL, "killed: minus the signal");
            expect(wait_for_announced_spare() > 0, "a spare announced");
            mproc::Process on_spare(square, 5);
            const pid_t spare = mproc::detail::forkserver_connection().announced_spare();
            on_spare.start(mproc::forkserver);
            expect(on_spare.pid() == spare && on_spare.result() == 25 && on_spare.exitcode() == 0,
                   "the spare's start and exit code");
        }
        return wrong;
    });
    checker.start();
    if (!checker.join(60s)) {
        checker.kill();
        return "the checker hung";
    }
    return checker.result();
}
}  // namespace

TEST_CASE("StartMethod.forkserver.exit_codes_read_from_pidfds_where_the_kernel_gives_them", "[start_method]") {
    // Linux 6.15 and later: the server's children are reaped by the kernel as they end, and the
    // caller reads each one's status from its pidfd (the server is off the exit path).
    CHECK(forkserver_exit_codes(false) == "");
}

TEST_CASE("StartMethod.forkserver.exit_codes_sent_by_the_server", "[start_method]") {
    // Older kernels: the server reaps its children and sends their statuses.
    CHECK(forkserver_exit_codes(true) == "");
}

TEST_CASE("StartMethod.forkserver.a_long_task_does_not_hold_up_the_next_spare", "[start_method]") {
    // A server that reaps its children (and sends their statuses) puts off forking the next
    // spare while the child that took the last one runs (a fork would hold up reaping a short
    // task), but only for a few milliseconds.
    mproc::detail::forkserver_sends_statuses_for_tests = true;
    mproc::Process first(square, 2);
    first.start(mproc::forkserver);
    REQUIRE(first.result() == 4);
    const pid_t spare = wait_for_announced_spare();
    REQUIRE(spare > 0);
    mproc::Process slow(sleep_then_square, 3000);
    slow.start(mproc::forkserver);
    REQUIRE(slow.pid() == spare);
    const auto t0 = std::chrono::steady_clock::now();
    const pid_t next = wait_for_announced_spare({spare});
    CHECK(next > 0);
    CHECK(std::chrono::steady_clock::now() - t0 < 1500ms);  // not when the task ends (3 s)
    CHECK(slow.is_alive());
    slow.kill();
    CHECK(slow.join(10s));
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

TEST_CASE("StartMethod.pool.forkserver_starts_more_workers_than_its_request_window", "[start_method]") {
    // A forkserver pool asks for its workers in one stream, 8 requests ahead of the replies:
    // 13 workers need the window to slide, and every reply must reach the right worker.
    mproc::Pool pool(pool_options(mproc::StartMethod::forkserver, 13));
    const pid_t server = mproc::detail::forkserver_connection().server_pid();
    REQUIRE(server > 0);
    const auto pids = pool.pids();
    REQUIRE(pids.size() == 13);
    CHECK(std::set<pid_t>(pids.begin(), pids.end()).size() == 13);
    for (pid_t pid : pids) CHECK(parent_pid_of(pid) == server);
    std::vector<int> numbers(2000);
    for (int i = 0; i < 2000; ++i) numbers[i] = i;
    const auto flags = pool.map(is_odd, numbers, 1);
    for (int i = 0; i < 2000; ++i) CHECK(flags[i] == (i % 2 != 0));
    pool.close();
    pool.join();
    for (pid_t pid : pids) CHECK_FALSE(running(pid));
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

// ---- shared objects passed as arguments across exec ----

// The ordinary codec (Pipe, Queue messages) still refuses shared objects; the exec path takes them.
static_assert(!mproc::Encodable<mproc::Lock> && !mproc::Encodable<mproc::Queue<int>> &&
              !mproc::Encodable<mproc::SharedValue<int>>);
static_assert(mproc::detail::exec_sendable_v<void (*)(mproc::Queue<int>, mproc::Lock, mproc::RLock, mproc::Condition,
                                                      mproc::Semaphore, mproc::BoundedSemaphore, mproc::Event,
                                                      mproc::Barrier, mproc::SharedValue<long>, mproc::SharedArray<int>,
                                                      mproc::JoinableQueue<std::string>, int),
                                             mproc::Queue<int>, mproc::Lock, mproc::RLock, mproc::Condition,
                                             mproc::Semaphore, mproc::BoundedSemaphore, mproc::Event, mproc::Barrier,
                                             mproc::SharedValue<long>, mproc::SharedArray<int>,
                                             mproc::JoinableQueue<std::string>, int>);

namespace {
// Reads `count` numbers, answers each with its text and one large message (through the spill
// window of a small ring), returns their sum.
int echo_queue(mproc::Queue<int> in, mproc::Queue<std::string> out, int count) {
    int sum = 0;
    for (int i = 0; i < count; ++i) {
        const int v = in.get(30s);
        sum += v;
        out.put(std::to_string(v));
    }
    out.put(std::string(200 << 10, 'q'));
    return sum;
}

int hold_lock(mproc::Lock lock, mproc::Event held, mproc::Event release) {
    lock.acquire();
    held.set();
    const bool told = release.wait_for(30s);
    lock.release();
    return told ? 1 : 0;
}

[[noreturn]] void lock_and_die(mproc::Lock lock, mproc::Event held) {
    lock.acquire();
    held.set();
    ::raise(SIGKILL);
    for (;;) ::pause();
}

// SharedValue through its atomics and through its lock (passed again on its own: the same file,
// the same lock), SharedArray through its elements.
long count_up(mproc::SharedValue<long> counter, mproc::Lock counter_lock, mproc::SharedArray<int> squares) {
    for (int i = 0; i < 1000; ++i) counter.fetch_add(1);
    for (int i = 0; i < 1000; ++i) {
        std::lock_guard guard(counter_lock);
        counter.value() += 2;
    }
    for (std::size_t i = 0; i < squares.size(); ++i) squares[i] = static_cast<int>(i * i);
    return counter.load();
}

// The synchronization types a child may use with its parent.
int sync_partner(mproc::Barrier barrier, mproc::Semaphore units, mproc::BoundedSemaphore bounded, mproc::RLock rlock,
                 mproc::Condition cv, mproc::SharedValue<int> ready, mproc::JoinableQueue<std::string> jobs) {
    (void)barrier.wait_for(30s);  // both arrived
    units.release(3);
    bounded.release();
    {
        std::lock_guard outer(rlock);
        std::lock_guard inner(rlock);  // reentrant in the child too
    }
    {
        std::lock_guard guard(cv);
        ready.value() = 1;
        cv.notify_all();
    }
    std::string job = jobs.get(30s);
    jobs.task_done();
    return static_cast<int>(job.size());
}
}  // namespace

TEST_CASE("StartMethod.shared.queue_round_trip", "[start_method]") {
    for (auto method : exec_methods) {
        CAPTURE(method);
        mproc::Queue<int> to_child;
        mproc::Queue<std::string> from_child(mproc::QueueOptions{.ring_bytes = 64 << 10});
        mproc::Process p(mproc::spawn, echo_queue, to_child, from_child, 100);
        p.start(method);
        int expected = 0;
        for (int i = 0; i < 100; ++i) {
            to_child.put(i * 3);
            expected += i * 3;
            REQUIRE(from_child.get(30s) == std::to_string(i * 3));
        }
        CHECK(from_child.get(30s) == std::string(200 << 10, 'q'));
        REQUIRE(p.join(30s));
        CHECK(p.result() == expected);
        CHECK(to_child.empty());
        CHECK(from_child.dropped() == 0);
    }
}

TEST_CASE("StartMethod.shared.lock_held_by_child_excludes_parent", "[start_method]") {
    for (auto method : exec_methods) {
        CAPTURE(method);
        mproc::Lock lock;
        mproc::Event held, release;
        mproc::Process p(hold_lock, lock, held, release);
        p.start(method);
        REQUIRE(held.wait_for(30s));
        CHECK_FALSE(lock.try_acquire());
        CHECK_FALSE(lock.try_acquire_for(50ms));
        release.set();
        REQUIRE(p.join(30s));
        CHECK(p.result() == 1);
        REQUIRE(lock.try_acquire_for(5s));
        CHECK_FALSE(lock.owner_died());
        lock.release();
    }
}

TEST_CASE("StartMethod.shared.child_killed_holding_lock", "[start_method]") {
    for (auto method : exec_methods) {
        CAPTURE(method);
        mproc::Lock lock;
        mproc::Event held;
        mproc::Process p(lock_and_die, lock, held);
        p.start(method);
        REQUIRE(held.wait_for(30s));
        REQUIRE(p.join(30s));
        CHECK(p.exitcode() == -SIGKILL);
        // The robust mutex reports the dead owner, as for a forked child, and stays usable.
        REQUIRE(lock.try_acquire_for(5s));
        CHECK(lock.owner_died());
        lock.release();
        REQUIRE(lock.try_acquire_for(5s));
        CHECK_FALSE(lock.owner_died());
        lock.release();
    }
}

TEST_CASE("StartMethod.shared.value_and_array", "[start_method]") {
    for (auto method : exec_methods) {
        CAPTURE(method);
        mproc::SharedValue<long> counter(10);
        mproc::SharedArray<int> squares(50, -1);
        mproc::Process p(count_up, counter, counter.get_lock(), squares);
        p.start(method);
        REQUIRE(p.join(30s));
        CHECK(p.result() == 3010);
        CHECK(counter.get() == 3010);
        for (std::size_t i = 0; i < squares.size(); ++i) CHECK(squares[i] == static_cast<int>(i * i));
    }
}

TEST_CASE("StartMethod.shared.sync_types", "[start_method]") {
    for (auto method : exec_methods) {
        CAPTURE(method);
        mproc::Barrier barrier(2);
        mproc::Semaphore units(0);
        mproc::BoundedSemaphore bounded(1);
        bounded.acquire();
        mproc::RLock rlock;
        mproc::Condition cv;
        mproc::SharedValue<int> ready(0);
        mproc::JoinableQueue<std::string> jobs;
        mproc::Process p(sync_partner, barrier, units, bounded, rlock, cv, ready, jobs);
        p.start(method);
        REQUIRE(barrier.wait_for(30s).has_value());
        for (int i = 0; i < 3; ++i) CHECK(units.try_acquire_for(30s));
        CHECK(bounded.try_acquire_for(30s));
        {
            std::unique_lock lk(cv);
            CHECK(cv.wait_for(30s, [&] { return ready.value() == 1; }));
        }
        jobs.put("seven!!");
        CHECK(jobs.join_for(30s));
        REQUIRE(p.join(30s));
        CHECK(p.result() == 7);
        CHECK(rlock.try_acquire());  // free again: the child released both levels
        rlock.release();
    }
}

TEST_CASE("StartMethod.shared.hygiene", "[start_method]") {
    {  // the forkserver's own connection is opened once, at first use: not a leak
        mproc::Process warm(square, 1);
        warm.start(mproc::forkserver);
        CHECK(warm.result() == 1);
    }
    // So is the spare the server announces (its socket and pidfd): each count is taken while
    // this process holds one.
    mproc_test::settle_forkserver_spare();
    const auto names_before = mproc_test::our_shm_names();
    const int fds_before = mproc_test::open_fd_count();
    for (auto method : exec_methods) {
        CAPTURE(method);
        mproc::Queue<int> q;
        mproc::Lock lock;
        mproc::SharedValue<long> counter;
        mproc::SharedArray<int> squares(4);
        // One descriptor each (a SharedValue's lock lives in its file; a queue has one per
        // lane), kept while they live.
        const int held = 3 + static_cast<int>(q.lanes());
        CHECK(mproc_test::open_fd_count() == fds_before + held);
        {
            mproc::Process p(count_up, counter, lock, squares);
            p.start(method);
            REQUIRE(p.join(30s));
            CHECK(p.result() == 3000);
        }
        mproc_test::settle_forkserver_spare();
        CHECK(mproc_test::open_fd_count() == fds_before + held);  // nothing left from the passing
    }
    CHECK(mproc_test::open_fd_count() == fds_before);
    CHECK(mproc_test::our_shm_names() == names_before);
}

TEST_CASE("StartMethod.shared.made_without_a_descriptor", "[start_method]") {
    // Out of descriptors, a Lock is still made (in anonymous memory) and works across fork, but
    // cannot reach a process started by exec: a clear error, before any process starts.
    rlimit saved{};
    REQUIRE(::getrlimit(RLIMIT_NOFILE, &saved) == 0);
    rlimit tight = saved;
    int highest = 0;
    for (int fd = 0; fd < 4096; ++fd)
        if (::fcntl(fd, F_GETFD) != -1) highest = fd;
    std::vector<int> fillers;  // no gap below the limit either
    for (;;) {
        const int fd = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
        REQUIRE(fd >= 0);
        if (fd > highest) {
            ::close(fd);
            break;
        }
        fillers.push_back(fd);
    }
    tight.rlim_cur = static_cast<rlim_t>(highest + 1);
    REQUIRE(::setrlimit(RLIMIT_NOFILE, &tight) == 0);
    std::optional<mproc::Lock> lock;
    std::exception_ptr error;
    try {
        lock.emplace();
    } catch (...) {
        error = std::current_exception();
    }
    REQUIRE(::setrlimit(RLIMIT_NOFILE, &saved) == 0);
    for (int fd : fillers) ::close(fd);
    REQUIRE_FALSE(error);
    mproc::Event held, release;
    mproc::Process p(hold_lock, *lock, held, release);
    CHECK_THROWS_WITH(p.start(mproc::spawn), Catch::Contains("no file descriptor left"));
    CHECK(p.pid() == 0);
    mproc::Process forked([&] { return hold_lock(*lock, held, release); });
    forked.start();
    REQUIRE(held.wait_for(30s));
    CHECK_FALSE(lock->try_acquire());
    release.set();
    CHECK(forked.result() == 1);
}

TEST_CASE("StartMethod.shared.handle_outside_its_memory", "[start_method]") {
    // A handle is checked against the file it names, never trusted.
    std::vector<mproc::detail::unique_fd> fds;
    fds.emplace_back(::memfd_create("mproc-test", MFD_CLOEXEC));
    REQUIRE(fds.back());
    REQUIRE(::ftruncate(fds.back().get(), 4096) == 0);
    mproc::detail::received_descriptors received(std::move(fds));
    const auto read = [&](std::vector<std::uint64_t> words) {
        mproc::detail::handle_reader r(received, words);
        auto lock = mproc::detail::shared_handle<mproc::Lock>::load(r);
        r.finish();
        return lock;
    };
    CHECK_NOTHROW(read({0, 0}));
    CHECK_THROWS_AS(read({0, 4096}), mproc::DecodeError);  // past the end
    CHECK_THROWS_AS(read({0, 3}), mproc::DecodeError);     // misaligned
    CHECK_THROWS_AS(read({1, 0}), mproc::DecodeError);     // no such descriptor
    CHECK_THROWS_AS(read({0}), mproc::DecodeError);        // truncated
    CHECK_THROWS_AS(read({0, 0, 0}), mproc::DecodeError);  // words left over
}

namespace {
// Set in each worker by the pool's initializer (Python's initializer + initargs).
std::optional<mproc::Queue<int>> worker_results;
void keep_results(mproc::Queue<int> results, mproc::SharedValue<int> started, int offset) {
    worker_results = results;
    started.fetch_add(offset);
}
int put_in_worker_results(int n) {
    worker_results->put(n * 10);
    return n;
}
}  // namespace

TEST_CASE("StartMethod.pool.initializer_with_shared_objects", "[start_method]") {
    const mproc::StartMethod methods[] = {mproc::StartMethod::fork, mproc::StartMethod::spawn,
                                          mproc::StartMethod::forkserver};
    for (auto method : methods) {
        CAPTURE(method);
        mproc::Queue<int> results;
        mproc::SharedValue<int> started(0);
        auto opts = pool_options(method, 2);
        opts.set_initializer(keep_results, results, started, 1);
        {
            mproc::Pool pool(opts);
            CHECK(pool.map(put_in_worker_results, std::vector<int>{1, 2, 3, 4, 5}, 1) == std::vector<int>{1, 2, 3, 4, 5});
            int sum = 0;
            for (int i = 0; i < 5; ++i) sum += results.get(30s);
            CHECK(sum == 150);
            CHECK(started.load() == 2);  // once in each worker
        }
        // A function with state cannot reach a fresh program: refused at the Pool's start.
        if (method != mproc::StartMethod::fork) {
            auto stateful = pool_options(method, 1);
            int captured = 3;
            stateful.set_initializer([captured](int n) { (void)(captured + n); }, 1);
            CHECK_THROWS_WITH(mproc::Pool(stateful), Catch::Contains("each of its arguments encodable or a shared object"));
        }
    }
}

#include "support.hpp"

#include <mproc/pipe.hpp>
#include <mproc/process.hpp>
#include <mproc/sync.hpp>

#include <catch2/catch.hpp>

#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>

#include <algorithm>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

using namespace std::chrono_literals;

TEST_CASE("Process.result.value", "[process]") {
    mproc::Process p([](int n) { return n * n; }, 7);
    static_assert(std::is_same_v<decltype(p), mproc::Process<int>>);
    CHECK(p.pid() == 0);
    CHECK_FALSE(p.exitcode());
    p.start();
    CHECK(p.pid() > 0);
    CHECK(p.result() == 49);
    CHECK(p.exitcode() == 0);
    CHECK_FALSE(p.is_alive());
    CHECK(p.result() == 49);  // the result stays available
}

TEST_CASE("Process.result.captures_see_parent_state", "[process]") {
    std::vector<std::string> words{"fork", "copies", "memory"};
    std::string joined;
    for (auto& w : words) joined += w;
    mproc::Process p([&words] {
        std::string all;
        for (auto& w : words) all += w;
        words.clear();  // the child's copy only
        return all;
    });
    p.start();
    CHECK(p.result() == joined);
    CHECK(words.size() == 3);
}

TEST_CASE("Process.result.void_and_large", "[process]") {
    mproc::Process v([] {});
    static_assert(std::is_same_v<decltype(v), mproc::Process<void>>);
    v.start();
    v.result();
    CHECK(v.exitcode() == 0);

    // Larger than any socket buffer: the parent must read while the child writes.
    mproc::Process big([] { return std::vector<double>(8 << 20, 1.5); });
    big.start();
    auto r = big.result();
    REQUIRE(r.size() == (8u << 20));
    CHECK(r.front() == 1.5);
    CHECK(r.back() == 1.5);
}

TEST_CASE("Process.result.remote_exception", "[process]") {
    mproc::Process p([]() -> int { throw std::invalid_argument("bad input 42"); });
    p.start();
    p.join();  // join never throws the child's exception
    CHECK(p.exitcode() == 1);
    try {
        (void)p.result();
        FAIL("result() did not throw");
    } catch (const mproc::RemoteError& e) {
        CHECK(e.type_name() == "std::invalid_argument");
        CHECK(e.message() == "bad input 42");
        CHECK(std::string(e.what()).find("std::invalid_argument") != std::string::npos);
        CHECK(std::string(e.what()).find("bad input 42") != std::string::npos);
    }
}

TEST_CASE("Process.result.remote_non_std_exception", "[process]") {
    mproc::Process p([] { throw 42; });
    p.start();
    try {
        p.result();
        FAIL("result() did not throw");
    } catch (const mproc::RemoteError& e) {
        CHECK(e.type_name() == "int");
    }
}

TEST_CASE("Process.crash.segfault", "[process]") {
    mproc::Process p([]() -> int {
        std::signal(SIGSEGV, SIG_DFL);  // sanitizers install their own handler
        std::raise(SIGSEGV);
        return 0;
    });
    p.start();
    p.join();
    CHECK(p.exitcode() == -SIGSEGV);
    try {
        (void)p.result();
        FAIL("result() did not throw");
    } catch (const mproc::ProcessCrashed& e) {
        CHECK(e.signal() == SIGSEGV);
        CHECK_FALSE(e.exit_code());
        CHECK(std::string(e.what()).find("SIGSEGV") != std::string::npos);
    }
}

TEST_CASE("Process.crash.exit_code", "[process]") {
    mproc::Process p([]() -> std::string { ::_exit(3); });
    p.start();
    p.join();
    CHECK(p.exitcode() == 3);
    try {
        (void)p.result();
        FAIL("result() did not throw");
    } catch (const mproc::ProcessCrashed& e) {
        CHECK(e.exit_code() == 3);
        CHECK(e.signal() == 0);
    }
}

TEST_CASE("Process.crash.abort", "[process]") {
    mproc::Process p([] {
        std::signal(SIGABRT, SIG_DFL);
        std::abort();
    });
    p.start();
    CHECK_THROWS_AS(p.result(), mproc::ProcessCrashed);
    CHECK(p.exitcode() == -SIGABRT);
}

TEST_CASE("Process.join.timeout_then_terminate", "[process]") {
    mproc::Process p([] { std::this_thread::sleep_for(60s); });
    p.start();
    const auto t0 = std::chrono::steady_clock::now();
    CHECK_FALSE(p.join(100ms));
    const auto waited = std::chrono::steady_clock::now() - t0;
    CHECK(waited >= 100ms);
    CHECK(waited < 10s);
    CHECK(p.is_alive());
    CHECK_FALSE(p.exitcode());
    p.terminate();
    CHECK(p.join(10s));
    CHECK(p.exitcode() == -SIGTERM);
    CHECK_FALSE(p.is_alive());
    p.terminate();  // harmless once ended
}

TEST_CASE("Process.kill", "[process]") {
    mproc::Process p([] {
        std::signal(SIGTERM, SIG_IGN);
        std::this_thread::sleep_for(60s);
    });
    p.start();
    p.kill();
    CHECK(p.join(10s));
    CHECK(p.exitcode() == -SIGKILL);
    CHECK_THROWS_AS(p.result(), mproc::ProcessCrashed);
}

TEST_CASE("Process.state.misuse", "[process]") {
    mproc::Process p([] { return 1; });
    CHECK_THROWS_AS(p.join(), mproc::StateError);
    p.start();
    CHECK_THROWS_AS(p.start(), mproc::StateError);
    CHECK(p.result() == 1);
    mproc::Process q = std::move(p);
    CHECK(q.result() == 1);
}

TEST_CASE("Process.vector_of_processes", "[process]") {
    std::vector<mproc::Process<int>> ps;
    for (int i = 0; i < 4; ++i) ps.emplace_back([i] { return i * 10; });
    for (auto& p : ps) p.start();
    for (int i = 0; i < 4; ++i) CHECK(ps[static_cast<std::size_t>(i)].result() == i * 10);
}

TEST_CASE("Process.destructor.reaps_running_child", "[process]") {
    pid_t pid;
    {
        mproc::Process p([] { std::this_thread::sleep_for(60s); });
        p.terminate_grace = 100ms;
        p.start();
        pid = p.pid();
    }
    int status;
    CHECK(::waitpid(pid, &status, WNOHANG) == -1);
    CHECK(errno == ECHILD);  // reaped: no zombie left
}

namespace {
volatile std::sig_atomic_t* sigterm_noted = nullptr;  // in a page shared with the parent
extern "C" void note_sigterm(int) { *sigterm_noted = 1; }
// The signals the library sends through pidfds, in order, passed on to the kernel.
std::vector<int> sent_signals;
int recording_pidfd_send_signal(int pidfd, int sig, siginfo_t* info, unsigned flags) {
    sent_signals.push_back(sig);
    return mproc::detail::raw_pidfd_send_signal(pidfd, sig, info, flags);
}
}  // namespace

// The destructor of a running Process sends SIGTERM, waits terminate_grace (here 1.5 s, told
// apart from the 1 s default by the time it took), then SIGKILL: the child notes the SIGTERM
// it survives, and the signals sent are SIGTERM then SIGKILL.
TEST_CASE("Process.destructor.kills_child_that_ignores_sigterm", "[process]") {
    void* page = ::mmap(nullptr, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    REQUIRE(page != MAP_FAILED);
    auto* noted = static_cast<volatile std::sig_atomic_t*>(page);
    mproc_test::ScopedSys sys;
    sys->pidfd_send_signal = recording_pidfd_send_signal;
    sent_signals.clear();
    const auto grace = 1500ms;
    mproc::Event ready;
    std::chrono::steady_clock::time_point t0;
    {
        mproc::Process p([noted, ready]() mutable {
            sigterm_noted = noted;
            std::signal(SIGTERM, note_sigterm);  // noted, and survived: only SIGKILL ends it
            ready.set();
            for (;;) ::pause();
        });
        p.terminate_grace = grace;
        p.start();
        REQUIRE(ready.wait_for(10s));
        t0 = std::chrono::steady_clock::now();
    }
    const auto took = std::chrono::steady_clock::now() - t0;
    CHECK(*noted == 1);  // SIGTERM reached it first
    CHECK(sent_signals == std::vector<int>{SIGTERM, SIGKILL});
    CHECK(took >= grace);  // the grace it was given, not the 1 s default
    CHECK(took < grace + 10s);
    CHECK(mproc_test::no_children_left());
    ::munmap(page, 4096);
}

namespace {
int marker_fd = -1;
void write_marker() {
    if (marker_fd >= 0) (void)::write(marker_fd, "A", 1);
}
}  // namespace

TEST_CASE("Process.child_never_runs_parent_exit_work", "[process]") {
    // Runs inside an outer child, so that the handler belongs to a throwaway process.
    char path[] = "/tmp/mproc_test_XXXXXX";
    const int fd = ::mkstemp(path);
    REQUIRE(fd >= 0);
    mproc::Process outer([fd] {
        marker_fd = fd;
        std::atexit(write_marker);
        mproc::Process inner([] { return 5; });
        inner.start();
        return inner.result() == 5 ? 0 : 1;
    });
    outer.start();
    outer.result();
    CHECK(outer.exitcode() == 0);
    char buf[16];
    CHECK(::pread(fd, buf, sizeof buf, 0) == 0);  // no atexit handler ran in either child
    ::close(fd);
    ::unlink(path);
}

TEST_CASE("Process.child_output_is_not_lost_or_doubled", "[process]") {
    auto [reader, writer] = mproc::Pipe<std::string>(false);
    mproc::Process outer([&writer = writer] {
        char path[] = "/tmp/mproc_out_XXXXXX";
        const int fd = ::mkstemp(path);
        if (fd < 0 || !std::freopen(path, "w", stdout)) return;
        std::setvbuf(stdout, nullptr, _IOFBF, 4096);
        std::printf("before;");  // still buffered when inner forks
        mproc::Process inner([] { std::printf("child;"); });
        inner.start();
        inner.join();
        std::printf("after;");
        std::fflush(stdout);
        char buf[256] = {};
        const ssize_t n = ::pread(fd, buf, sizeof buf - 1, 0);
        ::unlink(path);
        writer.send(std::string(buf, n > 0 ? static_cast<std::size_t>(n) : 0));
    });
    outer.start();
    writer.close();
    CHECK(reader.recv() == "before;child;after;");
    outer.join();
}

TEST_CASE("Process.children_die_with_parent", "[process]") {
    // This test process adopts orphans, so it can reap the grandchild and see how it ended.
    REQUIRE(::prctl(PR_SET_CHILD_SUBREAPER, 1) == 0);
    auto [reader, writer] = mproc::Pipe<int>(false);
    mproc::Process middle([&writer = writer] {
        mproc::Process leaf([&writer] {
            writer.send(::getpid());  // sent from the leaf itself: its death signal is armed
            std::this_thread::sleep_for(60s);
        });
        leaf.start();
        std::this_thread::sleep_for(60s);
    });
    middle.start();
    writer.close();
    const pid_t leaf = reader.recv();
    middle.kill();
    CHECK(middle.join(10s));
    int status = 0;
    pid_t reaped = 0;
    const auto give_up = std::chrono::steady_clock::now() + 5s;
    while (reaped == 0 && std::chrono::steady_clock::now() < give_up) {
        reaped = ::waitpid(leaf, &status, WNOHANG);
        if (reaped == 0) std::this_thread::sleep_for(10ms);
    }
    ::prctl(PR_SET_CHILD_SUBREAPER, 0);
    REQUIRE(reaped == leaf);
    CHECK(WIFSIGNALED(status));
    CHECK(WTERMSIG(status) == SIGKILL);
}

TEST_CASE("Process.no_leaks_after_1000_cycles", "[process][stress]") {
    const int fds_before = mproc_test::open_fd_count();
    const auto shm_before = mproc_test::shm_names();
    for (int i = 0; i < 1000; ++i) {
        mproc::Process p([i] { return i; });
        p.start();
        REQUIRE(p.result() == i);
    }
    CHECK(mproc_test::open_fd_count() == fds_before);
    CHECK(mproc_test::shm_names() == shm_before);
    CHECK(mproc_test::no_children_left());
}

namespace {
int eintr_polls = 0;           // EINTRs still to inject
int eintr_polls_injected = 0;  // EINTRs injected: proves the join went through the seam
int poll_with_eintr(pollfd* fds, nfds_t n, int timeout) {
    if (eintr_polls > 0) {
        --eintr_polls;
        ++eintr_polls_injected;
        errno = EINTR;
        return -1;
    }
    return ::poll(fds, n, timeout);
}
pid_t failing_fork() {
    errno = EAGAIN;
    return -1;
}
}  // namespace

TEST_CASE("Process.eintr_during_join", "[process][fault]") {
    mproc_test::ScopedSys sys;
    eintr_polls = 3;
    eintr_polls_injected = 0;
    sys->poll = poll_with_eintr;
    mproc::Process p([] {
        std::this_thread::sleep_for(50ms);
        return 7;
    });
    p.start();
    CHECK(p.result() == 7);
    CHECK(eintr_polls_injected == 3);  // every injected EINTR was met, and survived
}

TEST_CASE("Process.fork_failure_is_a_system_error", "[process][fault]") {
    const int fds_before = mproc_test::open_fd_count();
    {
        mproc_test::ScopedSys sys;
        sys->fork = failing_fork;
        mproc::Process p([] { return 1; });
        try {
            p.start();
            FAIL("start() did not throw");
        } catch (const mproc::SystemError& e) {
            CHECK(e.code() == std::errc::resource_unavailable_try_again);
            CHECK(e.call() == "fork");
        }
    }
    CHECK(mproc_test::open_fd_count() == fds_before);
}

TEST_CASE("Process.cpu_count_follows_affinity", "[process]") {
    CHECK(mproc::cpu_count() >= 1);
    CHECK(mproc::cpu_count() <= std::thread::hardware_concurrency());
    mproc::Process p([] {
        cpu_set_t one;
        CPU_ZERO(&one);
        CPU_SET(static_cast<int>(::sched_getcpu()), &one);
        if (::sched_setaffinity(0, sizeof one, &one) != 0) return 0u;
        return mproc::cpu_count();
    });
    p.start();
    CHECK(p.result() == 1u);
}

namespace {
// Sets SIGCHLD's disposition for one scope: ignored, the kernel reaps children itself.
class ScopedSigchld {
public:
    explicit ScopedSigchld(void (*handler)(int)) : saved_(std::signal(SIGCHLD, handler)) {}
    ~ScopedSigchld() { std::signal(SIGCHLD, saved_); }
    ScopedSigchld(const ScopedSigchld&) = delete;
    ScopedSigchld& operator=(const ScopedSigchld&) = delete;

private:
    void (*saved_)(int);
};
}  // namespace

TEST_CASE("Process.sigchld_ignored.join_and_result_still_work", "[process][fault]") {
    // Daemons often ignore SIGCHLD: the kernel then reaps children at once and waitpid says
    // ECHILD. The child is gone all the same, and what it sent is still there to read.
    const int fds_before = mproc_test::open_fd_count();
    ScopedSigchld ignore(SIG_IGN);
    mproc::Process value([] { return 42; });
    value.start();
    CHECK(value.join(10s));
    CHECK_FALSE(value.is_alive());
    CHECK(value.result() == 42);
    CHECK(value.exitcode() == 0);  // known from what it sent: a value means it left with 0

    mproc::Process thrower([]() -> int { throw std::runtime_error("no"); });
    thrower.start();
    CHECK_THROWS_AS(thrower.result(), mproc::RemoteError);
    CHECK(thrower.exitcode() == 1);

    mproc::Process crasher([]() -> int { ::_exit(3); });
    crasher.start();
    CHECK(crasher.join(10s));
    try {
        (void)crasher.result();
        FAIL("result() did not throw");
    } catch (const mproc::ProcessCrashed& e) {
        CHECK(e.status_lost());
        CHECK(e.signal() == 0);
        CHECK_FALSE(e.exit_code());
        CHECK(std::string(e.what()).find("unknown") != std::string::npos);
    }
    CHECK_FALSE(crasher.exitcode());  // the status is lost: unknown, although it has ended
    CHECK_FALSE(crasher.is_alive());

    mproc::Process sleeper([] { std::this_thread::sleep_for(60s); });
    sleeper.start();
    CHECK_FALSE(sleeper.join(50ms));
    CHECK(sleeper.is_alive());
    sleeper.terminate();
    CHECK(sleeper.join(10s));
    CHECK_FALSE(sleeper.is_alive());
    sleeper.kill();  // harmless: its pid is never signalled again once it is known to be gone
    CHECK(mproc_test::open_fd_count() == fds_before);  // no pidfd or socket left behind
}

namespace {
void reap_every_child(int) {
    const int saved = errno;
    while (::waitpid(-1, nullptr, WNOHANG) > 0) {
    }
    errno = saved;
}
}  // namespace

TEST_CASE("Process.sigchld_handler_that_reaps_every_child", "[process][fault]") {
    // The other common daemon idiom: a handler that reaps whatever ended. Same outcome.
    ScopedSigchld reaper(reap_every_child);
    mproc::Process p([] {
        std::this_thread::sleep_for(20ms);
        return std::string("done");
    });
    p.start();
    CHECK(p.result() == "done");
    CHECK(p.exitcode() == 0);
    CHECK_FALSE(p.is_alive());
}

TEST_CASE("Process.moved_while_running", "[process]") {
    mproc::Process<int> target([] { return 0; });
    {
        mproc::Process p([] {
            std::this_thread::sleep_for(100ms);
            return 11;
        });
        p.start();
        mproc::Process q = std::move(p);
        CHECK(p.pid() == 0);
        CHECK_THROWS_AS(p.start(), mproc::StateError);
        target = std::move(q);
    }  // the moved-from handles end nothing
    CHECK(target.is_alive());
    CHECK(target.result() == 11);
    // Assigning over a running Process stops and reaps its child.
    mproc::Process<int> sleeper([] {
        std::this_thread::sleep_for(60s);
        return 0;
    });
    sleeper.terminate_grace = 10ms;
    sleeper.start();
    const pid_t old = sleeper.pid();
    sleeper = std::move(target);
    CHECK(sleeper.result() == 11);
    int status;
    CHECK(::waitpid(old, &status, WNOHANG) == -1);  // reaped: no zombie left
}

TEST_CASE("Process.polling_is_alive_does_not_deadlock_on_a_large_result", "[process]") {
    // The child blocks writing a result larger than the socket buffer until the parent reads it:
    // a parent that only polls is_alive() or exitcode() must read too, or both wait forever.
    for (int use_exitcode = 0; use_exitcode < 2; ++use_exitcode) {
        mproc::Process p([] { return std::vector<double>(1 << 20, 2.5); });
        p.terminate_grace = 10ms;
        p.start();
        const auto give_up = std::chrono::steady_clock::now() + 10s;
        auto running = [&] { return use_exitcode ? !p.exitcode() : p.is_alive(); };
        while (running() && std::chrono::steady_clock::now() < give_up)
            std::this_thread::sleep_for(1ms);
        REQUIRE_FALSE(p.is_alive());
        CHECK(p.exitcode() == 0);
        CHECK(p.result().size() == (1u << 20));
    }
}

TEST_CASE("Process.join_from_a_forked_copy_is_a_state_error", "[process]") {
    mproc::Process sleeper([] { std::this_thread::sleep_for(60s); });
    sleeper.terminate_grace = 10ms;
    sleeper.start();
    // A child holds a copy of the handle; only the parent can wait for the sleeper.
    mproc::Process probe([&sleeper] {
        int state_errors = 0;
        try {
            (void)sleeper.join(1s);
        } catch (const mproc::StateError&) {
            ++state_errors;
        } catch (...) {
        }
        try {
            (void)sleeper.is_alive();
        } catch (const mproc::StateError&) {
            ++state_errors;
        } catch (...) {
        }
        return state_errors;
    });
    probe.start();
    CHECK(probe.result() == 2);
    CHECK(sleeper.is_alive());  // and the copy did not end it
    sleeper.kill();
    CHECK(sleeper.join(10s));
}

TEST_CASE("Process.finished_result_is_readable_from_a_forked_copy", "[process]") {
    mproc::Process first([] { return 6; });
    first.start();
    first.join();
    mproc::Process second([&first] { return first.result() * 7; });  // settled before the fork
    second.start();
    CHECK(second.result() == 42);
}

TEST_CASE("Process.child_exit_runs_static_destructors_harmlessly", "[process]") {
    // A user's child that calls std::exit() runs the destructors of statics copied from the
    // parent: a running Process and a Pipe. They must not end or close anything of the parent's.
    static mproc::Process sibling([] { std::this_thread::sleep_for(60s); });
    static auto ends = mproc::Pipe<int>();
    sibling.terminate_grace = 10ms;
    sibling.start();
    mproc::Process leaver([] { std::exit(0); });
    leaver.start();
    CHECK(leaver.join(10s));
    CHECK(sibling.is_alive());
    ends.second.send(5);
    CHECK(ends.first.recv() == 5);
    sibling.kill();
    CHECK(sibling.join(10s));
}

TEST_CASE("Process.grandchild_holding_the_channel_does_not_delay_the_result", "[process]") {
    // The child forks a grandchild that outlives it and still holds the result socket.
    mproc::Process p([] {
        const pid_t grandchild = ::fork();
        if (grandchild == 0) {
            std::this_thread::sleep_for(30s);
            ::_exit(0);
        }
        return grandchild;
    });
    const auto t0 = std::chrono::steady_clock::now();
    p.start();
    const pid_t grandchild = p.result();
    CHECK(std::chrono::steady_clock::now() - t0 < 10s);
    CHECK(p.exitcode() == 0);
    REQUIRE(grandchild > 0);
    ::kill(grandchild, SIGKILL);  // an orphan now (init reaps it)
}

TEST_CASE("Process.child_that_closes_its_descriptors_ends_without_a_result", "[process][fault]") {
    // The child closes every descriptor (as daemonizing code does), its result socket included.
    mproc::Process p([] {
        for (int fd = 3; fd < 1024; ++fd) ::close(fd);
        return 1;
    });
    p.start();
    CHECK(p.join(10s));
    CHECK(p.exitcode() == 71);
    CHECK_THROWS_AS(p.result(), mproc::ProcessCrashed);
}

namespace {
// The lowest descriptor numbers that are free now, in order.
std::vector<int> next_free_fds(int n) {
    std::vector<int> fds;
    for (int i = 0; i < n; ++i) fds.push_back(::dup(0));
    for (int fd : fds) ::close(fd);
    return fds;
}
int pidfd_open_emfile(pid_t, unsigned) {
    errno = EMFILE;
    return -1;
}
}  // namespace

TEST_CASE("Process.start_out_of_descriptors", "[process][fault]") {
    // RLIMIT_NOFILE bounds descriptor numbers: a limit equal to a free number makes it the first
    // one that cannot be had. start() then fails cleanly at socketpair, leaving nothing behind.
    rlimit saved{};
    REQUIRE(::getrlimit(RLIMIT_NOFILE, &saved) == 0);
    const int fds_before = mproc_test::open_fd_count();
    const std::vector<int> free_fds = next_free_fds(2);
    for (int limit : {free_fds[0], free_fds[1]}) {  // no descriptor left, then only one
        // Made before the limit drops: UBSan's checks need descriptors.
        mproc::Process p([] { return 9; });
        rlimit low = saved;
        low.rlim_cur = static_cast<rlim_t>(limit);
        REQUIRE(::setrlimit(RLIMIT_NOFILE, &low) == 0);
        std::exception_ptr error;
        try {
            p.start();
        } catch (...) {
            error = std::current_exception();  // looked at once the limit is back
        }
        REQUIRE(::setrlimit(RLIMIT_NOFILE, &saved) == 0);
        REQUIRE(error);
        try {
            std::rethrow_exception(error);
        } catch (const mproc::SystemError& e) {
            CHECK(e.call() == "socketpair");
            CHECK(e.code() == std::errc::too_many_files_open);
        }
        CHECK(p.pid() == 0);
        CHECK(mproc_test::open_fd_count() == fds_before);
        CHECK(mproc_test::no_children_left());
    }
    // Without a pidfd (none left, or an old kernel) the parent waits by polling. Injected, not
    // by a limit: the child would run under that limit too, where UBSan's checks fail.
    {
        mproc_test::ScopedSys sys;
        sys->pidfd_open = pidfd_open_emfile;
        mproc::Process p([] {
            std::this_thread::sleep_for(20ms);
            return 9;
        });
        p.start();
        CHECK(p.join(10s));
        CHECK(p.result() == 9);
    }
    CHECK(mproc_test::open_fd_count() == fds_before);
    CHECK(mproc_test::no_children_left());
}

namespace {
// Every kill(2) and pidfd_send_signal(2) the library makes, by pid (a pidfd is recorded as the
// pid it was opened for), passed on to the kernel.
std::vector<std::pair<pid_t, int>> kills;
int pidfd_signals = 0;
int recording_kill(pid_t pid, int sig) {
    kills.emplace_back(pid, sig);
    return ::kill(pid, sig);
}
int counting_pidfd_send_signal(int pidfd, int sig, siginfo_t* info, unsigned flags) {
    ++pidfd_signals;
    return mproc::detail::raw_pidfd_send_signal(pidfd, sig, info, flags);
}
int no_pidfd(pid_t, unsigned) {
    errno = ENOSYS;
    return -1;
}
int kills_of(pid_t pid) {
    return static_cast<int>(
        std::count_if(kills.begin(), kills.end(), [pid](auto k) { return k.first == pid; }));
}
// Waits (bounded) until `pid` names no process: reaped, by the kernel here.
bool pid_vanishes(pid_t pid) {
    const auto give_up = std::chrono::steady_clock::now() + 10s;
    while (::kill(pid, 0) == 0 && std::chrono::steady_clock::now() < give_up)
        std::this_thread::sleep_for(1ms);
    return ::kill(pid, 0) != 0 && errno == ESRCH;
}
// pidfd_open, called only once the child is gone: the child ended and was reaped before its
// Process could open a descriptor for it.
int pidfd_open_too_late(pid_t pid, unsigned flags) {
    (void)pid_vanishes(pid);
    return mproc::detail::raw_pidfd_open(pid, flags);
}
}  // namespace

// SIGCHLD ignored: the kernel reaps the child the moment it ends, before the Process notices,
// and its pid is free for the next fork. terminate() and kill() then must not signal that pid
// (a stranger may have it): they go through the child's pidfd, which names it alone, and a
// child already gone when its pidfd was to be opened is known lost at once.
TEST_CASE("Process.signal_after_a_lost_status_never_reaches_a_reused_pid", "[process][fault]") {
    mproc_test::ScopedSys sys;
    sys->kill = recording_kill;
    sys->pidfd_send_signal = counting_pidfd_send_signal;
    kills.clear();
    pidfd_signals = 0;
    {
        ScopedSigchld ignore(SIG_IGN);
        mproc::Event go;
        mproc::Process<void> gone([go]() mutable { (void)go.wait_for(10s); });
        gone.start();  // its pidfd is open: the child waits for `go`
        go.set();
        REQUIRE(pid_vanishes(gone.pid()));  // reaped by the kernel: the pid may be anyone's now
        gone.terminate();
        gone.kill();
        CHECK(kills_of(gone.pid()) == 0);  // never a kill(2) to a pid that may be reused
        CHECK(pidfd_signals == 2);         // the pidfd said ESRCH
        CHECK(gone.join(10s));

        sys->pidfd_open = pidfd_open_too_late;
        mproc::Process<void> quick([] {});
        quick.start();
        sys->pidfd_open = mproc::detail::raw_pidfd_open;
        quick.terminate();
        quick.kill();
        CHECK(kills_of(quick.pid()) == 0);
        CHECK(pidfd_signals == 2);  // nothing to signal: known gone
        CHECK(quick.join(10s));
        CHECK_NOTHROW(quick.result());  // what it sent is still read
        CHECK(quick.exitcode() == 0);   // its status is lost, but it sent its value
    }
    // A live child is signalled through its pidfd too.
    mproc::Process<void> live([] { std::this_thread::sleep_for(60s); });
    live.start();
    live.terminate();
    CHECK(live.join(10s));
    CHECK(live.exitcode() == -SIGTERM);
    CHECK(pidfd_signals == 3);
    CHECK(kills_of(live.pid()) == 0);
    // Without pidfds (kernels before 5.3) kill(2) is the fallback.
    sys->pidfd_open = no_pidfd;
    mproc::Process<void> old_kernel([] { std::this_thread::sleep_for(60s); });
    old_kernel.start();
    old_kernel.terminate();
    CHECK(old_kernel.join(10s));
    CHECK(old_kernel.exitcode() == -SIGTERM);
    CHECK(kills_of(old_kernel.pid()) == 1);
    CHECK(pidfd_signals == 3);
}

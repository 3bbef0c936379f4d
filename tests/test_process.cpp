#include "support.hpp"

#include <mproc/pipe.hpp>
#include <mproc/process.hpp>

#include <catch2/catch.hpp>

#include <sys/prctl.h>

#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>
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

TEST_CASE("Process.destructor.kills_child_that_ignores_sigterm", "[process]") {
    const auto t0 = std::chrono::steady_clock::now();
    {
        mproc::Process p([] {
            std::signal(SIGTERM, SIG_IGN);
            std::this_thread::sleep_for(60s);
        });
        p.terminate_grace = 50ms;
        p.start();
        std::this_thread::sleep_for(50ms);  // let it ignore SIGTERM
    }
    CHECK(std::chrono::steady_clock::now() - t0 < 10s);
    CHECK(mproc_test::no_children_left());
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
int eintr_polls = 0;
int poll_with_eintr(pollfd* fds, nfds_t n, int timeout) {
    if (eintr_polls-- > 0) {
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
    sys->poll = poll_with_eintr;
    mproc::Process p([] {
        std::this_thread::sleep_for(50ms);
        return 7;
    });
    p.start();
    CHECK(p.result() == 7);
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

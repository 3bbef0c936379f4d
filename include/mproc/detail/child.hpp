// Forking a child, watching it, and reaping it: the process half of the POSIX layer.
#pragma once

#include <mproc/detail/fd.hpp>

#include <sched.h>
#include <pthread.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>

#include <climits>
#include <cstdint>
#include <cstdio>
#include <iostream>
#include <optional>
#include <vector>

MPROC_NAMESPACE_BEGIN
namespace detail {

/// Flushes C stdio and the standard C++ streams. Done in the parent before fork, so a buffer
/// is never printed twice, and in the child before _exit, so nothing it printed is lost.
inline void flush_standard_streams() noexcept {
    std::cout.flush();
    std::clog.flush();
    std::fflush(nullptr);
}

/// What a forked child does with SIGINT: keep the parent's disposition (a Process, as in
/// Python), or ignore it from its first instruction on (a Pool worker: Ctrl-C is the parent's to
/// handle, and a worker must not die of one that lands between fork and its own set-up).
enum class child_sigint { inherit, ignore };

/// Forks; the child runs `body()` (returning its exit code) and leaves with _exit, so it never
/// runs the parent's atexit handlers or static destructors. The child is SIGKILLed when the
/// parent dies (PR_SET_PDEATHSIG); if the parent died between fork and prctl, the child sees a
/// new parent id and leaves at once. Returns the child's pid in the parent.
/// With child_sigint::ignore, SIGINT is blocked around the fork and the child ignores it before
/// unblocking, so a SIGINT pending in the child is discarded instead of killing it.
template <class Body>
[[nodiscard]] pid_t fork_child(Body&& body, child_sigint sigint = child_sigint::inherit) {
    flush_standard_streams();
    const pid_t parent = ::getpid();
    sigset_t interrupt, before;
    ::sigemptyset(&interrupt);
    ::sigaddset(&interrupt, SIGINT);
    const bool block = sigint == child_sigint::ignore;
    if (block) ::pthread_sigmask(SIG_BLOCK, &interrupt, &before);
    const pid_t pid = sys().fork();
    if (pid != 0) {
        const int fork_errno = errno;
        if (block) ::pthread_sigmask(SIG_SETMASK, &before, nullptr);  // a pending SIGINT lands now
        if (pid < 0) {
            errno = fork_errno;
            throw_errno("fork");
        }
        return pid;
    }
    if (block) {
        ::signal(SIGINT, SIG_IGN);  // discards a SIGINT already pending in the child
        ::pthread_sigmask(SIG_SETMASK, &before, nullptr);
    }
    if (::prctl(PR_SET_PDEATHSIG, SIGKILL) != 0 || ::getppid() != parent) ::_exit(70);
    int code = 70;
    try {
        code = body();
    } catch (...) {
        code = 70;  // body() reports its own errors; this is a last resort (EX_SOFTWARE)
    }
    flush_standard_streams();
    ::_exit(code);
}

/// Python's exitcode from a wait status: the exit code, or minus the signal that killed it.
[[nodiscard]] inline int exitcode_from_status(int status) noexcept {
    if (WIFSIGNALED(status)) return -WTERMSIG(status);
    return WEXITSTATUS(status);
}

/// For a child that another process reaps (a forkserver's child): asks that process for the
/// child's exit code. `wait`: the child is known to have ended, so its status is on the way.
/// Returns the exit code (Python's convention), or one of the two values below.
using remote_status_fn = int (*)(pid_t pid, bool wait);
/// The descriptor that polls readable when such a child's reaper may have sent a status.
using remote_wait_fd_fn = int (*)();
inline constexpr int remote_running = INT_MIN;     // not ended yet
inline constexpr int remote_lost = INT_MIN + 1;    // its reaper is gone: ended, status lost

// PIDFD_GET_INFO with PIDFD_INFO_EXIT (Linux 6.15): the exit status of a process, read from a
// pidfd once the process was reaped, by anyone who holds the pidfd. Declared here: Debian 12's
// kernel headers predate it. The first 64 bytes of struct pidfd_info (its first version).
struct pidfd_info_v0 {
    std::uint64_t mask;
    std::uint64_t cgroupid;
    std::uint32_t pid, tgid, ppid, ruid, rgid, euid, egid, suid, sgid, fsuid, fsgid;
    std::int32_t exit_code;  // a wait status
};
static_assert(sizeof(pidfd_info_v0) == 64);
inline constexpr std::uint64_t pidfd_info_exit = 1u << 3;
inline constexpr unsigned long pidfd_get_info = _IOWR(0xFF, 11, pidfd_info_v0);

/// The wait status of the reaped process behind `pidfd`; nullopt when the kernel cannot say
/// (before 6.15, or the process was not reaped yet).
[[nodiscard]] inline std::optional<int> reaped_wait_status(int pidfd) noexcept {
    pidfd_info_v0 info{};
    info.mask = pidfd_info_exit;
    if (::ioctl(pidfd, pidfd_get_info, &info) != 0 || (info.mask & pidfd_info_exit) == 0) return std::nullopt;
    return info.exit_code;
}

/// Tag: a child that another process forked and that the kernel reaps at once (its parent
/// ignores SIGCHLD), whose exit status this process reads from its pidfd.
struct exit_read_from_pidfd_t {};
inline constexpr exit_read_from_pidfd_t exit_read_from_pidfd{};

/// One started child: its pid, a pidfd to wait on (when the kernel has pidfd_open), and its
/// exit code once reaped.
class child_handle {
public:
    child_handle() noexcept = default;
    // pidfd_open accepts a zombie, so ESRCH for our own child means it was reaped already
    // (SIGCHLD ignored, or a handler that reaps every child): its pid, free again, is never
    // signalled. It is not marked lost here: try_reap finds that, after its owner has read
    // what it sent.
    explicit child_handle(pid_t pid) : pid_(pid), pidfd_(sys().pidfd_open(pid, 0)) {
        if (!pidfd_ && errno == ESRCH) vanished_ = true;
    }
    /// A process this one did not fork and cannot wait for (a forkserver's child): `pidfd`
    /// (which may be empty) says when it ends, `remote` gives its exit code, and `remote_fd`'s
    /// descriptor says when its reaper may have sent it.
    child_handle(pid_t pid, unique_fd pidfd, remote_status_fn remote, remote_wait_fd_fn remote_fd) noexcept
        : pid_(pid), pidfd_(std::move(pidfd)), remote_(remote), remote_fd_(remote_fd) {}
    /// A process this one did not fork, reaped by the kernel as soon as it ends: its exit
    /// status is read from `pidfd` (which must be valid) once that reports it reaped.
    child_handle(pid_t pid, unique_fd pidfd, exit_read_from_pidfd_t) noexcept
        : pid_(pid), pidfd_(std::move(pidfd)), exit_from_pidfd_(true) {}
    // A moved-from handle owns no child, so its owner's destructor cannot signal the new owner's.
    child_handle(child_handle&& other) noexcept
        : pid_(std::exchange(other.pid_, 0)),
          pidfd_(std::move(other.pidfd_)),
          exitcode_(std::exchange(other.exitcode_, std::nullopt)),
          lost_(std::exchange(other.lost_, false)),
          vanished_(std::exchange(other.vanished_, false)),
          remote_(std::exchange(other.remote_, nullptr)),
          remote_fd_(std::exchange(other.remote_fd_, nullptr)),
          exit_from_pidfd_(std::exchange(other.exit_from_pidfd_, false)) {}
    child_handle& operator=(child_handle&& other) noexcept {
        pid_ = std::exchange(other.pid_, 0);
        pidfd_ = std::move(other.pidfd_);
        exitcode_ = std::exchange(other.exitcode_, std::nullopt);
        lost_ = std::exchange(other.lost_, false);
        vanished_ = std::exchange(other.vanished_, false);
        remote_ = std::exchange(other.remote_, nullptr);
        remote_fd_ = std::exchange(other.remote_fd_, nullptr);
        exit_from_pidfd_ = std::exchange(other.exit_from_pidfd_, false);
        return *this;
    }

    [[nodiscard]] pid_t pid() const noexcept { return pid_; }
    [[nodiscard]] bool started() const noexcept { return pid_ > 0; }
    /// True once the child is known to be gone: reaped here, or lost (see mark_lost).
    [[nodiscard]] bool reaped() const noexcept { return exitcode_.has_value() || lost_; }
    /// The exit code once reaped here; nullopt while running, and for a lost child.
    [[nodiscard]] const std::optional<int>& exitcode() const noexcept { return exitcode_; }

    /// Records that the child is gone but was reaped elsewhere (waitpid said ECHILD in its parent:
    /// the program ignores SIGCHLD, so the kernel reaped it and dropped its status, or a SIGCHLD
    /// handler reaped it). Its pid is never signalled or waited for again: it may be reused.
    void mark_lost() noexcept {
        lost_ = true;
        pidfd_.reset();
    }
    /// A descriptor that polls readable when the child exits, or -1 without pidfd support.
    [[nodiscard]] int pidfd() const noexcept { return pidfd_.get(); }
    /// What a wait for the child's end polls: its pidfd; for a child reaped elsewhere, the
    /// descriptor its status comes on (one wake-up when the status is there, not one for the
    /// exit and one more for the status). -1 when there is neither.
    [[nodiscard]] int wait_fd() const noexcept {
        if (remote_fd_ && !reaped()) {
            const int fd = remote_fd_();
            if (fd >= 0) return fd;
        }
        return pidfd_.get();
    }

    /// Reaps the child if it has exited; never blocks. Returns true once reaped.
    bool try_reap() {
        if (!started() || reaped()) return reaped();
        if (remote_) return try_reap_remote();
        if (exit_from_pidfd_) return try_read_exit_from_pidfd();
        int status = 0;
        pid_t r;
        do r = sys().waitpid(pid_, &status, WNOHANG);
        while (r < 0 && errno == EINTR);
        if (r < 0) {
            // ECHILD in the parent: reaped elsewhere (SIGCHLD ignored, or a handler that reaps
            // every child), so it is gone and its status lost. Callers make sure they are the
            // parent (a forked copy of a handle gets ECHILD too).
            if (errno != ECHILD) throw_errno("waitpid");
            mark_lost();
        }
        if (r == pid_) {
            exitcode_ = exitcode_from_status(status);
            pidfd_.reset();
        }
        return reaped();
    }

    /// Waits until the child exits or the deadline passes; true once reaped.
    bool wait(const Deadline& deadline) {
        for (;;) {
            if (try_reap()) return true;
            if (deadline.expired()) return false;
            sleep_until_exit_or(deadline);
        }
    }

    /// Sends a signal unless the child was already reaped (its pid may belong to another process
    /// by now). A child that exited but is not yet reaped is a zombie: the signal is harmless.
    ///
    /// Through the pidfd when there is one: it names this child and no other, so a child reaped
    /// behind our back (SIGCHLD ignored: the kernel reaps it at once, before try_reap can notice)
    /// is ESRCH, never a stranger that was given its pid. kill() is the fallback for kernels
    /// without pidfds (before 5.3: pidfd_open said ENOSYS and there is no descriptor).
    void signal(int sig) {
        if (!started() || reaped() || vanished_) return;
        if (pidfd_) {
            if (sys().pidfd_send_signal(pidfd_.get(), sig, nullptr, 0) == 0 || errno == ESRCH)
                return;
            if (errno != ENOSYS) throw_errno("pidfd_send_signal");
        }
        if (sys().kill(pid_, sig) != 0 && errno != ESRCH) throw_errno("kill");
    }

    /// Blocks on the pidfd (or sleeps briefly without one) until the child may have exited.
    void sleep_until_exit_or(const Deadline& deadline) {
        if (pidfd_) {
            pollfd p{pidfd_.get(), POLLIN, 0};
            poll_until(std::span(&p, 1), deadline);
        } else {
            pollfd none{-1, 0, 0};
            sys().poll(&none, 1, std::min(deadline.poll_ms() < 0 ? 5 : deadline.poll_ms(), 5));
        }
    }

    /// SIGTERM, a grace period, then SIGKILL; always reaps. Never throws.
    void stop_and_reap(std::chrono::milliseconds grace) noexcept {
        try {
            if (!started() || try_reap()) return;
            signal(SIGTERM);
            if (wait(Deadline::after(grace))) return;
            signal(SIGKILL);
            wait(Deadline::never());
        } catch (...) {
            // Reaping failed (another party reaped it: ECHILD); nothing is left to clean.
        }
    }

private:
    bool try_read_exit_from_pidfd() {
        // POLLHUP once reaped (an instant after the exit that POLLIN reports): then the kernel
        // has the status. Without one (the pidfd of a process that ended and whose status the
        // kernel dropped), the child is gone and its status lost.
        pollfd p{pidfd_.get(), POLLIN, 0};
        if (sys().poll(&p, 1, 0) <= 0 || (p.revents & POLLHUP) == 0) return false;
        if (const auto status = reaped_wait_status(pidfd_.get())) {
            exitcode_ = exitcode_from_status(*status);
            pidfd_.reset();
        } else {
            mark_lost();
        }
        return true;
    }

    bool try_reap_remote() {
        // A status already sent is taken at once; else, a child the pidfd says ended has its
        // status on the way (the reaper sends it as soon as it reaps): wait for that.
        int code = remote_(pid_, false);
        if (code == remote_running) {
            if (pidfd_) {
                pollfd p{pidfd_.get(), POLLIN, 0};
                if (sys().poll(&p, 1, 0) <= 0) return false;  // still running (or EINTR: ask again later)
            }
            code = remote_(pid_, true);
        }
        if (code == remote_running) return false;
        if (code == remote_lost) mark_lost();
        else {
            exitcode_ = code;
            pidfd_.reset();
        }
        return true;
    }

    pid_t pid_ = 0;
    unique_fd pidfd_;
    std::optional<int> exitcode_;
    bool lost_ = false;
    bool vanished_ = false;  // gone before its pidfd could be opened
    remote_status_fn remote_ = nullptr;
    remote_wait_fd_fn remote_fd_ = nullptr;
    bool exit_from_pidfd_ = false;  // see exit_read_from_pidfd_t
};

/// The number of CPUs this process may run on (its affinity mask), at least 1.
[[nodiscard]] inline unsigned usable_cpu_count() noexcept {
    for (std::size_t cpus = 1024; cpus <= (1u << 20); cpus *= 4) {
        cpu_set_t* set = CPU_ALLOC(cpus);
        if (!set) break;
        const std::size_t bytes = CPU_ALLOC_SIZE(cpus);
        const int rc = ::sched_getaffinity(0, bytes, set);
        const int count = rc == 0 ? CPU_COUNT_S(bytes, set) : 0;
        CPU_FREE(set);
        if (rc == 0) return count > 0 ? static_cast<unsigned>(count) : 1u;
        if (errno != EINVAL) break;  // EINVAL: the mask is larger than our set; try bigger
    }
    long online = ::sysconf(_SC_NPROCESSORS_ONLN);
    return online > 0 ? static_cast<unsigned>(online) : 1u;
}

}  // namespace detail
MPROC_NAMESPACE_END

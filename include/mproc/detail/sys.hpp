// The one seam through which mproc makes its system calls.
//
// Every POSIX call that can fail in an interesting way (EINTR, EAGAIN, ENOSPC, EMFILE) goes through
// `sys()`, a table of function pointers. Tests replace an entry to inject a failure and watch the
// library cope (the idea of fmt's posix-mock); the cost is one indirect call next to a syscall.
#pragma once

#include <mproc/version.hpp>

#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <linux/futex.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <csignal>
#include <cstdint>
#include <ctime>

MPROC_NAMESPACE_BEGIN
namespace detail {

inline int raw_pidfd_open(pid_t pid, unsigned flags) {
#ifdef SYS_pidfd_open
    return static_cast<int>(::syscall(SYS_pidfd_open, pid, flags));
#else
    (void)pid;
    (void)flags;
    errno = ENOSYS;
    return -1;
#endif
}

inline int raw_pidfd_send_signal(int pidfd, int sig, siginfo_t* info, unsigned flags) {
#ifdef SYS_pidfd_send_signal
    return static_cast<int>(::syscall(SYS_pidfd_send_signal, pidfd, sig, info, flags));
#else
    (void)pidfd;
    (void)sig;
    (void)info;
    (void)flags;
    errno = ENOSYS;
    return -1;
#endif
}

inline int raw_socketpair(int domain, int type, int protocol, int* fds) {
    return ::socketpair(domain, type, protocol, fds);
}

/// futex(2) without the unused uaddr2/val3 arguments (glibc has no wrapper).
inline long raw_futex(std::uint32_t* word, int op, std::uint32_t value, const timespec* timeout) {
    return ::syscall(SYS_futex, word, op, value, timeout, nullptr, 0);
}

inline void* raw_mmap(void* addr, size_t length, int prot, int flags, int fd, off_t offset) {
    return ::mmap(addr, length, prot, flags, fd, offset);
}

/// This process's pid without a system call on the hot path (glibc no longer caches getpid).
/// A fork handler forgets the cached value in the child.
[[nodiscard]] inline pid_t current_pid() noexcept {
    static std::atomic<pid_t> cached{0};
    pid_t pid = cached.load(std::memory_order_relaxed);
    if (pid == 0) [[unlikely]] {
        static const int registered = ::pthread_atfork(nullptr, nullptr, [] {
            cached.store(0, std::memory_order_relaxed);
        });
        (void)registered;
        pid = ::getpid();
        cached.store(pid, std::memory_order_relaxed);
    }
    return pid;
}

/// The system calls mproc makes, as replaceable function pointers.
struct sys_table {
    ssize_t (*read)(int, void*, size_t) = ::read;
    ssize_t (*sendmsg)(int, const msghdr*, int) = ::sendmsg;
    int (*poll)(pollfd*, nfds_t, int) = ::poll;
    int (*close)(int) = ::close;
    int (*socketpair)(int, int, int, int*) = raw_socketpair;
    pid_t (*fork)() = ::fork;
    pid_t (*waitpid)(pid_t, int*, int) = ::waitpid;
    int (*kill)(pid_t, int) = ::kill;
    int (*pidfd_open)(pid_t, unsigned) = raw_pidfd_open;
    int (*pidfd_send_signal)(int, int, siginfo_t*, unsigned) = raw_pidfd_send_signal;
    long (*futex)(std::uint32_t*, int, std::uint32_t, const timespec*) = raw_futex;
    void* (*mmap)(void*, size_t, int, int, int, off_t) = raw_mmap;
    int (*shm_open)(const char*, int, mode_t) = ::shm_open;
    int (*ftruncate)(int, off_t) = ::ftruncate;
    int (*madvise)(void*, size_t, int) = ::madvise;
};

/// The table in use. Tests may assign entries; restore them afterwards.
inline sys_table& sys() noexcept {
    static constinit sys_table table{};
    return table;
}

}  // namespace detail
MPROC_NAMESPACE_END

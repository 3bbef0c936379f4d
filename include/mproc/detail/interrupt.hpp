// The POSIX side of mproc::InterruptScope: a SIGINT handler that records the signal where a
// Pool's wait sees it.
#pragma once

#include <mproc/error.hpp>

#include <sys/eventfd.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <csignal>
#include <cstdint>

MPROC_NAMESPACE_BEGIN
namespace detail {

/// What the SIGINT handler records. It only bumps a counter and writes to an eventfd (both
/// async-signal-safe): a Pool's wait polls the eventfd, so the signal wakes it whichever thread
/// the handler ran on.
struct interrupt_state {
    std::atomic<std::uint64_t> received{0};
    std::atomic<int> wake_fd{-1};
};

[[nodiscard]] inline interrupt_state& interrupts() noexcept {
    static interrupt_state state;
    return state;
}

inline void on_sigint(int) noexcept {
    const int saved = errno;
    interrupt_state& s = interrupts();
    s.received.fetch_add(1, std::memory_order_seq_cst);
    const std::uint64_t one = 1;
    if (const int fd = s.wake_fd.load(std::memory_order_relaxed); fd >= 0) {
        [[maybe_unused]] const ssize_t r = ::write(fd, &one, sizeof one);
    }
    errno = saved;
}

/// Installs on_sigint (without SA_RESTART, so a blocking call returns EINTR); saves the old action.
inline void install_sigint_handler(struct sigaction& previous) {
    interrupt_state& s = interrupts();
    if (s.wake_fd.load() < 0) {
        const int fd = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
        if (fd < 0) throw_errno("eventfd");
        s.wake_fd.store(fd);  // kept for the process's life: a late handler may still write to it
    }
    struct sigaction action {};
    action.sa_handler = on_sigint;
    sigemptyset(&action.sa_mask);
    if (::sigaction(SIGINT, &action, &previous) != 0) throw_errno("sigaction");
}

inline void restore_sigint_handler(const struct sigaction& previous) noexcept {
    (void)::sigaction(SIGINT, &previous, nullptr);
}

/// Empties the wake eventfd after a wait woke on it.
inline void drain_interrupt_wake() noexcept {
    if (const int fd = interrupts().wake_fd.load(std::memory_order_relaxed); fd >= 0) {
        std::uint64_t count;
        while (::read(fd, &count, sizeof count) > 0) {
        }
    }
}

}  // namespace detail
MPROC_NAMESPACE_END

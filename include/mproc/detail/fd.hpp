// File descriptors: an owning handle and the EINTR-safe read/write/poll loops built on sys().
#pragma once

#include <mproc/detail/deadline.hpp>
#include <mproc/detail/sys.hpp>
#include <mproc/error.hpp>

#include <linux/sockios.h>
#include <sys/ioctl.h>
#include <sys/stat.h>

#include <algorithm>
#include <chrono>
#include <climits>
#include <cerrno>
#include <cstddef>
#include <cstdio>
#include <span>
#include <thread>
#include <utility>

MPROC_NAMESPACE_BEGIN
namespace detail {

/// Owns one file descriptor. Move-only; the destructor closes and never throws.
class unique_fd {
public:
    unique_fd() noexcept = default;
    explicit unique_fd(int fd) noexcept : fd_(fd) {}
    unique_fd(unique_fd&& other) noexcept : fd_(std::exchange(other.fd_, -1)) {}
    unique_fd& operator=(unique_fd&& other) noexcept {
        if (this != &other) {
            reset();
            fd_ = std::exchange(other.fd_, -1);
        }
        return *this;
    }
    unique_fd(const unique_fd&) = delete;
    unique_fd& operator=(const unique_fd&) = delete;
    ~unique_fd() { reset(); }

    [[nodiscard]] int get() const noexcept { return fd_; }
    [[nodiscard]] bool valid() const noexcept { return fd_ >= 0; }
    explicit operator bool() const noexcept { return valid(); }
    [[nodiscard]] int release() noexcept { return std::exchange(fd_, -1); }

    /// Closes now. close(2) is never retried on EINTR: on Linux the descriptor is gone either
    /// way, and a retry could close a descriptor another thread just opened.
    void reset() noexcept {
        if (fd_ >= 0) sys().close(std::exchange(fd_, -1));
    }

private:
    int fd_ = -1;
};

/// A connected AF_UNIX stream socket pair, both ends close-on-exec. One-way (`duplex` false):
/// bytes flow only from the second end to the first.
[[nodiscard]] inline std::pair<unique_fd, unique_fd> make_socketpair(bool duplex = true) {
    int fds[2];
    if (sys().socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) != 0)
        throw_errno("socketpair");
    std::pair<unique_fd, unique_fd> ends{unique_fd(fds[0]), unique_fd(fds[1])};
    if (!duplex && (::shutdown(fds[0], SHUT_WR) != 0 || ::shutdown(fds[1], SHUT_RD) != 0))
        throw_errno("shutdown");
    return ends;
}

/// Sends every byte of `parts` on a socket, resuming after partial writes and EINTR. MSG_NOSIGNAL
/// turns a closed peer into EPIPE instead of a process-killing SIGPIPE.
/// @throws EndOfStream when the peer is gone, SystemError otherwise.
inline void send_all(int fd, std::span<iovec> parts) {
    std::size_t first = 0;
    while (first < parts.size()) {
        msghdr msg{};
        msg.msg_iov = parts.data() + first;
        msg.msg_iovlen = std::min<std::size_t>(parts.size() - first, IOV_MAX);
        ssize_t sent = sys().sendmsg(fd, &msg, MSG_NOSIGNAL);
        if (sent < 0) {
            if (errno == EINTR) continue;
            if (errno == EPIPE || errno == ECONNRESET) throw EndOfStream("peer closed the connection");
            throw_errno("sendmsg");
        }
        auto left = static_cast<std::size_t>(sent);
        while (first < parts.size() && left >= parts[first].iov_len) left -= parts[first++].iov_len;
        if (left > 0) {
            parts[first].iov_base = static_cast<char*>(parts[first].iov_base) + left;
            parts[first].iov_len -= left;
        }
    }
}

/// Reads up to `out.size()` bytes, retrying EINTR. Returns 0 at end of stream; -1 with
/// errno == EAGAIN on a non-blocking descriptor with nothing to read.
inline ssize_t read_some(int fd, std::span<std::byte> out) {
    for (;;) {
        ssize_t got = sys().read(fd, out.data(), out.size());
        if (got >= 0) return got;
        if (errno == EINTR) continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK) return -1;
        if (errno == ECONNRESET) return 0;
        throw_errno("read");
    }
}

/// Fills `out` completely. Returns the number of bytes read, which is less than out.size() only
/// when the stream ended first.
inline std::size_t read_exact(int fd, std::span<std::byte> out) {
    std::size_t done = 0;
    while (done < out.size()) {
        ssize_t got = read_some(fd, out.subspan(done));
        if (got == 0) break;
        if (got < 0) throw_errno(EAGAIN, "read");
        done += static_cast<std::size_t>(got);
    }
    return done;
}

/// poll(2) until the deadline, resuming after EINTR with the time that is left, after calling
/// on_interrupt() (which may throw to stop waiting). Returns the number of ready descriptors, 0
/// on timeout.
template <class OnInterrupt>
int poll_until(std::span<pollfd> fds, const Deadline& deadline, OnInterrupt&& on_interrupt) {
    for (;;) {
        int ready = sys().poll(fds.data(), fds.size(), deadline.poll_ms());
        if (ready >= 0) return ready;
        if (errno != EINTR) throw_errno("poll");
        on_interrupt();
        if (deadline.expired()) return 0;
    }
}
inline int poll_until(std::span<pollfd> fds, const Deadline& deadline) {
    return poll_until(fds, deadline, [] {});
}

/// Sets or clears O_NONBLOCK.
inline void set_nonblocking(int fd, bool on) {
    int flags = ::fcntl(fd, F_GETFL);
    if (flags < 0) throw_errno("fcntl");
    flags = on ? (flags | O_NONBLOCK) : (flags & ~O_NONBLOCK);
    if (::fcntl(fd, F_SETFL, flags) < 0) throw_errno("fcntl");
}

/// Waits until whoever reads the pipe or socket `fd` has taken every byte written to it, or until
/// the deadline. True when nothing is left unread or nothing can be told (a file or a terminal
/// keeps what it was given; a failed ioctl); false when bytes were still unread at the deadline.
/// For the last words of a process that is about to be killed by the very process reading its
/// output: an MPI launcher ends the whole job on MPI_Abort and can drop what is still in the pipe.
/// Polls every millisecond: it is for a process's final moments, not a hot path.
inline bool wait_until_read(int fd, const Deadline& deadline) noexcept {
    struct stat st {};
    if (::fstat(fd, &st) != 0) return true;
    unsigned long request = 0;
    if (S_ISFIFO(st.st_mode))
        request = FIONREAD;  // on either end of a pipe: the bytes in it
    else if (S_ISSOCK(st.st_mode))
        request = SIOCOUTQ;  // sent, not yet taken by the peer (AF_UNIX) or not yet acknowledged
    else
        return true;
    for (;;) {
        int unread = 0;
        if (::ioctl(fd, request, &unread) != 0 || unread <= 0) return true;
        if (deadline.expired()) return false;
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
}

}  // namespace detail
MPROC_NAMESPACE_END

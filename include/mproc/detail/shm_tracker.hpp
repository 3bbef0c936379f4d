// The tracker of named shared memory: a small process per creating process that unlinks the names
// its creator still owned when the creator dies without unlinking them (SIGKILL, a crash).
//
// Python's resource tracker unlinks segments other processes still use and warns about "leaks"
// at every exit. This one unlinks exactly the names its creator still owned: created by it, not
// unlinked, not keep()-ed (handed over), and still the same file (a name someone else unlinked
// and created again is not the creator's any more). It prints nothing.
//
// The creator tells its tracker over a pipe: "+<inode> <name>" when it creates a name, "-<name>"
// when it stops owning it. The tracker watches the creator with a pidfd; when it dies, it reads
// what is left in the pipe and unlinks what is still owned. The tracker is forked twice (so it
// is not the creator's child: nobody has to reap it, and a program that waits for "all its
// children" never waits for it), starts its own session (Ctrl-C and a closed terminal that end
// the creator leave it alive to clean up), and closes every other descriptor it inherited.
#pragma once

#include <mproc/detail/fd.hpp>
#include <mproc/detail/sys.hpp>

#include <sys/stat.h>

#include <climits>
#include <csignal>
#include <cstring>
#include <map>
#include <mutex>
#include <string>

MPROC_NAMESPACE_BEGIN
namespace detail {

/// The tracker's loop: never returns.
[[noreturn]] inline void shm_tracker_main(int messages, int creator) noexcept {
    std::map<std::string, ino_t> owned;
    std::string pending;
    char buffer[4096];
    auto read_available = [&](bool block) {
        for (;;) {
            pollfd p{messages, POLLIN, 0};
            if (::poll(&p, 1, block ? -1 : 0) <= 0) return true;
            const ssize_t got = ::read(messages, buffer, sizeof buffer);
            if (got < 0 && errno == EINTR) continue;
            if (got <= 0) return false;  // the creator and every copy of its end are gone
            pending.append(buffer, static_cast<std::size_t>(got));
            for (std::size_t end; (end = pending.find('\n')) != std::string::npos; pending.erase(0, end + 1)) {
                const std::string line = pending.substr(0, end);
                if (line.size() < 2) continue;
                if (line[0] == '-') owned.erase(line.substr(1));
                if (line[0] == '+') {
                    const std::size_t space = line.find(' ');
                    if (space == std::string::npos) continue;
                    owned[line.substr(space + 1)] = static_cast<ino_t>(std::strtoull(line.c_str() + 1, nullptr, 10));
                }
            }
            if (block) return true;
        }
    };
    for (;;) {
        pollfd fds[2] = {{messages, POLLIN, 0}, {creator, POLLIN, 0}};
        if (::poll(fds, creator >= 0 ? 2 : 1, -1) < 0) {
            if (errno == EINTR) continue;
            break;
        }
        if (fds[1].revents != 0) break;  // the creator ended
        if (fds[0].revents != 0 && !read_available(true)) break;
    }
    (void)read_available(false);  // what it said before it ended
    for (const auto& [path, inode] : owned) {
        const int fd = ::shm_open(path.c_str(), O_RDONLY | O_CLOEXEC, 0);
        if (fd < 0) continue;
        struct stat st {};
        const bool same = ::fstat(fd, &st) == 0 && st.st_ino == inode;
        ::close(fd);
        if (same) ::shm_unlink(path.c_str());
    }
    ::_exit(0);
}

/// The creating process's side: started at the first create.
class shm_tracker {
public:
    /// Tells the tracker that this process created `path` (whose file has inode `inode`).
    /// Never throws: without a tracker, a name is left behind only if the creator is killed.
    void own(const std::string& path, ino_t inode) noexcept { send('+', std::to_string(inode) + ' ', path, true); }
    /// This process no longer owns `path` (it unlinked it, or keeps it for others).
    void disown(const std::string& path) noexcept { send('-', {}, path, false); }

    /// The tracker's pid (0 when none was started by this process); for tests.
    [[nodiscard]] pid_t pid() const noexcept { return owner_ == ::getpid() ? tracker_ : 0; }

private:
    void send(char op, const std::string& inode, const std::string& path, bool start) noexcept {
        std::lock_guard guard(lock_);
        try {
            // Appended piece by piece: GCC 12 warns (-Wrestrict) about a chain of operator+.
            std::string line(1, op);
            line.append(inode).append(path).push_back('\n');
            if (owner_ != ::getpid()) {
                // First use, or a forked child holding its parent's tracker: not ours.
                write_end_.reset();
                tracker_ = 0;
                if (!start) return;
                start_tracker();
            }
            if (!write_end_ || line.size() > PIPE_BUF) return;  // PIPE_BUF: one atomic write
            ssize_t n;
            do n = ::write(write_end_.get(), line.data(), line.size());
            while (n < 0 && errno == EINTR);
        } catch (...) {
        }
    }

    void start_tracker() {
        int ends[2];
        if (::pipe2(ends, O_CLOEXEC) != 0) throw_errno("pipe2");
        unique_fd read_end(ends[0]), write_end(ends[1]);
        const pid_t creator = ::getpid();
        int report[2];  // the tracker's pid, once it watches the creator
        if (::pipe2(report, O_CLOEXEC) != 0) throw_errno("pipe2");
        unique_fd report_read(report[0]), report_write(report[1]);
        const pid_t middle = ::fork();
        if (middle < 0) throw_errno("fork");
        if (middle == 0) {
            const pid_t tracker = ::fork();
            if (tracker == 0) {
                ::setsid();
                std::signal(SIGINT, SIG_IGN);
                std::signal(SIGHUP, SIG_IGN);
                std::signal(SIGPIPE, SIG_IGN);
                // The creator waits for this report, so it is alive when its pidfd is opened.
                const int pidfd = raw_pidfd_open(creator, 0);
                const pid_t self = pidfd >= 0 ? ::getpid() : 0;  // 0: no way to watch (Linux < 5.3)
                ssize_t ignored = ::write(report_write.get(), &self, sizeof self);
                (void)ignored;
                if (pidfd < 0) ::_exit(0);
                // Only the message pipe and the pidfd stay, at 3 and 4: an inherited socket or
                // pipe end must not be kept open by a process that lives on after its creator.
                const int messages = ::fcntl(read_end.get(), F_DUPFD, 5), watch = ::fcntl(pidfd, F_DUPFD, 5);
                if (messages < 0 || watch < 0 || ::dup2(messages, 3) < 0 || ::dup2(watch, 4) < 0) ::_exit(1);
                ::syscall(SYS_close_range, 5u, ~0u, 0u);
                shm_tracker_main(3, 4);
            }
            ::_exit(tracker < 0 ? 1 : 0);
        }
        int status = 0;
        while (::waitpid(middle, &status, 0) < 0 && errno == EINTR) {
        }
        report_write.reset();
        pid_t tracker = 0;
        if (read_exact(report_read.get(), std::as_writable_bytes(std::span(&tracker, 1))) != sizeof tracker ||
            tracker <= 0)
            throw Error("mproc: the shared memory tracker did not start");
        tracker_ = tracker;
        owner_ = creator;
        write_end_ = std::move(write_end);
    }

    std::mutex lock_;
    pid_t owner_ = 0;
    pid_t tracker_ = 0;
    unique_fd write_end_;
};

inline shm_tracker& shm_names_tracker() {
    static shm_tracker tracker;
    return tracker;
}

}  // namespace detail
MPROC_NAMESPACE_END

// Processes started by exec of the program itself (the spawn and forkserver start methods): the
// executable as mproc::init found it, the marker an exec'd copy finds in its arguments, the one
// request such a process serves, the forkserver's loop, and the caller's side of the forkserver.
#pragma once

#include <mproc/codec.hpp>
#include <mproc/detail/child.hpp>
#include <mproc/detail/frame.hpp>
#include <mproc/detail/function_id.hpp>
#include <mproc/detail/outcome.hpp>
#include <mproc/detail/shared_handle.hpp>
#include <mproc/error.hpp>

#include <spawn.h>
#include <span>
#include <sys/stat.h>

#include <algorithm>
#include <csignal>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <initializer_list>
#include <mutex>
#include <optional>
#include <string>
#include <tuple>
#include <type_traits>
#include <unordered_map>
#include <vector>

extern char** environ;

MPROC_NAMESPACE_BEGIN
namespace detail {

/// argv[1] of a process mproc started by exec; argv[2] is its role, argv[3] the pid of the
/// process that started it.
inline constexpr const char exec_marker[] = "--mproc-exec";
inline constexpr int exec_first_fd = 3;  // the descriptors mproc passes sit at 3, 4, ...

/// What identifies the executable's file: a binary rebuilt or upgraded in place changes it.
struct file_identity {
    dev_t dev = 0;
    ino_t ino = 0;
    off_t size = 0;
    timespec mtime{};
};
[[nodiscard]] inline bool same_file(const file_identity& a, const file_identity& b) noexcept {
    return a.dev == b.dev && a.ino == b.ino && a.size == b.size && a.mtime.tv_sec == b.mtime.tv_sec &&
           a.mtime.tv_nsec == b.mtime.tv_nsec;
}

/// The program as mproc::init found it. `path` is what exec runs: /proc/self/exe is always the
/// file this process was started from, even after a new build was renamed over its name; what
/// exec cannot tell is a file changed in place, hence the identity recorded at init.
struct exec_image {
    bool initialized = false;
    std::string path = "/proc/self/exe";
    std::string argv0;
    file_identity identity;
    int stat_error = 0;  // errno of the stat at init, 0 when it worked
};

inline exec_image& image() {
    static exec_image state;
    return state;
}

[[nodiscard]] inline int identify_file(const char* path, file_identity& out) noexcept {
    struct stat st {};
    if (::stat(path, &st) != 0) return errno;
    out = {st.st_dev, st.st_ino, st.st_size, st.st_mtim};
    return 0;
}

/// Records the executable (mproc::init in the program). Also a test hook: a test points `path`
/// at a copy of the binary and records it, then changes the copy.
inline void record_image(const char* argv0, std::string path = "/proc/self/exe") {
    exec_image& img = image();
    img.path = std::move(path);
    img.argv0 = argv0 ? argv0 : "";
    img.stat_error = identify_file(img.path.c_str(), img.identity);
    img.initialized = true;
}

/// Throws unless exec may start this program again.
inline void check_image() {
    const exec_image& img = image();
    if (!img.initialized)
        throw StateError(
            "mproc: the spawn and forkserver start methods need mproc::init(argc, argv) as the first "
            "line of main");
    if (img.stat_error != 0) throw SystemError(img.stat_error, "stat " + img.path);
    file_identity now;
    if (int err = identify_file(img.path.c_str(), now); err != 0) throw SystemError(err, "stat " + img.path);
    if (!same_file(now, img.identity))
        throw Error("mproc: the program's executable (" + img.path +
                    ") was changed on disk after mproc::init (a rebuild or an upgrade?); spawn and "
                    "forkserver would start a different program, so they refuse: restart the program");
}

/// Starts a fresh copy of this program by exec, with the marker mproc::init recognizes, `role`,
/// and `fds` at descriptors 3, 4, ...; every other descriptor but 0-2 is closed, every signal
/// is back at its default and unblocked: it inherits no state of the caller that mproc does
/// not pass. posix_spawn (a vfork-style clone) costs the same however large the caller is, and
/// is safe in a caller that runs threads.
/// But SIGINT, which starts blocked: a blocked signal survives exec, so a Ctrl-C that lands
/// before the program reaches mproc::init stays pending, and run_exec_role ignores SIGINT (which
/// discards it) before unblocking it. A Pool worker must not die of one (the parent decides);
/// a Process's callable gets SIGINT's default action back before it runs (exec_entry).
/// @throws StateError before mproc::init; Error when the executable changed on disk.
[[nodiscard]] inline pid_t spawn_self(const char* role, std::initializer_list<int> fds) {
    check_image();
    const exec_image& img = image();
    std::string parent = std::to_string(::getpid());
    char* argv[] = {const_cast<char*>(img.argv0.c_str()), const_cast<char*>(exec_marker),
                    const_cast<char*>(role), parent.data(), nullptr};
    // First out of the way of 3, 4, ...: a passed descriptor may already sit at a target.
    std::vector<unique_fd> moved;
    for (int fd : fds) {
        moved.emplace_back(::fcntl(fd, F_DUPFD_CLOEXEC, 16));
        if (!moved.back()) throw_errno("fcntl");
    }
    posix_spawn_file_actions_t actions;
    posix_spawnattr_t attr;
    if (int rc = ::posix_spawn_file_actions_init(&actions); rc != 0) throw SystemError(rc, "posix_spawn");
    if (int rc = ::posix_spawnattr_init(&attr); rc != 0) {
        ::posix_spawn_file_actions_destroy(&actions);
        throw SystemError(rc, "posix_spawn");
    }
    int rc = 0;
    for (std::size_t i = 0; i < moved.size() && rc == 0; ++i)
        rc = ::posix_spawn_file_actions_adddup2(&actions, moved[i].get(), exec_first_fd + static_cast<int>(i));
    if (rc == 0) rc = ::posix_spawn_file_actions_addclosefrom_np(&actions, exec_first_fd + static_cast<int>(moved.size()));
    sigset_t blocked, all;
    sigemptyset(&blocked);
    sigaddset(&blocked, SIGINT);
    sigfillset(&all);
    if (rc == 0) rc = ::posix_spawnattr_setsigmask(&attr, &blocked);
    if (rc == 0) rc = ::posix_spawnattr_setsigdefault(&attr, &all);
    if (rc == 0) rc = ::posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
    pid_t pid = 0;
    if (rc == 0) rc = ::posix_spawn(&pid, img.path.c_str(), &actions, &attr, argv, environ);
    ::posix_spawn_file_actions_destroy(&actions);
    ::posix_spawnattr_destroy(&attr);
    if (rc != 0) throw SystemError(rc, "posix_spawn");
    return pid;
}

// ---- the request an exec'd process (or a forkserver's child) serves ----

/// Runs one request and appends its outcome; true when the callable returned normally.
/// `channel` is the socket the request came on (more may follow on it: descriptors).
using exec_runner = bool (*)(int channel, Decoder& request, std::vector<std::byte>& outcome);

/// A callable that a fresh program can run: a function pointer (sent by identity) or an object
/// with no state (default-constructed there, as C++20 captureless lambdas are). The Pool's
/// stateless_callable_v says the same; it is not included here to keep Process light.
template <class F>
inline constexpr bool exec_callable_v =
    (std::is_pointer_v<F> && std::is_function_v<std::remove_pointer_t<F>>) ||
    (std::is_class_v<F> && std::is_empty_v<F> && std::is_default_constructible_v<F>);

inline constexpr std::size_t max_passed_fds = 4;

/// Sends `bytes` and the descriptors `fds` with them (SCM_RIGHTS).
inline void send_with_fds(int sock, const void* bytes, std::size_t size, std::span<const int> fds) {
    iovec part{const_cast<void*>(bytes), size};
    alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * max_passed_fds)]{};
    msghdr msg{};
    msg.msg_iov = &part;
    msg.msg_iovlen = 1;
    if (!fds.empty()) {
        if (fds.size() > max_passed_fds) throw Error("mproc: too many descriptors in one message");
        msg.msg_control = control;
        msg.msg_controllen = CMSG_SPACE(sizeof(int) * fds.size());
        cmsghdr* c = CMSG_FIRSTHDR(&msg);
        c->cmsg_level = SOL_SOCKET;
        c->cmsg_type = SCM_RIGHTS;
        c->cmsg_len = CMSG_LEN(sizeof(int) * fds.size());
        std::memcpy(CMSG_DATA(c), fds.data(), sizeof(int) * fds.size());
    }
    for (;;) {
        if (sys().sendmsg(sock, &msg, MSG_NOSIGNAL) >= 0) return;
        if (errno == EINTR) continue;
        if (errno == EPIPE || errno == ECONNRESET) throw EndOfStream("mproc: the forkserver is gone");
        throw_errno("sendmsg");
    }
}

inline void send_with_fd(int sock, const void* bytes, std::size_t size, int fd) {
    send_with_fds(sock, bytes, size, fd >= 0 ? std::span<const int>(&fd, 1) : std::span<const int>());
}

/// Receives one message into `bytes` and the descriptors that came with it (as many as `fds`
/// holds; the others are closed). Returns the message's size; 0 when the peer is gone.
inline std::size_t recv_with_fds(int sock, void* bytes, std::size_t size, std::span<unique_fd> fds, int flags = 0) {
    iovec part{bytes, size};
    alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * max_passed_fds)]{};
    msghdr msg{};
    msg.msg_iov = &part;
    msg.msg_iovlen = 1;
    msg.msg_control = control;
    msg.msg_controllen = sizeof control;
    ssize_t got;
    do got = ::recvmsg(sock, &msg, MSG_CMSG_CLOEXEC | flags);
    while (got < 0 && errno == EINTR);
    if (got < 0) {
        if (errno == ECONNRESET) return 0;
        throw_errno("recvmsg");
    }
    for (auto& fd : fds) fd.reset();
    std::size_t next = 0;
    for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c)) {
        if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
        const std::size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
        for (std::size_t i = 0; i < count; ++i) {
            int received;
            std::memcpy(&received, CMSG_DATA(c) + i * sizeof(int), sizeof received);
            unique_fd owned(received);
            if (next < fds.size()) fds[next++] = std::move(owned);
        }
    }
    return static_cast<std::size_t>(got);
}
inline std::size_t recv_with_fd(int sock, void* bytes, std::size_t size, unique_fd& fd, int flags = 0) {
    return recv_with_fds(sock, bytes, size, std::span<unique_fd>(&fd, 1), flags);
}

/// What can be an argument of a function run in a process started by exec: a value the codec
/// encodes, or a shared object (Queue, Lock, SharedValue...), which travels as its memfd.
template <class T>
inline constexpr bool exec_argument_v = Encodable<T> || shared_handle_v<T>;

template <class F, class... Args>
inline constexpr bool exec_sendable_v = exec_callable_v<F> && (exec_argument_v<Args> && ...);

/// At most this many descriptors come with one request (a sanity bound on the count read).
inline constexpr std::uint32_t max_exec_descriptors = 4096;

/// Sends `fds` after a request frame on `sock`, max_passed_fds at a time, one byte each.
inline void send_descriptors(int sock, std::span<const int> fds) {
    const char byte = 0;
    for (std::size_t at = 0; at < fds.size(); at += max_passed_fds)
        send_with_fds(sock, &byte, 1, fds.subspan(at, std::min(max_passed_fds, fds.size() - at)));
}

/// Receives the `count` descriptors send_descriptors sent.
/// @throws DecodeError when some did not come (the peer left, or this process had no room).
[[nodiscard]] inline std::vector<unique_fd> receive_descriptors(int sock, std::uint32_t count) {
    if (count > max_exec_descriptors) throw DecodeError("mproc: a request announces too many descriptors");
    std::vector<unique_fd> fds(count);
    for (std::size_t at = 0; at < fds.size(); at += max_passed_fds) {
        const std::size_t batch = std::min(max_passed_fds, fds.size() - at);
        char byte = 0;
        auto part = std::span<unique_fd>(fds).subspan(at, batch);
        if (recv_with_fds(sock, &byte, 1, part) != 1 ||
            !std::all_of(part.begin(), part.end(), [](const unique_fd& fd) { return fd.valid(); }))
            throw DecodeError("mproc: the descriptors of the request's shared objects did not all come");
    }
    return fds;
}

/// Encodes one argument of a request: a value through the codec, a shared object as its handle
/// (numbers; its descriptors are appended to `fds`).
template <class T>
void encode_exec_argument(Encoder& e, const T& value, std::vector<int>& fds) {
    if constexpr (shared_handle_v<T>) {
        handle_writer w(fds);
        shared_handle<T>::save(value, w);
        e(w.words());
    } else {
        e(value);
    }
}

template <class T>
[[nodiscard]] T decode_exec_argument(Decoder& d, received_descriptors& fds) {
    if constexpr (shared_handle_v<T>) {
        const auto words = decode<std::vector<std::uint64_t>>(d);
        handle_reader r(fds, words);
        T value = shared_handle<T>::load(r);
        r.finish();
        return value;
    } else {
        return decode<T>(d);
    }
}

template <class ArgsTuple>
struct exec_arguments;
template <class... Args>
struct exec_arguments<std::tuple<Args...>> {
    /// The arguments in order (a braced list evaluates left to right).
    static std::tuple<Args...> decode(Decoder& d, received_descriptors& fds) {
        return std::tuple<Args...>{decode_exec_argument<Args>(d, fds)...};
    }
};

/// Runs f(args...) from a request: the function, the number of descriptors sent after the
/// request (received here, from `channel`), the arguments. Exceptions go to the caller.
template <class R, class F, class ArgsTuple>
R exec_call(int channel, Decoder& request) {
    function_id fn_id;
    std::uint32_t fd_count = 0;
    request(fn_id, fd_count);
    received_descriptors fds(fd_count != 0 ? receive_descriptors(channel, fd_count) : std::vector<unique_fd>());
    F fn = [&] {
        if constexpr (std::is_pointer_v<F>) return resolve<F>(fn_id);
        else return F{};
    }();
    auto args = exec_arguments<ArgsTuple>::decode(request, fds);
    if constexpr (std::is_void_v<R>) (void)std::apply(fn, std::move(args));  // an initializer's value is dropped
    else return std::apply(fn, std::move(args));
}

/// What runs a request whose function's outcome nobody sends back (a Pool's initializer).
using exec_caller = void (*)(int channel, Decoder& request);

/// The receiving end of a request for F(Args...), named to the other process by its function_id.
/// SIGINT has its default action again when the callable runs: until here it was ignored (see
/// spawn_self, forkserver_main), as a Pool worker needs it, but a Process is no Pool worker.
template <class R, class F, class ArgsTuple>
bool exec_entry(int channel, Decoder& request, std::vector<std::byte>& outcome) {
    std::signal(SIGINT, SIG_DFL);
    return run_and_encode_outcome<R>(outcome, [&]() -> R { return exec_call<R, F, ArgsTuple>(channel, request); });
}

/// Appends a request for f(args...) that `runner` serves: the runner, the function, the number
/// of descriptors, the arguments; the descriptors of shared objects among them go to `fds`, to
/// be sent after the request (send_descriptors).
template <class F, class... Args>
void encode_exec_request_for(function_id runner, std::vector<std::byte>& out, std::vector<int>& fds, const F& f,
                             const std::tuple<Args...>& args) {
    function_id fn_id{};
    if constexpr (std::is_pointer_v<F>) fn_id = identify(f);
    std::vector<std::byte> encoded_args;
    Encoder arguments(encoded_args);
    std::apply([&](const Args&... each) { (encode_exec_argument(arguments, each, fds), ...); }, args);
    Encoder encoder(out);
    encoder(runner, fn_id, static_cast<std::uint32_t>(fds.size()));
    encoder.write_bytes(encoded_args.data(), encoded_args.size());
}

/// The request for f(args...) in a Process started by exec (exec_entry serves it).
template <class R, class F, class... Args>
void encode_exec_request(std::vector<std::byte>& out, std::vector<int>& fds, const F& f,
                         const std::tuple<Args...>& args) {
    encode_exec_request_for(identify(&exec_entry<R, F, std::tuple<Args...>>), out, fds, f, args);
}

/// The request for f(args...) run as a Pool's initializer (exec_call<void> serves it).
template <class F, class... Args>
void encode_exec_call(std::vector<std::byte>& out, std::vector<int>& fds, const F& f, const std::tuple<Args...>& args) {
    exec_caller caller = &exec_call<void, F, std::tuple<Args...>>;
    encode_exec_request_for(identify(caller), out, fds, f, args);
}

/// Reads one request from `fd`, runs it, sends the outcome back on `fd`, and ends the process:
/// exit code 0 (returned), 1 (threw), 70 (no request came), 71 (the outcome could not be sent),
/// the codes a forked Process child leaves with.
[[noreturn]] inline void serve_request(int fd) noexcept {
    int code = 70;
    try {
        std::vector<std::byte> request, outcome;
        if (recv_frame(fd, request)) {
            Decoder decoder(request);
            function_id runner;
            decoder(runner);
            const bool ok = resolve<exec_runner>(runner)(fd, decoder, outcome);
            code = 71;
            send_frame(fd, outcome);
            code = ok ? 0 : 1;
        }
    } catch (...) {
        // code says how far it got
    }
    flush_standard_streams();
    ::_exit(code);
}

// ---- the forkserver ----
//
// Two SOCK_SEQPACKET connections between the caller and its server. Requests: the caller sends
// one byte with a connected socket (SCM_RIGHTS); a child of the server serves one request on
// that socket (serve_request), and the server answers with the child's pid and a pidfd for it.
// Statuses: the server's first message says how the caller learns its children's exit codes.
// Where the kernel gives a reaped process's status to whoever holds its pidfd (Linux 6.15), the
// server ignores SIGCHLD, so the kernel reaps each child as it ends, and the caller reads the
// status from the child's pidfd: the server is off the exit path, a join waits for the child
// alone. On older kernels the server reaps its children and sends (pid, exit code) for each.
//
// The server keeps one spare child forked ahead of need, asleep on a socket whose other end the
// caller already holds: the server announces it on the statuses connection (the socket, then
// its pid and pidfd). A Process start then takes the announced spare and writes its request
// straight to it: no message to the server and no wait for its reply, the start costs what a
// write to a sleeping process costs. The spare tells the server it was taken (its first act once
// its request came), and the server forks the next one while the caller's child runs (when it
// reaps its children itself, only once that child ended or after 2 ms: a fork would hold up the
// reaping, and so the caller's join). A spare is forked only when no request waits, so a burst
// of requests (a Pool's workers, which always get fresh forks) is not held up by it. A spare
// that dies while it sleeps is found out by the caller (its status, or a write that fails) and
// replaced by the server (its socket to the spare closes).

struct exec_status_message {
    std::int32_t pid;
    std::int32_t code;  // the exit code, or one of the three below
};
// A spare is announced in two messages: its socket before the fork, so that a start that comes
// meanwhile waits for this spare instead of asking for a fork of its own (which the server
// could begin only after this one), and its pid and pidfd after it.
inline constexpr std::int32_t spare_coming = INT32_MIN;         // with the caller's end of its socket
inline constexpr std::int32_t spare_announcement = INT32_MIN + 1;  // pid, with its pidfd
inline constexpr std::int32_t spare_not_forked = INT32_MIN + 2;    // the fork failed
// The server's first message: pid 1 when its children's exit statuses are read from their
// pidfds (the kernel reaps them at once: no status messages), 0 when it sends them.
inline constexpr std::int32_t server_hello = INT32_MIN + 3;

/// Whether this kernel gives a reaped process's exit status to whoever holds its pidfd
/// (PIDFD_INFO_EXIT, Linux 6.15). Tried for real: with SIGCHLD ignored (as the server then
/// keeps it, so the kernel reaps its children at once), a child that exits 42 must read back as
/// 42 from its pidfd. Leaves SIGCHLD ignored when it works, at its default when not.
inline bool exit_status_through_pidfds() noexcept {
    ::signal(SIGCHLD, SIG_IGN);
    bool works = false;
    int gate[2];
    if (::pipe2(gate, O_CLOEXEC) == 0) {
        const pid_t pid = ::fork();
        if (pid == 0) {
            ::close(gate[1]);
            char byte;
            (void)::read(gate[0], &byte, 1);  // until the pidfd is open
            ::_exit(42);
        }
        unique_fd pidfd(pid > 0 ? raw_pidfd_open(pid, 0) : -1);
        ::close(gate[0]);
        ::close(gate[1]);  // the child leaves now
        if (pidfd) {
            pollfd p{pidfd.get(), POLLIN, 0};
            // Reaped an instant after the exit; a kernel without the status never gives it: a
            // few tries (at most 20 ms, once per server), not a wait.
            for (int tries = 0; tries < 20 && ::poll(&p, 1, tries == 0 ? 1000 : 1) >= 0; ++tries) {
                if (const auto status = reaped_wait_status(pidfd.get())) {
                    works = WIFEXITED(*status) && WEXITSTATUS(*status) == 42;
                    break;
                }
            }
        }
        if (!works && pid > 0) {
            ::kill(pid, SIGKILL);
            while (::waitpid(pid, nullptr, 0) < 0 && errno == EINTR) {  // gone (ECHILD) before SIGCHLD's default is back
            }
        }
    }
    if (!works) ::signal(SIGCHLD, SIG_DFL);
    return works;
}

/// Tests only: the next forkserver this process starts sends exit statuses as messages even
/// where the kernel could give them through pidfds (the path older kernels take).
inline bool forkserver_sends_statuses_for_tests = false;

/// The forkserver's loop (the process mproc::init becomes with role "forkserver"). Single
/// threaded; ends when the caller closes its end of the requests (the caller died or exited),
/// and its children then die with it (PR_SET_PDEATHSIG).
class forkserver_loop {
public:
    forkserver_loop(int requests, int statuses, bool exits_by_pidfd) noexcept
        : requests_(requests), statuses_(statuses), exits_by_pidfd_(exits_by_pidfd) {}

    [[noreturn]] void run() noexcept {
        try {
            const exec_status_message hello{exits_by_pidfd_ ? 1 : 0, server_hello};
            send_with_fd(statuses_, &hello, sizeof hello, -1);
            for (;;) {
                int timeout_ms = -1;
                if (!spare_ && !request_waiting()) {
                    timeout_ms = spare_delay_ms();
                    if (timeout_ms < 0) fork_spare();
                }
                if (!wait_for_events(timeout_ms)) break;
                if (fds_[0].revents != 0 && !serve_one_request()) break;
                note_spare_taken();
                reap_ended();
            }
        } catch (...) {
            // The caller is gone (EPIPE) or a call failed: end, and the children with us.
        }
        ::_exit(0);
    }

private:
    struct child {
        pid_t pid;
        int pidfd;  // -1 when pidfd_open failed: polled for now and then
    };
    struct spare_child {
        pid_t pid;
        unique_fd taken;  // polls readable once the spare got its request (or ended)
    };

    [[nodiscard]] bool request_waiting() const noexcept {
        pollfd p{requests_, POLLIN, 0};
        return ::poll(&p, 1, 0) > 0;
    }

    /// How long to put off forking the next spare, -1 for not at all. While the child that took
    /// the last spare runs its (typically short) task, a fork here would hold up reaping it,
    /// and so the caller's join; the next spare comes once it ended or after a few ms.
    [[nodiscard]] int spare_delay_ms() const noexcept {
        if (!last_taken_) return -1;
        const bool running = std::any_of(children_.begin(), children_.end(),
                                         [&](const child& c) { return c.pid == last_taken_->pid; });
        if (!running) return -1;
        const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
            last_taken_->at + std::chrono::milliseconds(2) - std::chrono::steady_clock::now());
        return left.count() > 0 ? static_cast<int>(left.count()) : -1;
    }

    /// Sleeps until a request comes, a child ends or the spare is taken (or `timeout_ms`
    /// passed); false when poll fails.
    bool wait_for_events(int timeout_ms) {
        fds_.assign(1, pollfd{requests_, POLLIN, 0});
        bool unwatched = false;
        for (const child& c : children_) {
            fds_.push_back({c.pidfd, POLLIN, 0});
            unwatched |= c.pidfd < 0;
        }
        if (spare_) fds_.push_back({spare_->taken.get(), POLLIN, 0});
        if (unwatched && (timeout_ms < 0 || timeout_ms > 10)) timeout_ms = 10;
        return ::poll(fds_.data(), fds_.size(), timeout_ms) >= 0 || errno == EINTR;
    }

    /// What a new child does first: drop the server's descriptors, die with the server.
    void become_child() noexcept {
        ::close(requests_);
        ::close(statuses_);
        for (const child& c : children_)
            if (c.pidfd >= 0) ::close(c.pidfd);
        if (spare_) spare_->taken.reset();
        ::signal(SIGCHLD, SIG_DFL);  // the server's own setting: the child's children are its to reap
        if (::prctl(PR_SET_PDEATHSIG, SIGKILL) != 0 || ::getppid() != self_) ::_exit(70);
    }

    /// Forks a child. In the child: returns 0 once it dropped the server's descriptors and (when
    /// the kernel reaps children at once) the server holds its pidfd, for until then it must not
    /// end: its pid could not be opened any more. In the server: the pid, with `pidfd` kept to
    /// reap the child later, or to hand out (close_sent closes it after); -1 with errno when the
    /// fork failed or (exits_by_pidfd_) no pidfd could be had, and the child is killed: nobody
    /// could learn how it ended.
    pid_t fork_child(int& pidfd) {
        pidfd = -1;
        int gate[2] = {-1, -1};
        if (exits_by_pidfd_ && ::pipe2(gate, O_CLOEXEC) != 0) return -1;
        const pid_t pid = ::fork();
        if (pid == 0) {
            become_child();
            if (gate[0] >= 0) {
                ::close(gate[1]);
                char byte;
                while (::read(gate[0], &byte, 1) < 0 && errno == EINTR) {  // end of file: go
                }
                ::close(gate[0]);
            }
            return 0;
        }
        const int fork_errno = errno;
        if (pid > 0) pidfd = raw_pidfd_open(pid, 0);
        const int open_errno = errno;
        if (gate[0] >= 0) {
            ::close(gate[0]);
            ::close(gate[1]);
        }
        if (pid < 0) {
            errno = fork_errno;
            return -1;
        }
        if (!exits_by_pidfd_) {
            children_.push_back({pid, pidfd});
            return pid;
        }
        if (pidfd < 0) {
            ::kill(pid, SIGKILL);
            errno = open_errno;
            return -1;
        }
        return pid;
    }
    void close_sent(int pidfd) noexcept {
        if (exits_by_pidfd_ && pidfd >= 0) ::close(pidfd);
    }

    /// Forks the spare and announces it to the caller: the other end of its request socket,
    /// then its pid and pidfd. The spare sleeps until its request comes (then tells the server
    /// it was taken, and serves it), or leaves quietly when the server's end of `taken` closes
    /// (the server ended).
    void fork_spare() {
        int control[2], channel[2];
        if (::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, control) != 0) return;
        unique_fd server_end(control[0]), spare_control(control[1]);
        if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, channel) != 0) return;
        unique_fd caller_end(channel[0]), spare_channel(channel[1]);
        const exec_status_message coming{0, spare_coming};
        send_with_fd(statuses_, &coming, sizeof coming, caller_end.get());  // the caller gets a duplicate
        caller_end.reset();
        int pidfd;
        const pid_t pid = fork_child(pidfd);
        if (pid < 0) {  // no spare for now: every start asks for a fork
            const exec_status_message failed{0, spare_not_forked};
            send_with_fd(statuses_, &failed, sizeof failed, -1);
            return;
        }
        if (pid == 0) {
            server_end.reset();
            pollfd events[2] = {{spare_channel.get(), POLLIN, 0}, {spare_control.get(), POLLIN, 0}};
            while (::poll(events, 2, -1) < 0 && errno == EINTR) {
            }
            if (events[0].revents == 0) ::_exit(0);  // the server ended: nobody can take us
            const char byte = 0;
            (void)::send(spare_control.get(), &byte, 1, MSG_NOSIGNAL);
            spare_control.reset();
            serve_request(spare_channel.get());
        }
        // The spare's ends are its own before the caller hears of it: a caller that writes its
        // request to a spare that died must get EPIPE, not a write into a socket we still hold.
        spare_channel.reset();
        spare_control.reset();
        spare_ = spare_child{pid, std::move(server_end)};
        const exec_status_message announcement{pid, spare_announcement};
        send_with_fd(statuses_, &announcement, sizeof announcement, pidfd);
        close_sent(pidfd);
    }

    /// The spare said it was taken, or ended: it is an ordinary child from now on.
    void note_spare_taken() noexcept {
        if (!spare_) return;
        pollfd p{spare_->taken.get(), POLLIN, 0};
        if (::poll(&p, 1, 0) <= 0) return;
        last_taken_ = taken_spare{spare_->pid, std::chrono::steady_clock::now()};
        spare_.reset();
    }

    /// Serves the oldest request: its socket goes to a new fork, and the caller gets the
    /// child's pid and pidfd (or minus the fork's errno). False when the caller is gone.
    bool serve_one_request() {
        unique_fd channel;
        char byte;
        if (recv_with_fd(requests_, &byte, 1, channel) == 0) return false;
        if (!channel) return true;
        exec_status_message reply{0, 0};
        int pidfd;
        const pid_t pid = fork_child(pidfd);
        if (pid == 0) serve_request(channel.get());
        reply.pid = pid < 0 ? -errno : pid;
        channel.reset();
        // The pidfd is the server's own: the caller gets a duplicate by SCM_RIGHTS.
        send_with_fd(requests_, &reply, sizeof reply, pidfd);
        close_sent(pidfd);
        return true;
    }

    /// Reaps every child that ended (a spare too) and reports it.
    void reap_ended() {
        for (std::size_t i = 0; i < children_.size();) {
            int status = 0;
            if (::waitpid(children_[i].pid, &status, WNOHANG) != children_[i].pid) {
                ++i;
                continue;
            }
            if (spare_ && spare_->pid == children_[i].pid) spare_.reset();
            exec_status_message message{children_[i].pid, exitcode_from_status(status)};
            send_with_fd(statuses_, &message, sizeof message, -1);
            if (children_[i].pidfd >= 0) ::close(children_[i].pidfd);
            children_.erase(children_.begin() + static_cast<std::ptrdiff_t>(i));
        }
    }

    int requests_;
    int statuses_;
    bool exits_by_pidfd_;  // see server_hello
    const pid_t self_ = ::getpid();
    std::vector<child> children_;  // to reap (the spare too); none when exits_by_pidfd_
    std::optional<spare_child> spare_;
    struct taken_spare {
        pid_t pid;
        std::chrono::steady_clock::time_point at;
    };
    std::optional<taken_spare> last_taken_;
    std::vector<pollfd> fds_;
};

/// Runs the forkserver's loop (see forkserver_loop).
/// `may_use_pidfds`: let its children's exit statuses be read from their pidfds where the
/// kernel allows it (false: always send them as messages).
[[noreturn]] inline void forkserver_main(int requests, int statuses, bool may_use_pidfds) noexcept {
    // Ctrl-C reaches the whole process group: the caller decides what it means. The server
    // ignores SIGINT from its exec on (started with it blocked, then ignored in run_exec_role),
    // and so do its children from their first instruction: a Pool worker must not die of one,
    // and a Process's callable gets the default back before it runs (exec_entry).
    forkserver_loop(requests, statuses, may_use_pidfds && exit_status_through_pidfds()).run();
}

/// The caller's side of its forkserver, started at first use.
class forkserver_client {
public:
    forkserver_client() = default;
    forkserver_client(const forkserver_client&) = delete;
    forkserver_client& operator=(const forkserver_client&) = delete;
    /// At exit: closing the requests ends the server, and its children with it.
    ~forkserver_client() {
        if (owner_ != current_pid()) return;  // a forked copy (exit() in a child): not ours
        requests_.reset();
        statuses_.reset();
        try {
            if (server_.wait(Deadline::after(std::chrono::milliseconds(500)))) return;
        } catch (...) {
        }
        server_.stop_and_reap(std::chrono::milliseconds(500));
    }

    /// Has the server fork a child that serves one request on `channel`.
    /// @returns the child's handle (its pidfd and a way to learn its exit code).
    [[nodiscard]] child_handle start(int channel) {
        started one = std::move(start_many(std::span<const int>(&channel, 1)).front());
        if (one.error != 0) throw SystemError(one.error, "fork (in the forkserver)");
        return std::move(one.child);
    }

    /// One child of start_many: its handle, or the errno of the server's failed fork.
    struct started {
        child_handle child;
        int error = 0;
    };

    /// Has the server fork one child per channel. Requests go out ahead of the replies (up to
    /// a window that the sockets' buffers hold), so the caller's work overlaps the server's
    /// forks: a Pool's workers start at the pace of the server's fork alone.
    /// @throws EndOfStream when the server is gone (children started before stay in the
    ///         server's care and die with it).
    [[nodiscard]] std::vector<started> start_many(std::span<const int> channels) {
        constexpr std::size_t window = 8;
        std::lock_guard guard(lock_);
        ensure_running();
        std::vector<started> out;
        out.reserve(channels.size());
        std::size_t sent = 0;
        while (out.size() < channels.size()) {
            for (; sent < channels.size() && sent - out.size() < window; ++sent) {
                const char byte = 0;
                send_with_fd(requests_.get(), &byte, 1, channels[sent]);
            }
            out.push_back(receive_reply());
        }
        return out;
    }

    /// A spare child the server announced: its handle and the caller's end of its request
    /// socket. Write the request there; a write that fails (EndOfStream) found it dead: call
    /// forget(pid) and start another way.
    struct spare_process {
        child_handle child;
        unique_fd channel;
    };

    /// The spare the server announced, if there is one (waits only for one being forked now,
    /// whose pid is on its way). Starts the server at first use.
    [[nodiscard]] std::optional<spare_process> take_spare() {
        std::lock_guard guard(lock_);
        ensure_running();
        if (!read_waiting_statuses()) return std::nullopt;  // the server is gone: found out later
        while (spare_ && spare_->pid == 0) {  // being forked: its pid comes in a moment
            pollfd p{statuses_.get(), POLLIN, 0};
            if (::poll(&p, 1, -1) < 0 && errno != EINTR) throw_errno("poll");
            if (!read_status()) return std::nullopt;
        }
        if (!spare_) return std::nullopt;
        spare_process taken{handle_for(spare_->pid, std::move(spare_->pidfd)), std::move(spare_->channel)};
        spare_.reset();
        return taken;
    }

    /// Drops the status of a child taken and found dead before it was used (now or when it comes).
    void forget(pid_t pid) {
        std::lock_guard guard(lock_);
        if (exits_by_pidfd_) return;  // no status is sent
        if (seen_.erase(pid) == 0) forgotten_.push_back(pid);
    }

    /// Whether the running server's children's exit statuses are read from their pidfds (see
    /// server_hello); false before it started (tests).
    [[nodiscard]] bool exits_by_pidfd() {
        std::lock_guard guard(lock_);
        return owner_ == current_pid() && requests_ && exits_by_pidfd_;
    }

    /// The pid of the spare announced and not taken, 0 if none or before the server started
    /// (tests).
    [[nodiscard]] pid_t announced_spare() {
        std::lock_guard guard(lock_);
        if (owner_ != current_pid() || !statuses_ || !read_waiting_statuses()) return 0;
        return spare_ ? spare_->pid : 0;  // 0 also while it is being forked
    }

    /// The server's pid, 0 before it started.
    [[nodiscard]] pid_t server_pid() const noexcept { return owner_ == current_pid() ? server_.pid() : 0; }

    /// See remote_status_fn.
    int exit_status(pid_t pid, bool wait) {
        std::lock_guard guard(lock_);
        for (;;) {
            if (auto it = seen_.find(pid); it != seen_.end()) {
                const int code = it->second;
                seen_.erase(it);
                return code;
            }
            if (!statuses_ || owner_ != current_pid()) return remote_lost;
            pollfd p{statuses_.get(), POLLIN, 0};
            // When it ended, the server sends its status right after reaping it.
            if (sys().poll(&p, 1, wait ? 100 : 0) == 0) {
                if (!wait) return remote_running;
                continue;
            }
            if (!read_status()) return remote_lost;  // the server is gone
        }
    }

private:
    /// The server's answer to the oldest request not yet answered.
    started receive_reply() {
        // While waiting for it, read statuses: a server blocked sending statuses nobody read yet
        // (children started and never waited for) would never read the request.
        for (;;) {
            pollfd fds[2] = {{requests_.get(), POLLIN, 0}, {statuses_.get(), POLLIN, 0}};
            if (sys().poll(fds, 2, -1) < 0) {
                if (errno == EINTR) continue;
                throw_errno("poll");
            }
            if (fds[0].revents != 0) break;
            if (fds[1].revents != 0 && !read_status()) throw EndOfStream("mproc: the forkserver is gone");
        }
        exec_status_message reply{};
        unique_fd pidfd;
        if (recv_with_fd(requests_.get(), &reply, sizeof reply, pidfd) != sizeof reply)
            throw EndOfStream("mproc: the forkserver is gone");
        if (reply.pid < 0) return {child_handle(), -reply.pid};
        return {handle_for(reply.pid, std::move(pidfd)), 0};
    }

    /// The handle of a child of the server.
    [[nodiscard]] child_handle handle_for(pid_t pid, unique_fd pidfd) const {
        if (exits_by_pidfd_) return child_handle(pid, std::move(pidfd), exit_read_from_pidfd);
        return child_handle(pid, std::move(pidfd), &remote_status, &remote_status_fd);
    }

    /// Reads every message already on the statuses connection; false when the server is gone.
    bool read_waiting_statuses() {
        for (pollfd p{statuses_.get(), POLLIN, 0}; ::poll(&p, 1, 0) > 0;)
            if (!read_status()) return false;
        return true;
    }

    /// Reads one message from the statuses connection when one is there: a status (into seen_,
    /// or dropped for a spare never taken or a child forgotten) or a spare's announcement.
    /// False when the server is gone.
    bool read_status() {
        exec_status_message message{};
        unique_fd passed;  // a spare's request socket, or its pidfd
        try {
            if (recv_with_fd(statuses_.get(), &message, sizeof message, passed, MSG_DONTWAIT) != sizeof message)
                return false;
        } catch (const SystemError& e) {
            if (e.code().value() != EAGAIN) throw;
            return true;
        }
        if (message.code == spare_coming) {
            if (passed) spare_ = announced{0, std::move(passed), unique_fd()};
            else spare_.reset();  // no room for the descriptor here: no spare
        } else if (message.code == spare_announcement || message.code == spare_not_forked) {
            if (!spare_ || spare_->pid != 0) return true;  // its socket never came
            if (message.code == spare_not_forked) spare_.reset();
            else {
                spare_->pid = message.pid;
                spare_->pidfd = std::move(passed);
            }
        } else if (spare_ && spare_->pid == message.pid) {
            spare_.reset();  // died asleep, before anyone took it
        } else if (auto it = std::find(forgotten_.begin(), forgotten_.end(), message.pid); it != forgotten_.end()) {
            forgotten_.erase(it);
        } else {
            seen_[message.pid] = message.code;
        }
        return true;
    }

    static int remote_status(pid_t pid, bool wait);
    static int remote_status_fd();

    void ensure_running() {
        if (owner_ == current_pid() && requests_) return;
        // First use, or a forked child holding its parent's client: the server is not its own.
        // Closing a forked copy's descriptors leaves the parent's connection alone.
        requests_.reset();
        statuses_.reset();
        server_ = child_handle();
        seen_.clear();
        forgotten_.clear();
        spare_.reset();
        auto requests = seqpacket_pair();
        auto statuses = seqpacket_pair();
        const char* role = forkserver_sends_statuses_for_tests ? "forkserver-statuses" : "forkserver";
        server_ = child_handle(spawn_self(role, {requests.second.get(), statuses.second.get()}));
        // The server's ends are its own now: a copy kept here would keep the hello's read below
        // from ever seeing the end of a server that died before saying it.
        requests.second.reset();
        statuses.second.reset();
        owner_ = current_pid();
        requests_ = std::move(requests.first);
        statuses_ = std::move(statuses.first);
        read_hello();
    }

    /// Waits for the server's first message (it comes once the server has started and tried
    /// the kernel, a millisecond or so: the first start waits for the server anyway).
    void read_hello() {
        exec_status_message hello{};
        unique_fd none;
        std::size_t got;
        try {
            got = recv_with_fd(statuses_.get(), &hello, sizeof hello, none);
        } catch (...) {
            requests_.reset();  // no half-started server: the next use starts another
            throw;
        }
        if (got != sizeof hello || hello.code != server_hello) {
            requests_.reset();
            throw EndOfStream("mproc: the forkserver is gone");
        }
        exits_by_pidfd_ = hello.pid == 1;
    }

    static std::pair<unique_fd, unique_fd> seqpacket_pair() {
        int fds[2];
        if (sys().socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, fds) != 0) throw_errno("socketpair");
        return {unique_fd(fds[0]), unique_fd(fds[1])};
    }

    std::mutex lock_;
    pid_t owner_ = 0;
    unique_fd requests_;
    unique_fd statuses_;
    child_handle server_;
    std::unordered_map<pid_t, int> seen_;  // statuses read while looking for another child's
    std::vector<pid_t> forgotten_;         // children whose status nobody will ask for
    struct announced {
        pid_t pid;
        unique_fd channel;
        unique_fd pidfd;
    };
    std::optional<announced> spare_;
    bool exits_by_pidfd_ = false;  // see server_hello
};

inline forkserver_client& forkserver_connection() {
    static forkserver_client client;
    return client;
}

inline int forkserver_client::remote_status_fd() {
    forkserver_client& client = forkserver_connection();
    std::lock_guard guard(client.lock_);
    return client.owner_ == current_pid() && client.statuses_ ? client.statuses_.get() : -1;
}

inline int forkserver_client::remote_status(pid_t pid, bool wait) {
    try {
        return forkserver_connection().exit_status(pid, wait);
    } catch (...) {
        return remote_lost;
    }
}

/// What mproc::init does in a process mproc started by exec. Never returns.
[[noreturn]] inline void run_exec_role(int argc, char** argv) noexcept {
    const std::string_view role = argv[2];
    const pid_t parent = static_cast<pid_t>(std::atol(argv[3]));
    (void)argc;
    // Started with SIGINT blocked (spawn_self): ignoring it discards a SIGINT that arrived
    // since the exec, then it is unblocked. A Pool worker and the forkserver keep ignoring it.
    std::signal(SIGINT, SIG_IGN);
    sigset_t interrupt;
    ::sigemptyset(&interrupt);
    ::sigaddset(&interrupt, SIGINT);
    ::pthread_sigmask(SIG_UNBLOCK, &interrupt, nullptr);
    if (role == "spawn") {
        // Dies with the process that started it, like a forked child.
        if (::prctl(PR_SET_PDEATHSIG, SIGKILL) != 0 || ::getppid() != parent) ::_exit(70);
        serve_request(exec_first_fd);
    }
    if (role == "forkserver" || role == "forkserver-statuses") {
        // Not PR_SET_PDEATHSIG: Linux ties it to the thread that started the server, which may
        // end long before the program. The server ends when the caller's end of the requests
        // closes instead, which is when the caller's process ends.
        if (::getppid() != parent) ::_exit(70);
        forkserver_main(exec_first_fd, exec_first_fd + 1, role == "forkserver");
    }
    ::_exit(70);
}

}  // namespace detail
MPROC_NAMESPACE_END


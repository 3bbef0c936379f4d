// mproc::Process: run a callable in a child process and get its result back, like Python's
// multiprocessing.Process with a return value.
#pragma once

#include <mproc/codec.hpp>
#include <mproc/detail/child.hpp>
#include <mproc/detail/frame.hpp>
#include <mproc/detail/outcome.hpp>
#include <mproc/start_method.hpp>
#include <mproc/error.hpp>

#include <chrono>
#include <concepts>
#include <functional>
#include <memory>
#include <optional>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

MPROC_NAMESPACE_BEGIN

/// The number of CPUs this process may run on (its affinity mask, as `taskset` sets it), not
/// every core of the machine. Pool uses it as its default worker count.
[[nodiscard]] inline unsigned cpu_count() noexcept { return detail::usable_cpu_count(); }

namespace detail {
template <class R>
struct process_task {
    virtual ~process_task() = default;
    virtual R run() = 0;
    /// Appends the request that runs this task in a process started by exec (spawn,
    /// forkserver), and to `fds` the descriptors of the shared objects among the arguments
    /// (sent after it); false when the callable has state or an argument cannot be encoded.
    virtual bool encode_request(std::vector<std::byte>& out, std::vector<int>& fds) = 0;
};

template <class R, class F, class... Args>
struct bound_process_task final : process_task<R> {
    template <class G, class... A>
    explicit bound_process_task(G&& g, A&&... a)
        : fn(std::forward<G>(g)), args(std::forward<A>(a)...) {}
    R run() override { return std::apply(std::move(fn), std::move(args)); }
    bool encode_request(std::vector<std::byte>& out, std::vector<int>& fds) override {
        if constexpr (exec_sendable_v<F, Args...>) {
            encode_exec_request<R>(out, fds, fn, args);
            return true;
        } else {
            (void)out;
            (void)fds;
            return false;
        }
    }

    F fn;
    std::tuple<Args...> args;
};

/// Process's second template argument: which start methods its callable allows. any_start_method
/// is the default, and what `mproc::Process p(f, args...)` deduces for a stateless f with encodable
/// arguments; a Process<R> named with its type alone erases the callable, and start(mproc::spawn)
/// checks it when called.
struct any_start_method {};
/// What `mproc::Process p(f, args...)` deduces when f has captures or an argument the codec cannot
/// encode: only fork can start it, and start(mproc::spawn) does not compile.
struct fork_start_only {};

template <class F, class... Args>
using process_result_t = std::remove_cvref_t<std::invoke_result_t<std::decay_t<F>, std::decay_t<Args>...>>;
template <class F, class... Args>
using process_starts_t =
    std::conditional_t<exec_sendable_v<std::decay_t<F>, std::decay_t<Args>...>, any_start_method, fork_start_only>;
}  // namespace detail

/// A callable run in a child process. `R` is its return type, sent back through the codec.
///
/// By default the child is made by fork() at start(): the callable, its arguments and everything
/// they point to are the parent's memory as it was at that moment (captures included). With
/// `start(mproc::spawn)` or `start(mproc::forkserver)` (see mproc::StartMethod) it is a fresh
/// program instead, and the callable must be stateless, its arguments encodable. The child ends with
/// _exit, so the parent's atexit handlers and static destructors never run twice, and it is
/// SIGKILLed if the parent dies (PR_SET_PDEATHSIG; note that Linux ties this to the *thread* that
/// called start()).
///
/// Destructor: a child that is still running when its Process is destroyed is terminated
/// (SIGTERM, then SIGKILL after `ProcessOptions::terminate_grace`) and reaped, so no zombie and
/// no orphan is left; join() first to wait for it instead.
/// @code
/// mproc::Process p([](int n) { return n * n; }, 7);
/// p.start();
/// int r = p.result();   // 49
/// @endcode
///
/// `Starts` is deduced, never written: `mproc::Process p(f, 7)` with a lambda that captures is a
/// `Process<int, detail::fork_start_only>`, a Process<int> whose start(mproc::spawn) is a compile
/// error. It converts to, and binds as, Process<int>.
template <class R, class Starts = detail::any_start_method>
class Process {
    static_assert(std::same_as<Starts, detail::any_start_method>,
                  "mproc::Process: give only the result type, mproc::Process<R>");
    static_assert(std::is_void_v<R> || Encodable<R>,
                  "mproc::Process: the callable's return type must be encodable by mproc::codec "
                  "(give it a member serialize(Ar&) or specialize mproc::codec<T>)");
    static_assert(!std::is_reference_v<R>, "mproc::Process: R must be a value type");

public:
    /// The callable's return type, what result() returns.
    using result_type = R;

    /// Binds f(args...) to run in the child. Arguments are stored by value (decayed copies).
    template <class F, class... Args>
        requires std::invocable<std::decay_t<F>, std::decay_t<Args>...> &&
                 std::convertible_to<std::invoke_result_t<std::decay_t<F>, std::decay_t<Args>...>, R>
    explicit Process(F&& f, Args&&... args)
        : task_(std::make_unique<detail::bound_process_task<R, std::decay_t<F>, std::decay_t<Args>...>>(
              std::forward<F>(f), std::forward<Args>(args)...)) {}

    /// Binds f(args...) to start by `mproc::spawn` or `mproc::forkserver` (start() then uses
    /// that method), and checks at compile time that it can: a stateless callable and encodable
    /// arguments. p.start(mproc::spawn) on a Process made without the tag checks the same when
    /// it is called, and throws.
    template <class Tag, class F, class... Args>
        requires(std::same_as<Tag, spawn_t> || std::same_as<Tag, forkserver_t>) &&
                std::invocable<std::decay_t<F>, std::decay_t<Args>...> &&
                std::convertible_to<std::invoke_result_t<std::decay_t<F>, std::decay_t<Args>...>, R>
    Process(Tag, F&& f, Args&&... args) : Process(std::forward<F>(f), std::forward<Args>(args)...) {
        static_assert(detail::exec_callable_v<std::decay_t<F>>,
                      "mproc::Process: with mproc::spawn or mproc::forkserver the function must be "
                      "stateless (a function, or a lambda without captures): the new program cannot "
                      "see the caller's variables. Pass them as arguments");
        static_assert((detail::exec_argument_v<std::decay_t<Args>> && ...),
                      "mproc::Process: with mproc::spawn or mproc::forkserver every argument must be "
                      "encodable by mproc::codec (give it a member serialize(Ar&) or specialize "
                      "mproc::codec<T>) or a shared object (Queue, Lock, SharedValue...)");
        method_ = Tag::method;
        method_given_ = true;
    }

    /// Takes over the child (or the callable, before start()); the moved-from Process is empty.
    Process(Process&&) noexcept = default;
    /// Stops and reaps this Process's running child as the destructor does, then takes over
    /// `other`'s.
    Process& operator=(Process&& other) noexcept {
        if (this != &other) {
            stop_if_owner();
            child_ = std::move(other.child_);
            task_ = std::move(other.task_);
            channel_ = std::move(other.channel_);
            received_ = std::move(other.received_);
            terminate_grace = other.terminate_grace;
            owner_ = other.owner_;
            method_ = other.method_;
            method_given_ = other.method_given_;
        }
        return *this;
    }
    Process(const Process&) = delete;
    Process& operator=(const Process&) = delete;
    ~Process() { stop_if_owner(); }

    /// Starts the child by the method given to the constructor, or else the process-wide one
    /// (mproc::set_start_method; fork unless set). A Process starts once.
    /// @throws StateError when already started; SystemError when fork or socketpair fails.
    void start() { start(method_given_ ? method_ : get_start_method()); }
    /// Starts the child by `method`. spawn and forkserver need mproc::init in main, a stateless
    /// callable and encodable arguments.
    /// @throws StateError before mproc::init; Error when the callable has state or an argument
    ///         cannot be encoded, or when the executable changed on disk since mproc::init.
    void start(StartMethod method);
    /// `p.start(mproc::spawn)`: the program executed afresh runs the callable.
    void start(spawn_t) { start(StartMethod::spawn); }
    /// `p.start(mproc::forkserver)`: a fork of the forkserver runs the callable.
    void start(forkserver_t) { start(StartMethod::forkserver); }

    /// Waits for the child to end. Never throws the child's exception (result() does).
    /// Only the process that called start() can wait: in a forked copy (a child holding this
    /// handle) join(), is_alive(), exitcode() and result() throw StateError, unless the child
    /// had already been seen to end before that fork.
    void join() { (void)wait_for_exit(detail::Deadline::never()); }

    /// Waits at most `timeout`; true when the child has ended.
    template <class Rep, class Period>
    bool join(std::chrono::duration<Rep, Period> timeout) {
        return wait_for_exit(detail::Deadline::after(timeout));
    }

    /// True between start() and the child's end.
    [[nodiscard]] bool is_alive() { return child_.started() && !poll_exit(); }

    /// The child's pid, or 0 before start().
    [[nodiscard]] pid_t pid() const noexcept { return child_.pid(); }

    /// Python's exitcode: nullopt while running (or before start), the exit code 0..255, or
    /// minus the signal that killed it (-9 for SIGKILL).
    /// A program that ignores SIGCHLD has its children reaped by the kernel, which drops their
    /// status: the code is then 0 or 1 when the child sent its value or exception (the codes it
    /// leaves with), and nullopt when it ended without a result (is_alive() says it has ended).
    [[nodiscard]] std::optional<int> exitcode();

    /// Sends SIGTERM (no effect once the child has ended).
    void terminate() { child_.signal(SIGTERM); }
    /// Sends SIGKILL (no effect once the child has ended).
    void kill() { child_.signal(SIGKILL); }

    /// Joins, then returns the callable's return value (or nothing, for void).
    /// @throws RemoteError when the callable threw (type name and message of the original);
    ///         ProcessCrashed when the child ended without a result (signal, _exit, abort); its
    ///         status_lost() is true when the status was lost (SIGCHLD ignored, see exitcode()).
    R result();

    /// How long the destructor waits after SIGTERM before it sends SIGKILL.
    std::chrono::milliseconds terminate_grace{1000};

private:
    void start_fork();
    void start_exec(StartMethod method);
    /// Starts on the forkserver's spare child when one is ready; false when none is (or it had died).
    bool start_on_spare(const std::vector<std::byte>& request, const std::vector<int>& fds);
    bool wait_for_exit(const detail::Deadline& deadline);
    void drain_channel();
    bool poll_exit();
    void stop_if_owner() noexcept {
        // A forked copy (a child that called exit(), running static destructors) must leave
        // the parent's child alone.
        if (detail::current_pid() == owner_) child_.stop_and_reap(terminate_grace);
    }

    std::unique_ptr<detail::process_task<R>> task_;
    detail::child_handle child_;
    detail::unique_fd channel_;        // parent's end of the result socket
    std::vector<std::byte> received_;  // bytes of the result frame received so far
    pid_t owner_ = 0;                  // the process that called start()
    StartMethod method_ = StartMethod::fork;  // given to the constructor, when method_given_
    bool method_given_ = false;
};

/// A Process whose callable only fork can start: a lambda with captures, or an argument the codec
/// cannot encode. What `mproc::Process p(f, args...)` deduces for those; everything but the
/// tagged start() is Process<R>'s, and it binds to a `Process<R>&` and moves into a Process<R>.
template <class R>
class Process<R, detail::fork_start_only> : public Process<R> {
public:
    using Process<R>::Process;

    /// Starts the child by fork, or by the process-wide method (which then checks the callable
    /// when called, as Process<R>::start does).
    void start() { Process<R>::start(); }
    /// Starts the child by `method`: spawn and forkserver throw Error for this callable.
    void start(StartMethod method) { Process<R>::start(method); }
    /// Does not compile: see the message.
    template <class Tag>
        requires(std::same_as<Tag, spawn_t> || std::same_as<Tag, forkserver_t>)
    void start(Tag) {
        static_assert(sizeof(Tag) == 0,
                      "mproc::Process: start(mproc::spawn) and start(mproc::forkserver) run the "
                      "function in a new program, so it must be stateless (no lambda captures) and "
                      "every argument encodable by mproc::codec: pass the captured values as arguments");
    }
};

/// Deduces R from what f(args...) returns: `mproc::Process p(f, 7);` is a Process<int> for an
/// int f(int) (a Process<int, detail::fork_start_only> when f has captures or an argument cannot
/// be encoded).
template <class F, class... Args>
Process(F, Args...) -> Process<detail::process_result_t<F, Args...>, detail::process_starts_t<F, Args...>>;
/// The same deduction for the tagged forms: `mproc::Process p(mproc::spawn, f, 7);` (the
/// constructor checks that f can start so).
template <class F, class... Args>
Process(spawn_t, F, Args...) -> Process<detail::process_result_t<F, Args...>>;
/// The same deduction for `mproc::Process p(mproc::forkserver, f, 7);`.
template <class F, class... Args>
Process(forkserver_t, F, Args...) -> Process<detail::process_result_t<F, Args...>>;

template <class R, class Starts>
void Process<R, Starts>::start(StartMethod method) {
    if (child_.started()) throw StateError("mproc::Process: start() called twice");
    if (!task_) throw StateError("mproc::Process: start() on a moved-from Process");
    if (method == StartMethod::fork) start_fork();
    else start_exec(method);
    // The parent never runs the task: dropping it now closes any descriptor (a Pipe end, say)
    // that was moved into the arguments, as Python users close their copy after start().
    task_.reset();
}

template <class R, class Starts>
void Process<R, Starts>::start_exec(StartMethod method) {
    std::vector<std::byte> request;
    std::vector<int> fds;  // of shared objects among the arguments, which task_ keeps open
    if (!task_->encode_request(request, fds))
        throw Error(
            "mproc::Process: with mproc::spawn or mproc::forkserver the function must be stateless "
            "(a function, or a lambda without captures) and every argument encodable: the new "
            "program cannot see the caller's variables. Pass them as arguments");
    if (method == StartMethod::forkserver && start_on_spare(request, fds)) return;
    auto ends = detail::make_socketpair();
    const auto send_request = [&] {
        detail::send_frame(ends.first.get(), request);
        detail::send_descriptors(ends.first.get(), fds);
    };
    // A small request is queued before the child exists, so the child reads it at once instead
    // of waiting until this process runs again after the start. A large one could fill the
    // socket's buffer (about 200 KiB) with nobody reading yet: it goes after the start.
    const bool ahead = request.size() <= 64 * 1024 && fds.size() <= 64;
    if (ahead) send_request();
    child_ = method == StartMethod::spawn
                 ? detail::child_handle(detail::spawn_self("spawn", {ends.second.get()}))
                 : detail::forkserver_connection().start(ends.second.get());
    owner_ = detail::current_pid();
    ends.second.reset();
    try {
        if (!ahead) send_request();
    } catch (const EndOfStream&) {
        // The child ended before reading its task: result() reports how it ended.
    }
    detail::set_nonblocking(ends.first.get(), true);
    channel_ = std::move(ends.first);
}

template <class R, class Starts>
bool Process<R, Starts>::start_on_spare(const std::vector<std::byte>& request, const std::vector<int>& fds) {
    auto& server = detail::forkserver_connection();
    auto spare = server.take_spare();
    if (!spare) return false;
    try {
        detail::send_frame(spare->channel.get(), request);
    } catch (const EndOfStream&) {
        server.forget(spare->child.pid());  // it died asleep (killed?): a fresh fork instead
        return false;
    }
    child_ = std::move(spare->child);
    owner_ = detail::current_pid();
    try {
        detail::send_descriptors(spare->channel.get(), fds);
    } catch (const EndOfStream&) {
        // The child ended before reading them: result() reports how it ended.
    }
    detail::set_nonblocking(spare->channel.get(), true);
    channel_ = std::move(spare->channel);
    return true;
}

template <class R, class Starts>
void Process<R, Starts>::start_fork() {
    // Not a structured binding: clang 14 cannot capture those in a lambda.
    auto ends = detail::make_socketpair();
    detail::unique_fd& parent_end = ends.first;
    detail::unique_fd& child_end = ends.second;
    const pid_t pid = detail::fork_child([&] {
        parent_end.reset();
        std::vector<std::byte> message;
        const bool ok = detail::run_and_encode_outcome<R>(message, [&] { return task_->run(); });
        try {
            detail::send_frame(child_end.get(), message);
        } catch (...) {
            return 71;  // the parent is gone or the socket failed: nobody can read the result
        }
        return ok ? 0 : 1;  // 1, like Python's exitcode when run() raised
    });
    child_ = detail::child_handle(pid);
    owner_ = detail::current_pid();
    child_end.reset();
    detail::set_nonblocking(parent_end.get(), true);
    channel_ = std::move(parent_end);
}

template <class R, class Starts>
void Process<R, Starts>::drain_channel() {
    std::byte chunk[64 * 1024];
    for (;;) {
        ssize_t got = detail::read_some(channel_.get(), chunk);
        if (got < 0) return;  // nothing more for now
        if (got == 0) {
            channel_.reset();
            return;
        }
        received_.insert(received_.end(), chunk, chunk + got);
    }
}

/// Reads what the child sent so far, then reaps it if it has ended (reading the rest then).
/// Every wait goes through here: the child may block writing a large result until we read it,
/// so a parent that only polls is_alive() or exitcode() must read too.
template <class R, class Starts>
bool Process<R, Starts>::poll_exit() {
    if (child_.reaped()) return true;  // settled before a fork: a child's copy may read it too
    if (detail::current_pid() != owner_)
        throw StateError(
            "mproc::Process: only the process that started it can wait for it "
            "(this is a forked copy of the handle)");
    if (channel_) drain_channel();
    if (!child_.try_reap()) return false;  // a child reaped elsewhere counts as ended (lost)
    if (channel_) drain_channel();  // it wrote everything before it ended
    channel_.reset();
    return true;
}

template <class R, class Starts>
bool Process<R, Starts>::wait_for_exit(const detail::Deadline& deadline) {
    if (!child_.started()) throw StateError("mproc::Process: join() before start()");
    while (!poll_exit()) {
        if (deadline.expired()) return false;
        pollfd fds[2] = {{child_.wait_fd(), POLLIN, 0}, {channel_.get(), POLLIN, 0}};
        if (fds[0].fd < 0) {
            child_.sleep_until_exit_or(deadline);
            continue;
        }
        detail::poll_until(fds, deadline);
    }
    return true;
}

template <class R, class Starts>
std::optional<int> Process<R, Starts>::exitcode() {
    if (!child_.started() || !poll_exit() || child_.exitcode()) return child_.exitcode();
    // Lost status: the child leaves with 0 after sending a value and 1 after an exception.
    auto frame = detail::complete_frame(received_);
    if (!frame || frame->empty()) return std::nullopt;
    return (*frame)[0] == static_cast<std::byte>(detail::outcome_tag::value) ? 0 : 1;
}

template <class R, class Starts>
R Process<R, Starts>::result() {
    join();
    auto frame = detail::complete_frame(received_);
    if (!frame) throw ProcessCrashed(child_.pid(), child_.exitcode().value_or(ProcessCrashed::lost_status));
    return detail::decode_outcome<R>(*frame);
}

MPROC_NAMESPACE_END

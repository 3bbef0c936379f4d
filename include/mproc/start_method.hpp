// Start methods: how mproc makes a new process. fork (the default), spawn (a fresh copy of the
// program, by exec) and forkserver (a fork of a small server that was started by exec), like
// Python's multiprocessing start methods, entered through mproc::init on main's first line.
#pragma once

#include <mproc/detail/exec.hpp>
#include <mproc/error.hpp>

#include <atomic>
#include <cstring>

MPROC_NAMESPACE_BEGIN

/// How a new process starts.
/// - fork: a copy of the caller as it is (any callable, captures included). Unsafe when the
///   caller runs threads: the child holds only the calling thread, and a lock another thread
///   held stays locked in it forever.
/// - spawn: the program executed afresh (/proc/self/exe); it runs its static initializers,
///   reaches mproc::init, and serves its task there. Inherits no thread, lock, memory or
///   descriptor of the caller; costs an exec and the program's start-up.
/// - forkserver: a fork of a small single-threaded server that was started by exec once, at
///   first use. Fast and clean however many threads or gigabytes the caller has.
/// spawn and forkserver send the function by identity and the arguments through the codec:
/// only stateless callables and encodable arguments.
enum class StartMethod { fork, spawn, forkserver };

/// The type of the tag mproc::spawn, for Process::start and the Process constructor:
/// `p.start(mproc::spawn)`. (No tag for fork, whose name the C library's fork() already has:
/// `p.start(mproc::StartMethod::fork)`.)
struct spawn_t {
    /// The method this tag selects.
    static constexpr StartMethod method = StartMethod::spawn;
};
/// The type of the tag mproc::forkserver: `p.start(mproc::forkserver)`.
struct forkserver_t {
    /// The method this tag selects.
    static constexpr StartMethod method = StartMethod::forkserver;
};
/// Start by spawn: `p.start(mproc::spawn)`, or `mproc::Process p(mproc::spawn, f, args...)` to
/// have the callable and arguments checked at compile time.
inline constexpr spawn_t spawn{};
/// Start by forkserver: `p.start(mproc::forkserver)`, or `mproc::Process p(mproc::forkserver, f,
/// args...)`.
inline constexpr forkserver_t forkserver{};

namespace detail {
inline std::atomic<StartMethod>& default_start_method() noexcept {
    static std::atomic<StartMethod> method{StartMethod::fork};
    return method;
}
}  // namespace detail

/// The first line of main. In the program it records the executable and returns at once; in a
/// process that mproc started by exec (spawn, forkserver) it serves that process's part and
/// never returns. Code before it runs again in every such process, and so do static
/// initializers: keep main's earlier lines free of side effects.
/// @code
/// int main(int argc, char** argv) {
///     mproc::init(argc, argv);
///     ...
/// }
/// @endcode
inline void init(int argc, char** argv) {
    if (argc >= 4 && argv && argv[1] && std::strcmp(argv[1], detail::exec_marker) == 0)
        detail::run_exec_role(argc, argv);
    detail::record_image(argc > 0 && argv ? argv[0] : nullptr);
}

/// The start method that Process::start() and a Pool without PoolOptions::start_method use
/// (fork unless set), like Python's multiprocessing.set_start_method.
inline void set_start_method(StartMethod method) noexcept {
    detail::default_start_method().store(method, std::memory_order_relaxed);
}
/// The process-wide default start method (what set_start_method last set; fork at first).
[[nodiscard]] inline StartMethod get_start_method() noexcept {
    return detail::default_start_method().load(std::memory_order_relaxed);
}

MPROC_NAMESPACE_END

// Starting one Pool worker by spawn or forkserver: the worker, a fresh program (or a fork of the
// forkserver), receives the pool's arena memfd and wake-up eventfd over its socket (SCM_RIGHTS),
// maps the arena and enters the same worker loop a forked worker runs.
#pragma once

#include <mproc/detail/arena.hpp>
#include <mproc/detail/exec.hpp>
#include <mproc/detail/pool_worker.hpp>
#include <mproc/start_method.hpp>

#include <functional>

MPROC_NAMESPACE_BEGIN
namespace detail {

/// What a worker started by exec is told besides its two descriptors.
struct pool_exec_request {
    std::uint32_t index = 0;
    std::uint64_t window = 0;
    std::int32_t wake_fd = -1;  // the eventfd's number in the parent, as pool_control names it
    bool has_initializer = false;
    function_id initializer{};
    template <class Ar>
    void serialize(Ar& ar) {
        ar(index, window, wake_fd, has_initializer, initializer);
    }
};

/// The worker's side (an exec_runner): never returns.
inline bool pool_exec_worker(int channel, Decoder& decoder, std::vector<std::byte>&) {
    int code = 70;
    try {
        pool_exec_request request;
        decoder(request);
        unique_fd fds[2];
        char byte = 0;
        if (recv_with_fds(channel, &byte, 1, fds) != 1 || !fds[0] || !fds[1]) ::_exit(70);
        // pool_control holds the eventfd's number in the parent, which every worker writes to:
        // put it at that number here too (the socket may sit there; it is not needed any more).
        if (fds[0].get() == request.wake_fd) fds[0] = unique_fd(::fcntl(fds[0].get(), F_DUPFD_CLOEXEC, request.wake_fd + 1));
        if (fds[1].get() != request.wake_fd) {
            if (::dup3(fds[1].get(), request.wake_fd, O_CLOEXEC) < 0) ::_exit(70);
        }
        shared_arena arena = shared_arena::attach(std::move(fds[0]), request.window);
        std::function<void()> initializer;
        if (request.has_initializer) initializer = resolve<void (*)()>(request.initializer);
        auto& ctl = *reinterpret_cast<pool_control*>(arena.fixed());
        code = worker_main(arena, ctl, request.index, initializer);
    } catch (...) {
    }
    flush_standard_streams();
    ::_exit(code);
}

/// Starts worker `index` of a pool by spawn or forkserver.
/// @throws Error when the initializer is not a plain function (it cannot reach a fresh program);
///         StateError before mproc::init; SystemError when the start fails.
[[nodiscard]] inline child_handle start_worker_by_exec(StartMethod method, const shared_arena& arena, int wake_fd,
                                                        unsigned index, const std::function<void()>& initializer) {
    pool_exec_request request;
    request.index = index;
    request.window = arena.window();
    request.wake_fd = wake_fd;
    if (initializer) {
        auto* fn = initializer.target<void (*)()>();
        if (!fn)
            throw Error(
                "mproc::Pool: with the spawn or forkserver start method the initializer must be a plain "
                "function (void(*)(), or +[] { ... } for a lambda without captures): a fresh program "
                "cannot see the caller's variables");
        request.has_initializer = true;
        request.initializer = identify(*fn);
    }
    std::vector<std::byte> message;
    Encoder encoder(message);
    encoder(identify(&pool_exec_worker), request);
    auto ends = make_socketpair();
    child_handle child = method == StartMethod::spawn ? child_handle(spawn_self("spawn", {ends.second.get()}))
                                                      : forkserver_connection().start(ends.second.get());
    ends.second.reset();
    try {
        send_frame(ends.first.get(), message);
        const int fds[2] = {arena.fd(), wake_fd};
        const char byte = 0;
        send_with_fds(ends.first.get(), &byte, 1, fds);
    } catch (const EndOfStream&) {
        // It died before reading: the pool's watch reports and replaces it.
    }
    return child;
}

}  // namespace detail
MPROC_NAMESPACE_END

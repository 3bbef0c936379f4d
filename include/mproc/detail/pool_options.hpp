// mproc::PoolOptions and mproc::MapOptions: how a Pool (or a fork_map) runs its tasks.
#pragma once

#include <mproc/start_method.hpp>
#include <mproc/version.hpp>

#include <chrono>
#include <cstddef>
#include <functional>
#include <memory>
#include <tuple>
#include <vector>
#include <optional>

MPROC_NAMESPACE_BEGIN

namespace detail {
/// An initializer with arguments (PoolOptions::set_initializer): run() calls it in a forked
/// worker; `request` (empty when the function has state or an argument cannot travel) is how a
/// worker started by exec gets it, with the descriptors `fds` of the shared objects among the
/// arguments, which this object keeps alive.
struct initializer_call {
    virtual ~initializer_call() = default;
    virtual void run() const = 0;
    std::vector<std::byte> request;
    std::vector<int> fds;
};

template <class F, class... Args>
struct bound_initializer final : initializer_call {
    bound_initializer(F f_, Args... args_) : f(std::move(f_)), args(std::move(args_)...) {}
    void run() const override { (void)std::apply(f, args); }
    F f;
    std::tuple<Args...> args;
};

/// What set_initializer stores in PoolOptions::initializer: a type the Pool can recognize.
struct pool_initializer {
    std::shared_ptr<const initializer_call> call;
    void operator()() const { call->run(); }
};
}  // namespace detail

/// Options of a Pool, and of fork_map where they apply.
/// @code
/// mproc::PoolOptions opts;
/// opts.processes = 4;
/// opts.initializer = [] { init_worker(); };
/// opts.task_timeout = std::chrono::seconds(2);
/// mproc::Pool pool(opts);
/// @endcode
/// @headerfile pool.hpp <mproc/pool.hpp>
struct PoolOptions {
    /// Worker processes; 0 means mproc::cpu_count().
    unsigned processes = 0;
    /// Runs once in each worker (replacements included) before its first task. It runs in the
    /// forked worker, so it may capture anything. If it throws, the Pool's constructor throws
    /// RemoteError; in a replacement worker, the pool's later calls do.
    std::function<void()> initializer;
    /// Sets `initializer` to f(args...), Python's initializer and initargs. The arguments are
    /// stored by value. With spawn and forkserver, f must be stateless (a function, or a lambda
    /// without captures) and each argument encodable or a shared object (Queue, Lock,
    /// SharedValue...), which each worker then shares with the caller: the way to hand shared
    /// objects to workers that are fresh programs.
    /// @code
    /// mproc::Queue<Result> results;
    /// opts.set_initializer(keep_queue, results);   // void keep_queue(mproc::Queue<Result> q);
    /// @endcode
    template <class F, class... Args>
    void set_initializer(F f, Args... args) {
        auto call = std::make_shared<detail::bound_initializer<F, Args...>>(std::move(f), std::move(args)...);
        if constexpr (detail::exec_sendable_v<F, Args...>)
            detail::encode_exec_call(call->request, call->fds, call->f, call->args);
        initializer = detail::pool_initializer{std::move(call)};
    }
    /// A worker exits and is replaced after this many tasks (chunks); 0 means never.
    std::size_t max_tasks_per_child = 0;
    /// A task running longer is stopped by killing its worker: the task fails with TimeoutError
    /// (naming its index), a replacement worker starts, every other task goes on. 0 means none.
    /// Deadlines are checked while the parent waits on the pool (map, get, ...).
    std::chrono::nanoseconds task_timeout{0};
    /// Draws a progress bar (done/total, rate, ETA) on stderr during map when stderr is a
    /// terminal, at most 10 times a second; nothing otherwise.
    bool progress = false;
    /// Called with (done, total) during map, at most 10 times a second and once at the end.
    std::function<void(std::size_t done, std::size_t total)> on_progress;
    /// Called in the parent whenever one of its signal handlers interrupts a wait on the pool
    /// (map, imap, Future::get...). If it throws, the wait ends with that exception; a map then
    /// cancels its job and replaces the workers running it. For programs with their own SIGINT
    /// handler; otherwise see mproc::InterruptScope.
    std::function<void()> on_interrupt;
    /// How the workers start: fork, spawn or forkserver (see mproc::StartMethod); unset means
    /// mproc::get_start_method() when the Pool is made. With spawn and forkserver the
    /// initializer must be a plain function (void(*)()) or set by set_initializer. fork_map
    /// always forks.
    std::optional<StartMethod> start_method;
};

/// Per-call options of Pool::map / starmap / imap / fork_map.
/// @headerfile pool.hpp <mproc/pool.hpp>
struct MapOptions {
    /// Items per chunk; 0 picks them: guided chunks, big first and small last (about 20 per
    /// worker), so uneven work never leaves a core idle at the end.
    std::size_t chunksize = 0;
    /// Overrides PoolOptions::task_timeout for this call when not zero.
    std::chrono::nanoseconds task_timeout{0};
    /// imap and imap_unordered only: inputs are taken from the range and posted this many at a
    /// time, at most two such batches ahead of the reader; 0 picks one (chunksize x workers x 8,
    /// at least 256 items and at most 65,536).
    std::size_t lookahead = 0;
    /// A worker whose chunks of this call end in under 4 us each claims the next ones in
    /// batches (2, 4, ... up to 64 chunks in one claim instead of one claim each): a
    /// chunksize=1 map of tiny tasks costs ~20 ns a task instead of ~240 on 2 cores. A batch
    /// runs in order on its worker, so a task claimed behind one that turns slow waits for it.
    /// false: each worker takes one chunk at a time, as Python's pool does; for tasks that wait
    /// for other tasks of the same call.
    bool batch_quick_tasks = true;
};

MPROC_NAMESPACE_END

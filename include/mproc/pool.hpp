// mproc::Pool: long-lived worker processes that map a function over inputs, like Python's
// multiprocessing.Pool, with chunks pulled by idle workers through shared memory.
#pragma once

#include <mproc/codec.hpp>
#include <mproc/detail/pool_core.hpp>
#include <mproc/detail/pool_imap.hpp>
#include <mproc/detail/pool_options.hpp>
#include <mproc/detail/pool_results.hpp>
#include <mproc/future.hpp>
#include <mproc/error.hpp>
#include <mproc/process.hpp>

#include <chrono>
#include <functional>
#include <memory>
#include <ranges>
#include <tuple>
#include <type_traits>
#include <vector>

MPROC_NAMESPACE_BEGIN

namespace detail {
[[nodiscard]] inline PoolOptions with_processes(unsigned processes) {
    PoolOptions options;
    options.processes = processes;
    return options;
}
[[nodiscard]] inline MapOptions with_chunksize(std::size_t chunksize) {
    MapOptions options;
    options.chunksize = chunksize;
    return options;
}

/// The options with the worker count filled in.
[[nodiscard]] inline PoolOptions resolved(PoolOptions options) {
    if (options.processes == 0) options.processes = cpu_count();
    if (!options.start_method) options.start_method = get_start_method();
    return options;
}

template <class F>
constexpr void check_pool_callable() {
    static_assert(stateless_callable_v<std::decay_t<F>>,
                  "mproc::Pool: the function must be stateless (a function, or a lambda without "
                  "captures): a capture would be a stale copy of the parent's memory in the worker. "
                  "Pass the state as an argument, or use mproc::fork_map, whose workers see the "
                  "caller's current data");
}

template <class F>
[[nodiscard]] function_id function_identity(const F& f) {
    if constexpr (std::is_pointer_v<F>) return identify(f);
    else return function_id{};
}

template <class F, class In, bool Star>
struct map_result {
    using type = std::remove_cvref_t<std::invoke_result_t<F&, const In&>>;
};
template <class F, class In>
struct map_result<F, In, true> {
    using type = std::remove_cvref_t<decltype(std::apply(std::declval<F&>(), std::declval<const In&>()))>;
};

/// Lays out and publishes one map job over `inputs`, whose first item has index `base` in the
/// caller's input (so errors name it); returns the parent's handle on it.
template <bool Star, class Fn, class Range>
auto post_map(const std::shared_ptr<pool_core>& core, const Fn& fn, const Range& inputs, const MapOptions& options,
              std::uint64_t base = 0) {
    using In = std::ranges::range_value_t<Range>;
    using R = typename map_result<Fn, In, Star>::type;
    static_assert(!std::is_void_v<R>, "mproc::Pool::map: the function must return a value");
    const std::uint64_t n = std::ranges::size(inputs);
    const std::uint64_t seq = core->begin_job(identify(&run_map_chunk<Fn, In, R, Star, input_layout_v<Range, In>>),
                                              function_identity(fn), n, options.chunksize);
    if (options.task_timeout.count() != 0) core->job(seq).timeout_ns = options.task_timeout.count();
    core->job(seq).unbatched = options.batch_quick_tasks ? 0 : 1;
    core->record(seq).index_base = base;
    try {
        lay_out_inputs<In>(*core, seq, inputs);
        lay_out_outputs<R>(*core, seq);
    } catch (...) {
        core->cancel(seq);
        core->publish(seq);
        core->retire(seq);
        throw;
    }
    core->publish(seq);
    return job_ticket<R>{core, seq};
}
}  // namespace detail

/// A pool of worker processes, one per usable core by default.
///
/// What travels to a worker is a stateless callable (a function, or a captureless lambda),
/// identified by its offset in the binary, plus arguments and results through the codec;
/// trivially copyable inputs and results are copied in bulk through shared memory.
/// Failures are reported, never hung on: an exception in a task is a RemoteError naming the
/// task's index; a worker killed mid-task makes that task fail with ProcessCrashed (the signal and
/// the index) and is replaced, and the pool goes on.
///
/// A Pool and its Futures are meant to be used from one thread. The destructor terminates the
/// workers (like Python's `with Pool()`), reaping every one; call close() and join() first to let
/// queued work finish.
/// @code
/// mproc::Pool pool;
/// std::vector<bool> flags = pool.map(is_prime, numbers);
/// @endcode
class Pool {
public:
    /// One worker per usable core (cpu_count()).
    Pool() : Pool(PoolOptions{}) {}
    /// `processes` workers (0: one per usable core).
    explicit Pool(unsigned processes) : Pool(detail::with_processes(processes)) {}
    /// A pool as `options` say; the workers are started before it returns.
    /// @throws RemoteError when the initializer threw in a worker.
    explicit Pool(const PoolOptions& options)
        : core_(std::make_shared<detail::pool_core>(detail::resolved(options))) {}
    /// Takes over the workers; the moved-from Pool has none (map, submit... throw StateError).
    Pool(Pool&&) noexcept = default;
    /// Terminates this pool's workers, then takes over `other`'s.
    Pool& operator=(Pool&& other) noexcept {
        if (this != &other) {
            if (core_) core_->terminate();
            core_ = std::move(other.core_);
        }
        return *this;
    }
    ~Pool() {
        if (core_) core_->terminate();
    }

    /// The number of worker processes.
    [[nodiscard]] unsigned processes() const noexcept { return core_ ? core_->size() : 0; }
    /// The workers' pids (a dead worker's replacement has a new one).
    [[nodiscard]] std::vector<pid_t> pids() const { return core_ ? core_->pids() : std::vector<pid_t>{}; }

    /// f(x) for every x of `inputs`, in order. Chunks (`chunksize` items, automatic when 0) are
    /// pulled by idle workers, so uneven work keeps every core busy.
    /// @throws RemoteError (with the task's index) when f threw; ProcessCrashed when a worker
    ///         died running a task.
    /// @return a std::vector of f's results, one per input.
    template <class F, std::ranges::sized_range Range>
    [[nodiscard]] auto map(F&& f, const Range& inputs, std::size_t chunksize = 0) {
        return map(std::forward<F>(f), inputs, detail::with_chunksize(chunksize));
    }
    /// map with per-call options (chunk size, task time limit).
    template <class F, std::ranges::sized_range Range>
    [[nodiscard]] auto map(F&& f, const Range& inputs, const MapOptions& options) {
        detail::check_pool_callable<F>();
        return run_map<false>(std::decay_t<F>(f), inputs, options);
    }

    /// Like map, with each input a tuple or pair spread as the arguments: g(a, b).
    /// @return a std::vector of the results, one per input.
    template <class F, std::ranges::sized_range Range>
    [[nodiscard]] auto starmap(F&& f, const Range& inputs, std::size_t chunksize = 0) {
        return starmap(std::forward<F>(f), inputs, detail::with_chunksize(chunksize));
    }
    /// starmap with per-call options (chunk size, task time limit).
    template <class F, std::ranges::sized_range Range>
    [[nodiscard]] auto starmap(F&& f, const Range& inputs, const MapOptions& options) {
        detail::check_pool_callable<F>();
        return run_map<true>(std::decay_t<F>(f), inputs, options);
    }

    /// Results as a lazy range, in order, as they complete; an error is thrown when the iteration
    /// reaches the failed task, after every result before it. Chunks of 1 item by default, as in
    /// Python (0 picks a size). Any input range: it is read a batch at a time as the results are
    /// consumed (MapOptions::lookahead), and an rvalue range is kept alive by the result.
    /// @return an ImapRange<R> (R: f's result type), a single-pass range to iterate once.
    template <class F, std::ranges::viewable_range Range>
        requires std::ranges::input_range<Range>
    [[nodiscard]] auto imap(F&& f, Range&& inputs, std::size_t chunksize = 1) {
        return imap(std::forward<F>(f), std::forward<Range>(inputs), detail::with_chunksize(chunksize));
    }
    /// imap with per-call options (chunk size, task time limit, lookahead).
    template <class F, std::ranges::viewable_range Range>
        requires std::ranges::input_range<Range>
    [[nodiscard]] auto imap(F&& f, Range&& inputs, const MapOptions& options) {
        detail::check_pool_callable<F>();
        return start_imap<false>(std::decay_t<F>(f), std::views::all(std::forward<Range>(inputs)), options);
    }

    /// Results as a lazy range in completion order.
    /// @return an ImapRange<R, true>, a single-pass range to iterate once.
    template <class F, std::ranges::viewable_range Range>
        requires std::ranges::input_range<Range>
    [[nodiscard]] auto imap_unordered(F&& f, Range&& inputs, std::size_t chunksize = 1) {
        return imap_unordered(std::forward<F>(f), std::forward<Range>(inputs), detail::with_chunksize(chunksize));
    }
    /// imap_unordered with per-call options (chunk size, task time limit, lookahead).
    template <class F, std::ranges::viewable_range Range>
        requires std::ranges::input_range<Range>
    [[nodiscard]] auto imap_unordered(F&& f, Range&& inputs, const MapOptions& options) {
        detail::check_pool_callable<F>();
        return start_imap<true>(std::decay_t<F>(f), std::views::all(std::forward<Range>(inputs)), options);
    }

    /// Runs f(args...) in a worker; the Future gives the result.
    /// @return a Future<R>, R being what f returns.
    template <class F, class... Args>
    [[nodiscard]] auto submit(F&& f, Args&&... args) {
        detail::check_pool_callable<F>();
        using Fn = std::decay_t<F>;
        using ArgsTuple = std::tuple<std::decay_t<Args>...>;
        using R = std::remove_cvref_t<std::invoke_result_t<Fn&, std::decay_t<Args>...>>;
        const std::uint64_t seq = core().begin_job(
            detail::identify(&detail::run_call_chunk<Fn, R, ArgsTuple>),
            detail::function_identity(Fn(f)), 1, 1);
        detail::job_slot& job = core().job(seq);
        auto& arena = core().arena();
        job.input = arena.allocate(sizeof(detail::arena_span));
        job.output = arena.allocate(sizeof(detail::arena_span));
        arena.at<detail::arena_span>(job.input)[0] =
            detail::encode_in_arena(arena, ArgsTuple(std::forward<Args>(args)...));
        Future<R> future(core_, seq);
        core().publish(seq);
        return future;
    }
    /// Python's name for submit.
    template <class F, class... Args>
    [[nodiscard]] auto apply_async(F&& f, Args&&... args) {
        return submit(std::forward<F>(f), std::forward<Args>(args)...);
    }
    /// submit and get: runs f(args...) in a worker and returns its result.
    template <class F, class... Args>
    auto apply(F&& f, Args&&... args) {
        return submit(std::forward<F>(f), std::forward<Args>(args)...).get();
    }

    /// No more work may be submitted; work already submitted goes on.
    void close() noexcept {
        if (core_) core_->close();
    }
    /// Waits for submitted work to finish and the workers to exit (call close() first).
    void join() {
        if (!core_) return;
        if (!core_->closed()) throw StateError("mproc::Pool: join() before close()");
        core_->join();
    }
    /// Kills the workers now; pending Futures then throw StateError.
    void terminate() noexcept {
        if (core_) core_->terminate();
    }

private:
    detail::pool_core& core() {
        if (!core_) throw StateError("mproc::Pool: use of a moved-from Pool");
        return *core_;
    }

    template <bool Star, class Fn, class Range>
    auto run_map(const Fn& fn, const Range& inputs, const MapOptions& options);
    template <bool Unordered, class Fn, class View>
    auto start_imap(const Fn& fn, View inputs, const MapOptions& options);

    std::shared_ptr<detail::pool_core> core_;
};

template <bool Star, class Fn, class Range>
auto Pool::run_map(const Fn& fn, const Range& inputs, const MapOptions& options) {
    using In = std::ranges::range_value_t<Range>;
    using R = typename detail::map_result<Fn, In, Star>::type;
    if (std::ranges::size(inputs) == 0) {
        (void)core();
        return std::vector<R>{};
    }
    return detail::post_map<Star>(core_, fn, inputs, options).collect_all();
}

template <bool Unordered, class Fn, class View>
auto Pool::start_imap(const Fn& fn, View inputs, const MapOptions& options) {
    using In = std::ranges::range_value_t<View>;
    using R = typename detail::map_result<Fn, In, false>::type;
    (void)core();
    // The feeder owns the input view and where the next batch starts.
    struct source {
        View view;
        std::ranges::iterator_t<View> next;
    };
    auto from = std::make_shared<source>(source{std::move(inputs), {}});
    from->next = std::ranges::begin(from->view);
    const std::uint64_t batch_items = detail::imap_batch_items(options.lookahead, options.chunksize, core().size());
    auto feed = [core = core_, from, fn, options, batch_items](std::uint64_t base) -> std::optional<detail::job_ticket<R>> {
        if constexpr (std::ranges::random_access_range<View> && std::ranges::sized_range<View>) {
            const auto left = static_cast<std::uint64_t>(std::ranges::size(from->view)) - base;
            if (left == 0) return std::nullopt;
            const auto n = static_cast<std::ranges::range_difference_t<View>>(std::min(left, batch_items));
            if constexpr (detail::is_iota_v<View>) {
                // A batch of an integer range is an integer range: it travels as its first value.
                const std::ranges::iota_view items(*from->next, *std::ranges::next(from->next, n));
                from->next = std::ranges::next(from->next, n);
                return detail::post_map<false>(core, fn, items, options, base);
            }
            const std::ranges::subrange items(from->next, std::ranges::next(from->next, n));
            from->next = items.end();
            return detail::post_map<false>(core, fn, items, options, base);
        } else {
            std::vector<In> items;
            for (; items.size() < batch_items && from->next != std::ranges::end(from->view); ++from->next)
                items.push_back(*from->next);
            if (items.empty()) return std::nullopt;
            return detail::post_map<false>(core, fn, items, options, base);
        }
    };
    return ImapRange<R, Unordered>(std::move(feed));
}

MPROC_NAMESPACE_END

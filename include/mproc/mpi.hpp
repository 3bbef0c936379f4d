// mproc::mpi: the Pool's map, imap, submit over the ranks of an MPI job (SPMD: mpirun or srun
// starts the same binary everywhere; rank 0 runs the program's function, the other ranks serve
// its tasks until it returns). Opt-in: only this header needs MPI (link mproc::mpi); the rest of
// mproc stays MPI-free. Without mpirun (a singleton), the same calls run on a local mproc::Pool.
//
// @code
// int main(int argc, char** argv) {
//     return mproc::mpi::run(argc, argv, [](mproc::mpi::Pool& pool) {
//         auto flags = pool.map(is_prime, numbers);
//         return 0;
//     });
// }
// @endcode
#pragma once

#include <mproc/codec.hpp>
#include <mproc/detail/mpi_comm.hpp>  // first: it includes <mpi.h> without the C++ bindings
#include <mproc/detail/fd.hpp>
#include <mproc/detail/mpi_engine.hpp>
#include <mproc/detail/mpi_identity.hpp>
#include <mproc/detail/mpi_worker.hpp>
#include <mproc/error.hpp>
#include <mproc/pool.hpp>
#include <mproc/pool_like.hpp>
#include <mproc/process.hpp>

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <exception>
#include <iostream>
#include <iterator>
#include <memory>
#include <optional>
#include <ranges>
#include <string>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

MPROC_NAMESPACE_BEGIN
namespace mpi {

/// How mproc::mpi::run runs the job.
/// @code
/// mproc::mpi::run(argc, argv, mproc::mpi::Options{.local_processes = 16}, main_body);
/// @endcode
struct Options {
    /// Hybrid mode when not 0: each worker rank feeds a local mproc::Pool of this many processes
    /// (launch one rank per node: `mpirun --map-by ppr:1:node --bind-to none`): big chunks
    /// between hosts, shared memory inside one.
    unsigned local_processes = 0;
    /// Chunks sent ahead to each worker rank, so it never waits for the next one (at least 1).
    unsigned chunks_in_flight = 2;
    /// Rank 0 also runs chunks when it has nothing to receive (off: under mpirun rank 0 usually
    /// shares a node with worker ranks; a singleton always computes, on its local Pool).
    bool root_computes = false;
    /// Messages larger than this travel in pieces (0: 1 GiB, under Open MPI 4.1's int counts).
    /// Lowered only by tests.
    std::size_t max_message_bytes = 0;
    /// Processes of the local Pool without mpirun (0: one per usable core).
    unsigned singleton_processes = 0;
};

namespace detail {
inline int& rank_slot() noexcept {
    static int rank = -1;
    return rank;
}
}  // namespace detail

/// This process's rank in the job (0 in a singleton; a hybrid rank's local workers say their
/// rank's), or -1 outside mproc::mpi::run.
[[nodiscard]] inline int rank() noexcept { return detail::rank_slot(); }

/// An exception thrown by a task on another rank: the task's index, its type and message, and
/// where it ran.
class RemoteError : public mproc::RemoteError {
public:
    /// The remote exception `type_name: message` of task `task_index`, raised on `rank` at `host`.
    RemoteError(std::string type_name, std::string message, std::size_t task_index, int rank,
                std::string host)
        : mproc::RemoteError(std::move(type_name), std::move(message), task_index),
          rank_(rank),
          host_(std::move(host)),
          what_(std::string(mproc::RemoteError::what()) + " (on rank " + std::to_string(rank) +
                ", host " + host_ + ")") {}

    /// The rank the task ran on.
    [[nodiscard]] int rank() const noexcept { return rank_; }
    /// The host name of that rank.
    [[nodiscard]] const std::string& host() const noexcept { return host_; }
    /// The local RemoteError's text followed by "(on rank R, host H)".
    [[nodiscard]] const char* what() const noexcept override { return what_.c_str(); }

private:
    int rank_;
    std::string host_;
    std::string what_;
};

namespace detail {
namespace wire = mproc::detail::mpi;

/// The error a failed chunk carries.
[[nodiscard]] inline std::exception_ptr chunk_error(mproc::Decoder& d, wire::status s, int rank,
                                                    const std::string& host) {
    std::uint64_t item = 0;
    d(item);
    if (s == wire::status::crashed) {
        std::int32_t pid = 0, status = 0;
        d(pid, status);
        return std::make_exception_ptr(ProcessCrashed(pid, status, item));
    }
    if (s != wire::status::raised) throw DecodeError("mproc::mpi: unknown result status");
    std::string type, message;
    d(type, message);
    return std::make_exception_ptr(
        RemoteError(std::move(type), std::move(message), item, rank, host));
}

/// A chunk's results; when it failed, the error and the results before the failed item.
template <class R>
struct chunk_values {
    std::vector<R> values;
    std::exception_ptr error;
};

template <class R>
[[nodiscard]] chunk_values<R> take_chunk(const wire::chunk_result& r, const wire::engine& eng) {
    mproc::Decoder d(std::span<const std::byte>(r.message.bytes).subspan(r.status_at));
    wire::status s{};
    d(s);
    chunk_values<R> out;
    if (s != wire::status::ok)
        out.error = chunk_error(d, s, r.message.source, eng.host(r.message.source));
    out.values = mproc::decode<std::vector<R>>(d);
    if (d.remaining() != 0) throw DecodeError("mproc::mpi: trailing bytes after a result");
    return out;
}

/// A call's value, or its error thrown.
template <class Value>
Value take_value(const wire::chunk_result& r, const wire::engine& eng) {
    mproc::Decoder d(std::span<const std::byte>(r.message.bytes).subspan(r.status_at));
    wire::status s{};
    d(s);
    if (s != wire::status::ok)
        std::rethrow_exception(chunk_error(d, s, r.message.source, eng.host(r.message.source)));
    Value value = mproc::decode<Value>(d);
    if (d.remaining() != 0) throw DecodeError("mproc::mpi: trailing bytes after a result");
    return value;
}

/// Guided chunk bounds, cut exactly as the local Pool cuts them.
using mproc::detail::guided_bounds;

template <class F, class In, bool Star>
struct result_of {
    using type = std::remove_cvref_t<std::invoke_result_t<F&, const In&>>;
};
template <class F, class In>
struct result_of<F, In, true> {
    using type =
        std::remove_cvref_t<decltype(std::apply(std::declval<F&>(), std::declval<const In&>()))>;
};

template <class F>
constexpr void check_callable() {
    static_assert(
        wire::sendable_callable_v<std::decay_t<F>>,
        "mproc::mpi::Pool: the function must be stateless (a function, or a lambda without "
        "captures): it runs on other ranks, which see none of this rank's memory. Pass the "
        "state as an argument");
}

/// Drops a job from the engine when the front end lets go of it.
struct job_handle {
    std::shared_ptr<wire::engine> eng;
    std::shared_ptr<wire::job> job;
    job_handle() = default;
    job_handle(std::shared_ptr<wire::engine> e, std::shared_ptr<wire::job> j)
        : eng(std::move(e)), job(std::move(j)) {}
    job_handle(job_handle&& other) noexcept = default;
    job_handle& operator=(job_handle&& other) noexcept {
        release();
        eng = std::move(other.eng);
        job = std::move(other.job);
        return *this;
    }
    ~job_handle() { release(); }
    void release() noexcept {
        if (eng && job) eng->drop(*job);
        eng.reset();
        job.reset();
    }
};
}  // namespace detail

/// The result of Pool::submit.
template <class R>
class Future {
public:
    Future() = default;
    /// Waits, then returns the task's result.
    /// @throws mproc::mpi::RemoteError when the task threw (on a worker rank); the local Pool's
    ///         errors in a singleton.
    R get() {
        if (local_) return local_->get();
        if (!handle_.job) throw StateError("mproc::mpi::Future: an empty or already taken Future");
        wait();
        detail::job_handle handle = std::move(handle_);
        auto value = detail::take_value<mproc::detail::mpi::stored_t<R>>(
            handle.job->done.begin()->second, *handle.eng);
        if constexpr (!std::is_void_v<R>) return value;
    }
    /// Waits until the task has ended.
    void wait() {
        if (local_) return local_->wait();
        if (!handle_.job) throw StateError("mproc::mpi::Future: an empty or already taken Future");
        auto& j = *handle_.job;
        handle_.eng->wait([&] { return !j.done.empty(); });
    }
    /// True while the Future refers to a task whose result was not yet taken by get().
    [[nodiscard]] bool valid() const noexcept {
        return local_.has_value() || handle_.job != nullptr;
    }

private:
    friend class Pool;
    explicit Future(detail::job_handle handle) : handle_(std::move(handle)) {}
    explicit Future(mproc::Future<R> local) : local_(std::move(local)) {}

    detail::job_handle handle_;
    std::optional<mproc::Future<R>> local_;
};

/// The range imap and imap_unordered return: each result as the iteration reaches it; an error
/// is thrown when it reaches the failed task, after every result before it. Dropping it early
/// abandons the tasks not yet started.
template <class R>
class ImapResults {
public:
    /// What dereferencing gives: a const reference, or a bool by value (vector<bool> holds no
    /// bools to refer to).
    using reference = std::conditional_t<std::is_same_v<R, bool>, bool, const R&>;
    /// @cond
    // How the results are produced (a root engine, or the singleton's local Pool).
    struct source {
        virtual ~source() = default;
        /// Moves to the next result; false at the end.
        virtual bool advance() = 0;
        [[nodiscard]] virtual reference current() const = 0;
    };

    explicit ImapResults(std::unique_ptr<source> src) : src_(std::move(src)) {}

    // A single-pass input iterator over the results.
    class iterator {
    public:
        using value_type = R;
        using difference_type = std::ptrdiff_t;
        iterator() = default;
        explicit iterator(ImapResults* owner) : owner_(owner) {
            if (!owner_->started_) {
                owner_->started_ = true;
                owner_->finished_ = !owner_->src_->advance();
            }
        }
        reference operator*() const { return owner_->src_->current(); }
        iterator& operator++() {
            owner_->finished_ = !owner_->src_->advance();
            return *this;
        }
        void operator++(int) { ++*this; }
        friend bool operator==(const iterator& it, std::default_sentinel_t) {
            return it.owner_ == nullptr || it.owner_->finished();
        }

    private:
        ImapResults* owner_ = nullptr;
    };
    /// @endcond

    /// Starts the iteration (a single pass: a second begin() goes on where the first stopped).
    iterator begin() { return iterator(this); }
    /// The end: reached when every result was read.
    std::default_sentinel_t end() { return {}; }
    /// True once every result was read.
    [[nodiscard]] bool finished() const noexcept { return finished_; }

private:
    std::unique_ptr<source> src_;
    bool started_ = false;
    bool finished_ = false;
};

/// The pool a function given to mproc::mpi::run receives on rank 0: the local Pool's shapes
/// (map, starmap, imap, imap_unordered, submit, apply_async, apply) over the worker ranks.
/// Not copyable; meant for the thread that called run (every MPI call is made from it).
class Pool {
public:
    Pool(const Pool&) = delete;
    Pool& operator=(const Pool&) = delete;

    /// Worker processes behind this pool: worker ranks (times local processes in hybrid mode),
    /// or the local Pool's processes in a singleton.
    [[nodiscard]] unsigned processes() const noexcept {
        if (local_) return local_->processes();
        return engine_->worker_ranks() * std::max(1u, options_.local_processes) +
               (options_.root_computes ? 1 : 0);
    }
    /// Ranks in the job (1 in a singleton).
    [[nodiscard]] int ranks() const noexcept {
        return local_ ? 1 : static_cast<int>(engine_->worker_ranks()) + 1;
    }

    /// f(x) for every x of `inputs`, in order; guided chunks (or `chunksize` items) dealt to the
    /// ranks as they free up.
    /// @throws mproc::mpi::RemoteError (task index, rank, host) when f threw; ProcessCrashed when
    ///         a hybrid rank's local worker died.
    template <class F, std::ranges::sized_range Range>
    [[nodiscard]] auto map(F&& f, const Range& inputs, std::size_t chunksize = 0) {
        detail::check_callable<F>();
        if (local_) return local_->map(std::forward<F>(f), inputs, chunksize);
        return run_map<false>(std::decay_t<F>(f), inputs, chunksize);
    }
    /// Like map, with each input a tuple or pair spread as the arguments.
    template <class F, std::ranges::sized_range Range>
    [[nodiscard]] auto starmap(F&& f, const Range& inputs, std::size_t chunksize = 0) {
        detail::check_callable<F>();
        if (local_) return local_->starmap(std::forward<F>(f), inputs, chunksize);
        return run_map<true>(std::decay_t<F>(f), inputs, chunksize);
    }

    /// Results as a lazy range, in order. Any input range, endless ones included: inputs are read
    /// only as chunks are dealt, at most a bounded number of chunks ahead of the reader.
    /// `chunksize` items per message (1, as in Python, by default; raise it for tiny tasks).
    template <class F, std::ranges::viewable_range Range>
    requires std::ranges::input_range<Range>
    [[nodiscard]] auto imap(F&& f, Range&& inputs, std::size_t chunksize = 1) {
        return start_imap<false>(std::forward<F>(f), std::forward<Range>(inputs), chunksize);
    }
    /// Results as a lazy range in completion order, chunk by chunk.
    template <class F, std::ranges::viewable_range Range>
    requires std::ranges::input_range<Range>
    [[nodiscard]] auto imap_unordered(F&& f, Range&& inputs, std::size_t chunksize = 1) {
        return start_imap<true>(std::forward<F>(f), std::forward<Range>(inputs), chunksize);
    }

    /// Runs f(args...) on a worker rank; the Future gives the result.
    template <class F, class... Args>
    [[nodiscard]] auto submit(F&& f, Args&&... args) {
        detail::check_callable<F>();
        using Fn = std::decay_t<F>;
        using ArgsTuple = std::tuple<std::decay_t<Args>...>;
        using R = std::remove_cvref_t<std::invoke_result_t<Fn&, std::decay_t<Args>...>>;
        if (local_)
            return Future<R>(local_->submit(std::forward<F>(f), std::forward<Args>(args)...));
        namespace wire = mproc::detail::mpi;
        auto j = std::make_shared<wire::job>();
        j->runner = mproc::detail::identify(&wire::run_call<Fn, R, ArgsTuple>);
        j->fn = wire::identity_of(Fn(f));
        j->produce = [payload = mproc::encode(ArgsTuple(std::forward<Args>(args)...)),
                      made = false](std::vector<std::byte>& out, std::uint64_t& first) mutable {
            if (made) return false;
            made = true;
            out.insert(out.end(), payload.begin(), payload.end());
            first = 0;
            return true;
        };
        engine_->add(j);
        return Future<R>(detail::job_handle(engine_, j));
    }
    /// Python's name for submit().
    template <class F, class... Args>
    [[nodiscard]] auto apply_async(F&& f, Args&&... args) {
        return submit(std::forward<F>(f), std::forward<Args>(args)...);
    }
    /// submit(f, args...).get(): runs one task and waits for its result.
    template <class F, class... Args>
    auto apply(F&& f, Args&&... args) {
        return submit(std::forward<F>(f), std::forward<Args>(args)...).get();
    }

private:
    template <class F>
    friend int run(int argc, char** argv, const Options& options, F&& fn);
    using wire_engine = mproc::detail::mpi::engine;

    explicit Pool(const Options& options, std::shared_ptr<wire_engine> eng)
        : options_(options), engine_(std::move(eng)) {}
    explicit Pool(const Options& options, std::unique_ptr<mproc::Pool> local)
        : options_(options), local_(std::move(local)) {}

    template <bool Star, class Fn, class Range>
    auto run_map(const Fn& fn, const Range& inputs, std::size_t chunksize);
    template <bool Unordered, class F, class Range>
    auto start_imap(F&& f, Range&& inputs, std::size_t chunksize);

    /// How many chunks ahead of the reader an imap may deal: enough to keep every rank's
    /// in-flight chunks full twice over.
    [[nodiscard]] std::uint64_t imap_window() const noexcept {
        return std::uint64_t{2} * std::max(1u, options_.chunks_in_flight) *
               (engine_->worker_ranks() + 1);
    }

    Options options_;
    std::shared_ptr<wire_engine> engine_;
    std::unique_ptr<mproc::Pool> local_;
};

template <bool Star, class Fn, class Range>
auto Pool::run_map(const Fn& fn, const Range& inputs, std::size_t chunksize) {
    namespace wire = mproc::detail::mpi;
    using In = std::ranges::range_value_t<Range>;
    using R = typename detail::result_of<Fn, In, Star>::type;
    static_assert(!std::is_void_v<R>, "mproc::mpi::Pool::map: the function must return a value");
    std::vector<R> results;
    const auto n = static_cast<std::uint64_t>(std::ranges::size(inputs));
    if (n == 0) return results;
    results.reserve(n);

    std::vector<std::uint64_t> bounds;
    if (chunksize == 0) {
        bounds = detail::guided_bounds(n, processes());
    } else {
        for (std::uint64_t at = 0; at < n; at += chunksize) bounds.push_back(at);
        bounds.push_back(n);
    }
    // An integer range travels a chunk at a time as (first value, count): no rank lays the
    // numbers out, and a hybrid rank's local Pool gets an integer range too.
    constexpr bool iota = !Star && mproc::detail::is_iota_v<Range>;
    auto j = std::make_shared<wire::job>();
    j->runner = mproc::detail::identify(&wire::run_map_chunk<Fn, In, R, Star, iota>);
    j->fn = wire::identity_of(fn);
    // Inputs are encoded a chunk at a time as chunks are dealt, never all at once.
    j->produce = [bounds = std::move(bounds), chunk = std::size_t{0},
                  next = std::ranges::begin(inputs), at = std::uint64_t{0}](
                     std::vector<std::byte>& out, std::uint64_t& first) mutable {
        if (chunk + 1 >= bounds.size()) return false;
        first = bounds[chunk];
        const std::uint64_t count = bounds[chunk + 1] - bounds[chunk];
        ++chunk;
        if constexpr (iota) {
            mproc::Encoder e(out);
            e(static_cast<In>(*next), count);
            next =
                std::ranges::next(next, static_cast<std::ranges::range_difference_t<Range>>(count));
            return true;
        }
        std::vector<In> items;
        items.reserve(count);
        for (const std::uint64_t end = at + count; at < end; ++at, ++next) items.push_back(*next);
        // Room for the encoded items at once (a hint: encoded size is about the in-memory one
        // for trivially copyable inputs), not a doubling per append.
        if constexpr (std::is_trivially_copyable_v<In>)
            out.reserve(out.size() + 16 + count * sizeof(In));
        mproc::encode_into(out, items);
        return true;
    };
    detail::job_handle handle(engine_, j);
    engine_->add(j);
    for (;;) {
        engine_->wait([&] { return j->done.contains(j->taken) || j->finished(); });
        if (!j->done.contains(j->taken)) break;
        auto node = j->done.extract(j->taken);
        ++j->taken;
        auto chunk = detail::take_chunk<R>(node.mapped(), *engine_);
        if (chunk.error) std::rethrow_exception(chunk.error);
        results.insert(results.end(), std::make_move_iterator(chunk.values.begin()),
                       std::make_move_iterator(chunk.values.end()));
    }
    return results;
}

template <bool Unordered, class F, class Range>
auto Pool::start_imap(F&& f, Range&& inputs, std::size_t chunksize) {
    namespace wire = mproc::detail::mpi;
    detail::check_callable<F>();
    using Fn = std::decay_t<F>;
    using View = std::views::all_t<Range>;
    using In = std::ranges::range_value_t<View>;
    using R = typename detail::result_of<Fn, In, false>::type;
    if (local_) {
        // A singleton: the local Pool's own imap (inputs read a batch at a time, so endless
        // ranges work; in order, every result before a failed item comes before its error), read
        // through the same interface.
        auto range = [&] {
            if constexpr (Unordered)
                return local_->imap_unordered(std::forward<F>(f), std::forward<Range>(inputs),
                                              chunksize);
            else
                return local_->imap(std::forward<F>(f), std::forward<Range>(inputs), chunksize);
        }();
        using LocalRange = decltype(range);
        struct local_source final : ImapResults<R>::source {
            LocalRange range;
            std::optional<typename LocalRange::iterator> at;
            explicit local_source(LocalRange&& r) : range(std::move(r)) {}
            bool advance() override {
                if (!at)
                    at.emplace(range.begin());
                else
                    ++*at;
                return !(*at == std::default_sentinel);
            }
            typename ImapResults<R>::reference current() const override { return **at; }
        };
        return ImapResults<R>(std::make_unique<local_source>(std::move(range)));
    }

    struct state {
        View view;
        std::ranges::iterator_t<View> next;
        std::uint64_t at = 0;
    };
    auto from = std::make_shared<state>(state{std::views::all(std::forward<Range>(inputs)), {}, 0});
    from->next = std::ranges::begin(from->view);
    const std::uint64_t per_chunk = std::max<std::size_t>(chunksize, 1);
    constexpr bool iota = mproc::detail::is_iota_v<View>;  // chunks as (first value, count)
    auto j = std::make_shared<wire::job>();
    j->runner = mproc::detail::identify(&wire::run_map_chunk<Fn, In, R, false, iota>);
    j->fn = wire::identity_of(Fn(f));
    j->window = imap_window();
    j->produce = [from, per_chunk](std::vector<std::byte>& out, std::uint64_t& first) {
        if constexpr (iota) {
            if (from->next == std::ranges::end(from->view)) return false;
            const In start = *from->next;
            std::uint64_t count = 0;
            for (; count < per_chunk && from->next != std::ranges::end(from->view); ++from->next)
                ++count;
            first = from->at;
            from->at += count;
            mproc::Encoder e(out);
            e(start, count);
            return true;
        }
        std::vector<In> items;
        for (; items.size() < per_chunk && from->next != std::ranges::end(from->view); ++from->next)
            items.push_back(*from->next);
        if (items.empty()) return false;
        first = from->at;
        from->at += items.size();
        mproc::encode_into(out, items);
        return true;
    };

    struct remote_source final : ImapResults<R>::source {
        detail::job_handle handle;
        std::vector<R> buffer;
        std::size_t at = 0;
        std::exception_ptr error;  // thrown once the results before it are read
        bool advance() override {
            if (++at < buffer.size()) return true;
            if (error) std::rethrow_exception(std::exchange(error, nullptr));
            auto& j = *handle.job;
            auto& eng = *handle.eng;
            for (;;) {
                auto has_next = [&] {
                    if constexpr (Unordered)
                        return !j.done.empty();
                    else
                        return j.done.contains(j.taken);
                };
                eng.wait([&] { return has_next() || j.finished(); });
                if (!has_next()) return false;
                auto node = Unordered ? j.done.extract(j.done.begin()) : j.done.extract(j.taken);
                ++j.taken;
                auto chunk = detail::take_chunk<R>(node.mapped(), eng);
                buffer = std::move(chunk.values);
                error = chunk.error;
                at = 0;
                if (!buffer.empty()) return true;
                if (error) std::rethrow_exception(std::exchange(error, nullptr));
            }
        }
        typename ImapResults<R>::reference current() const override { return buffer[at]; }
    };
    auto src = std::make_unique<remote_source>();
    src->handle = detail::job_handle(engine_, j);
    engine_->add(j);
    return ImapResults<R>(std::move(src));
}

namespace detail {
/// How long a rank that aborts the job waits for the launcher to read its last output.
inline constexpr std::chrono::seconds abort_output_wait{2};

[[noreturn]] inline void abort_job(const std::string& what) noexcept {
    // Nothing fn printed may be lost: first std::cout's own buffer (a program that called
    // sync_with_stdio(false) has one, and MPI_Abort skips the exit that would flush it), then
    // the message, then every stdio stream.
    try {
        std::cout.flush();
        std::clog.flush();
    } catch (...) {  // a stream set to throw on failure: the abort goes on regardless
    }
    std::fprintf(stderr, "%s\n", what.c_str());
    std::fflush(nullptr);
    // MPI_Abort has the launcher kill every rank, and MPICH's Hydra may do so before it has read
    // this rank's pipes: the job then ends with no word of why (about one launch in a hundred on
    // 2 cores, and once in CI). So wait, briefly, until the launcher has taken all from them.
    const auto deadline = mproc::detail::Deadline::after(abort_output_wait);
    (void)mproc::detail::wait_until_read(STDOUT_FILENO, deadline);
    (void)mproc::detail::wait_until_read(STDERR_FILENO, deadline);
    MPI_Abort(MPI_COMM_WORLD, 1);
    std::_Exit(1);  // MPI_Abort does not return; if it ever did, still never hang
}
[[nodiscard]] inline std::string current_exception_text() {
    auto [type, message] = mproc::detail::describe_current_exception();
    return type + ": " + message;
}
}  // namespace detail

/// Runs an MPI job: initializes MPI (MPI_THREAD_FUNNELED), checks that every rank runs the same
/// build, then rank 0 calls fn(pool) while every other rank serves its tasks; when fn returns,
/// every rank finalizes MPI and run returns (fn's result on rank 0, 0 elsewhere). Without mpirun,
/// fn runs with a local Pool.
/// An exception escaping fn ends the whole job with MPI_Abort (exit code 1), never a hang. A
/// mismatched launch (`mpirun -np 1 ./a : -np 1 ./b`) returns 2 on every rank, with one message
/// on rank 0's stderr. Call it once per process, from main's thread.
template <class F>
int run(int argc, char** argv, const Options& options, F&& fn) {
    namespace wire = mproc::detail::mpi;
    int provided = 0;
    wire::check(MPI_Init_thread(&argc, &argv, MPI_THREAD_FUNNELED, &provided), "MPI_Init_thread");
    int me = 0, size = 1;
    MPI_Comm_rank(MPI_COMM_WORLD, &me);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    detail::rank_slot() = me;

    auto call = [&](Pool& pool) -> int {
        try {
            if constexpr (std::is_void_v<std::invoke_result_t<F&, Pool&>>) {
                fn(pool);
                return 0;
            } else {
                return static_cast<int>(fn(pool));
            }
        } catch (...) {
            detail::abort_job("mproc::mpi: the function rank 0 runs threw " +
                              detail::current_exception_text() + "; aborting the job");
        }
    };

    std::string failure;
    std::vector<std::string> hosts;
    try {
        hosts = wire::handshake(me, size, failure);
    } catch (...) {
        detail::abort_job("mproc::mpi: the start-up handshake failed: " +
                          detail::current_exception_text());
    }
    if (!failure.empty()) {
        if (me == 0) std::fprintf(stderr, "%s\n", failure.c_str());
        MPI_Finalize();
        return 2;
    }

    int code = 0;
    if (size == 1) {
        std::unique_ptr<mproc::Pool> local;
        try {
            local = std::make_unique<mproc::Pool>(options.singleton_processes);
        } catch (...) {
            detail::abort_job("mproc::mpi: starting the local Pool failed: " +
                              detail::current_exception_text());
        }
        Pool pool(options, std::move(local));
        code = call(pool);
    } else if (me == 0) {
        wire::engine_settings settings;
        settings.chunks_in_flight = options.chunks_in_flight;
        settings.root_computes = options.root_computes;
        if (options.max_message_bytes != 0) settings.max_piece = options.max_message_bytes;
        auto eng = std::make_shared<wire::engine>(size, std::move(hosts), settings);
        {
            Pool pool(options, eng);
            code = call(pool);
        }
        try {
            eng->shutdown();
        } catch (...) {
            detail::abort_job("mproc::mpi: stopping the worker ranks failed: " +
                              detail::current_exception_text());
        }
    } else {
        try {
            std::unique_ptr<mproc::Pool> local;
            if (options.local_processes != 0) {
                const unsigned usable = mproc::cpu_count();
                if (usable < options.local_processes)
                    std::fprintf(
                        stderr,
                        "mproc::mpi: warning: rank %d may use %u CPU(s) but was asked for %u local "
                        "processes; "
                        "mpirun binds each rank to a core by default: launch with --bind-to none "
                        "(and --map-by ppr:1:node)\n",
                        me, usable, options.local_processes);
                local = std::make_unique<mproc::Pool>(options.local_processes);
            }
            wire::run_context ctx{local.get()};
            wire::serve(ctx, options.max_message_bytes != 0 ? options.max_message_bytes
                                                            : wire::mpi_max_piece);
        } catch (...) {
            detail::abort_job("mproc::mpi: worker rank " + std::to_string(me) +
                              " failed: " + detail::current_exception_text());
        }
    }
    MPI_Finalize();
    return code;
}

/// run with default Options.
template <class F>
int run(int argc, char** argv, F&& fn) {
    return run(argc, argv, Options{}, std::forward<F>(fn));
}

static_assert(PoolLike<mproc::Pool>);
static_assert(PoolLike<Pool>);

}  // namespace mpi
MPROC_NAMESPACE_END

// The worker side of the Pool: the loop a worker process runs, and the chunk runners, one
// instantiated per (function, input, result) type combination and named to the worker by its
// function_id, never by a raw address.
#pragma once

#include <mproc/codec.hpp>
#include <mproc/detail/outcome.hpp>
#include <mproc/detail/pool_shared.hpp>

#include <csignal>
#include <cstring>
#include <functional>
#include <tuple>
#include <type_traits>
#include <vector>

MPROC_NAMESPACE_BEGIN
namespace detail {

/// Types the Pool copies bit for bit through shared memory instead of encoding: both ends are
/// the same binary, so a bool or an enum written by the worker's own code is trusted.
template <class T>
inline constexpr bool pool_bulk_v = std::is_arithmetic_v<T> || std::is_enum_v<T> || bitwise_v<T>;

/// A callable that can run in a worker as it is: a function pointer (sent by identity) or an
/// object with no state (default-constructed in the worker, as C++20 captureless lambdas are).
template <class F>
inline constexpr bool stateless_callable_v =
    (std::is_pointer_v<F> && std::is_function_v<std::remove_pointer_t<F>>) ||
    (std::is_class_v<F> && std::is_empty_v<F> && std::is_default_constructible_v<F>);

/// What a chunk runner is handed.
struct chunk_context {
    shared_arena& arena;
    pool_control& ctl;
    job_slot& job;
    worker_slot& me;
    std::uint64_t chunk;
    unsigned worker;
};
using chunk_runner = void (*)(chunk_context&);

template <class F>
[[nodiscard]] F worker_callable(const job_slot& job) {
    if constexpr (std::is_pointer_v<F>) return resolve<F>(job.fn);
    else return F{};
}

[[nodiscard]] inline std::span<const std::byte> arena_bytes(shared_arena& arena, arena_span s) noexcept {
    return {arena.base() + s.offset, static_cast<std::size_t>(s.length)};
}

/// Copies `bytes` into fresh arena memory.
[[nodiscard]] inline arena_span store_in_arena(shared_arena& arena, std::span<const std::byte> bytes) {
    arena_span s{arena.allocate(bytes.size()), bytes.size()};
    if (!bytes.empty()) std::memcpy(arena.base() + s.offset, bytes.data(), bytes.size());
    return s;
}

/// Records the exception being handled as the job's error (the first one wins) and cancels the
/// job's remaining chunks. Never throws.
inline void record_exception(chunk_context& c, std::uint64_t item) noexcept {
    arena_span text{};
    try {
        auto [type, message] = describe_current_exception();
        std::vector<std::byte> bytes;
        Encoder encoder(bytes);
        encoder(type, message);
        text = store_in_arena(c.arena, bytes);
    } catch (...) {
        // No memory for the text: the error is still recorded, with an empty description.
    }
    std::uint32_t expected = job_ok;
    if (c.job.failed.compare_exchange_strong(expected, job_error_writing + c.worker)) {
        c.job.error_kind = job_error_kind::exception;
        c.job.error_item = item;
        c.job.error_pid = static_cast<std::int32_t>(::getpid());
        c.job.error_text = text;
        c.job.failed.store(job_error_ready, std::memory_order_release);
    }
    c.job.claim.fetch_or(claim_word::cancelled_bit, std::memory_order_acq_rel);
}

/// Runs one chunk of a map: items [first, last) of the job's input through Fn into its output.
/// `Star`: each input is a tuple applied as the arguments (starmap).
template <class Fn, class In, class R, bool Star>
void run_map_chunk(chunk_context& c) {
    const job_slot& job = c.job;
    const std::uint64_t first = c.chunk * job.chunk_size;
    const std::uint64_t last = std::min(job.items, first + job.chunk_size);
    std::uint64_t i = first;
    thread_local std::vector<std::byte> encoded;
    try {
        Fn fn = worker_callable<Fn>(job);
        auto call = [&fn](const In& x) -> R {
            if constexpr (Star) return std::apply(fn, x);
            else return std::invoke(fn, x);
        };
        encoded.clear();
        Encoder encoder(encoded);
        auto emit = [&](std::uint64_t index, R&& r) {
            if constexpr (pool_bulk_v<R>) std::memcpy(c.arena.at<R>(job.output) + index, &r, sizeof(R));
            else encoder(r);
        };
        if constexpr (pool_bulk_v<In>) {
            const In* in = c.arena.at<const In>(job.input);
            for (; i < last; ++i) {
                c.me.item.store(i, std::memory_order_relaxed);
                emit(i, call(in[i]));
            }
        } else {
            Decoder decoder(arena_bytes(c.arena, c.arena.at<arena_span>(job.input)[c.chunk]));
            for (; i < last; ++i) {
                c.me.item.store(i, std::memory_order_relaxed);
                const In x = decode<In>(decoder);
                emit(i, call(x));
            }
        }
        if constexpr (!pool_bulk_v<R>) c.arena.at<arena_span>(job.output)[c.chunk] = store_in_arena(c.arena, encoded);
    } catch (...) {
        // Keep the results before the failing item: an ordered imap still yields them.
        if constexpr (!pool_bulk_v<R>) {
            try {
                c.arena.at<arena_span>(job.output)[c.chunk] = store_in_arena(c.arena, encoded);
            } catch (...) {
            }
        }
        record_exception(c, i);
    }
}

/// Runs a submitted call: decodes the arguments, calls, and stores the outcome (value or
/// exception) for the Future.
template <class Fn, class R, class ArgsTuple>
void run_call_chunk(chunk_context& c) {
    c.me.item.store(0, std::memory_order_relaxed);
    thread_local std::vector<std::byte> outcome;
    outcome.clear();
    try {
        (void)run_and_encode_outcome<R>(outcome, [&]() -> R {
            Fn fn = worker_callable<Fn>(c.job);
            auto args = decode<ArgsTuple>(arena_bytes(c.arena, c.arena.at<arena_span>(c.job.input)[0]));
            return std::apply(fn, std::move(args));
        });
        c.arena.at<arena_span>(c.job.output)[0] = store_in_arena(c.arena, outcome);
    } catch (...) {
        record_exception(c, 0);  // the outcome could not be stored (arena full)
    }
}

/// Runs a claimed chunk and publishes it done. The order of the stores is what lets the parent
/// tell, after a worker died, whether its chunk was lost: the chunk's state says done before
/// the counter moves and before the worker's slot says idle.
inline void run_claimed_chunk(shared_arena& arena, pool_control& ctl, unsigned worker, claimed_chunk claimed) {
    job_slot& job = ctl.jobs[claimed.job % max_jobs];
    worker_slot& me = ctl.workers()[worker];
    me.chunk.store(claimed.chunk, std::memory_order_relaxed);
    me.item.store(claimed.chunk * job.chunk_size, std::memory_order_relaxed);
    me.job.store(claimed.job + 1, std::memory_order_release);
    auto& state = chunk_state_of(arena, job, claimed.chunk);
    state.store(chunk_running, std::memory_order_relaxed);
    chunk_context context{arena, ctl, job, me, claimed.chunk, worker};
    try {
        resolve<chunk_runner>(job.runner)(context);
    } catch (...) {
        record_exception(context, me.item.load(std::memory_order_relaxed));
    }
    state.store(chunk_done, std::memory_order_release);
    const std::uint32_t position = job.log_tail.fetch_add(1, std::memory_order_relaxed);
    arena.at<std::atomic<std::uint32_t>>(job.log)[position].store(
        static_cast<std::uint32_t>(claimed.chunk + 1), std::memory_order_release);
    job.chunks_done.fetch_add(1, std::memory_order_seq_cst);
    me.job.store(0, std::memory_order_release);
    wake_parent(ctl);
}

/// The loop of a worker process: claim a chunk, run it, repeat; sleep on the post counter when
/// there is nothing to claim. Returns (the exit code) when the pool shuts down.
inline int worker_main(shared_arena& arena, pool_control& ctl, unsigned worker) {
    // Ctrl-C in a terminal reaches the whole process group: the parent decides what it means,
    // and its workers die with it if it dies (PR_SET_PDEATHSIG).
    std::signal(SIGINT, SIG_IGN);
    ctl.workers()[worker].pid.store(static_cast<std::int32_t>(::getpid()), std::memory_order_relaxed);
    for (;;) {
        const std::uint32_t seen = ctl.post_seq.load(std::memory_order_acquire);
        if (ctl.shutdown.load(std::memory_order_acquire) != 0) return 0;
        if (auto claimed = claim_chunk(ctl)) {
            run_claimed_chunk(arena, ctl, worker, *claimed);
            continue;
        }
        // The deadline only bounds the cost of a bug; a post always bumps post_seq and wakes.
        (void)wait_until(ctl.post_seq, ctl.idle_workers, [seen](std::uint32_t v) { return v != seen; },
                         Deadline::after(std::chrono::seconds(1)));
    }
}

}  // namespace detail
MPROC_NAMESPACE_END

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
#include <ranges>
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

/// Notes the item a worker starts, for crash reports and, when tasks have a time limit, for the
/// parent's deadline check.
/// `timed`: the job's tasks have a time limit (read once per chunk by the caller).
inline void begin_item(chunk_context& c, std::uint64_t item, bool timed) noexcept {
    c.me.item.store(item, std::memory_order_relaxed);
    if (timed) c.me.item_started.store(monotonic_ns(), std::memory_order_release);
}

template <class F>
[[nodiscard]] F worker_callable(const job_slot& job) {
    if constexpr (std::is_pointer_v<F>) return resolve<F>(job.fn);
    else return F{};
}

/// The bytes of `s`, mapped here for reading (see shared_arena::prefault).
[[nodiscard]] inline std::span<const std::byte> arena_bytes(shared_arena& arena, arena_span s) noexcept {
    arena.prefault(s.offset, s.length, prefault_use::read);
    return {arena.base() + s.offset, static_cast<std::size_t>(s.length)};
}

/// Fresh arena memory for `bytes`, mapped here for writing.
[[nodiscard]] inline std::uint64_t allocate_to_write(shared_arena& arena, std::size_t bytes) {
    const std::uint64_t offset = arena.allocate(bytes);
    arena.prefault(offset, bytes, prefault_use::write);
    return offset;
}

/// Encodes `value` straight into fresh arena memory (no intermediate buffer).
template <class T>
[[nodiscard]] arena_span encode_in_arena(shared_arena& arena, const T& value) {
    const std::size_t bytes = encoded_size(value);
    const arena_span s{allocate_to_write(arena, bytes), bytes};
    (void)encode_to(std::span<std::byte>(arena.base() + s.offset, bytes), value);
    return s;
}

/// Copies `bytes` into fresh arena memory.
[[nodiscard]] inline arena_span store_in_arena(shared_arena& arena, std::span<const std::byte> bytes) {
    arena_span s{allocate_to_write(arena, bytes.size()), bytes.size()};
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

/// Runs the items of a chunk: `compute(i)` for each, in order, into the job's output (bulk
/// results in place, others encoded into one arena buffer for the chunk). An exception stops the
/// chunk; the results before it are kept (an ordered imap still yields them) and it is recorded.
template <class R, class Compute>
void run_chunk_items(chunk_context& c, Compute&& compute) {
    const job_slot& job = c.job;
    const auto [first, last] = chunk_items(c.arena, job, c.chunk);
    thread_local std::vector<std::byte> encoded;
    encoded.clear();
    auto store_encoded = [&] {
        if constexpr (!pool_bulk_v<R>) c.arena.at<arena_span>(job.output)[c.chunk] = store_in_arena(c.arena, encoded);
    };
    std::uint64_t i = first;
    // Read once: the per-item store below may alias the job's words as far as the compiler knows.
    const bool timed = job.timeout_ns != 0;
    R* const bulk_out = pool_bulk_v<R> ? c.arena.at<R>(job.output) : nullptr;
    if constexpr (pool_bulk_v<R>) c.arena.prefault(job.output + first * sizeof(R), (last - first) * sizeof(R), prefault_use::write);
    try {
        Encoder encoder(encoded);
        for (; i < last; ++i) {
            begin_item(c, i, timed);
            if constexpr (pool_bulk_v<R>) {
                const R r = compute(i);
                std::memcpy(bulk_out + i, &r, sizeof(R));
            } else {
                encoder(compute(i));
            }
        }
        store_encoded();
    } catch (...) {
        try {
            store_encoded();
        } catch (...) {
        }
        record_exception(c, i);
    }
}

/// How a map's inputs reach the workers.
enum class input_layout { bulk, encoded, iota };

/// An integer range (std::views::iota) travels as its first value: nothing is copied.
template <class Range>
inline constexpr bool is_iota_v = false;
template <class W, class B>
inline constexpr bool is_iota_v<std::ranges::iota_view<W, B>> = std::is_integral_v<W>;

template <class Range, class In>
inline constexpr input_layout input_layout_v = is_iota_v<Range>   ? input_layout::iota
                                               : pool_bulk_v<In> ? input_layout::bulk
                                                                 : input_layout::encoded;

/// Runs one chunk of a map: the job's input (bulk, encoded per chunk, or an integer range)
/// through Fn. `Star`: each input is a tuple applied as the arguments (starmap).
template <class Fn, class In, class R, bool Star, input_layout Layout>
void run_map_chunk(chunk_context& c) {
    Fn fn = worker_callable<Fn>(c.job);
    auto call = [&fn](const In& x) -> R {
        if constexpr (Star) return std::apply(fn, x);
        else return std::invoke(fn, x);
    };
    if constexpr (Layout == input_layout::iota) {
        const auto first = static_cast<In>(c.job.input);
        run_chunk_items<R>(c, [&](std::uint64_t i) { return call(static_cast<In>(first + static_cast<In>(i))); });
    } else if constexpr (Layout == input_layout::bulk) {
        const In* in = c.arena.at<const In>(c.job.input);
        const auto [first, last] = chunk_items(c.arena, c.job, c.chunk);
        c.arena.prefault(c.job.input + first * sizeof(In), (last - first) * sizeof(In), prefault_use::read);
        run_chunk_items<R>(c, [&](std::uint64_t i) { return call(in[i]); });
    } else {
        Decoder decoder(arena_bytes(c.arena, c.arena.at<arena_span>(c.job.input)[c.chunk]));
        run_chunk_items<R>(c, [&](std::uint64_t) { return call(decode<In>(decoder)); });
    }
}

/// Runs one chunk of a fork_map: the inputs are read in place from the caller's memory, which
/// the worker (forked after the call began) sees through copy-on-write; nothing is encoded.
template <class Context, class R>
void run_fork_chunk(chunk_context& c) {
    auto& context = *reinterpret_cast<Context*>(c.job.context);
    run_chunk_items<R>(c, [&](std::uint64_t i) -> R {
        return std::invoke(context.fn, std::ranges::begin(context.inputs)[static_cast<std::ptrdiff_t>(i)]);
    });
}

/// Runs a submitted call: decodes the arguments, calls, and stores the outcome (value or
/// exception) for the Future.
template <class Fn, class R, class ArgsTuple>
void run_call_chunk(chunk_context& c) {
    begin_item(c, 0, c.job.timeout_ns != 0);
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

/// Parks the worker: its doorbell says parked, and it is on the idle stack (pushed unless
/// `listed` says it still is). From here on a post rings it, or another parked worker.
inline void list_idle(pool_control& ctl, unsigned worker) noexcept {
    worker_slot& me = ctl.workers()[worker];
    me.doorbell.store(doorbell_parked, std::memory_order_seq_cst);
    if (me.listed.load(std::memory_order_seq_cst) == 0) {
        me.listed.store(1, std::memory_order_seq_cst);
        push_idle(ctl, worker);
    }
}

/// Leaves the parked state by itself (it found work, or its sleep timed out). Its stack entry
/// stays, stale: the parent drops it when it pops it and finds the doorbell awake.
inline void unpark(worker_slot& me) noexcept {
    std::uint32_t state = me.doorbell.load(std::memory_order_seq_cst);
    while (state != doorbell_awake &&
           !me.doorbell.compare_exchange_weak(state, doorbell_awake, std::memory_order_seq_cst)) {
    }
}

/// Runs claimed chunks (a batch of `claimed.count`) and publishes them done. The order of the
/// stores is what lets the parent tell, after a worker died, which of its chunks were lost: the
/// slot names the job, the chunk it is on and the batch's end before the claim window closes;
/// the chunks after the first say held until the worker moves on to them; each chunk's state
/// says done before the counter moves and before the worker's slot says idle. With `may_list`,
/// a worker that took the job's last chunk goes on the idle stack (list_idle) before its chunks
/// are seen done: the parent's next post, which may follow at once, then finds it there, warm
/// and spinning, instead of waking a sleeping one. Returns whether it listed itself.
inline bool run_claimed_chunks(shared_arena& arena, pool_control& ctl, unsigned worker, claimed_chunk claimed,
                               bool may_list) {
    job_slot& job = ctl.jobs[claimed.job % max_jobs];
    worker_slot& me = ctl.workers()[worker];
    const std::uint64_t end = claimed.chunk + claimed.count;
    // Item and start time first: the parent reads them once `job` names this job.
    me.chunk.store(claimed.chunk, std::memory_order_relaxed);
    me.chunk_end.store(end, std::memory_order_relaxed);
    me.item.store(chunk_items(arena, job, claimed.chunk).first, std::memory_order_relaxed);
    if (job.timeout_ns != 0) me.item_started.store(monotonic_ns(), std::memory_order_relaxed);
    me.job.store(claimed.job + 1, std::memory_order_release);
    for (std::uint64_t c = claimed.chunk + 1; c < end; ++c)
        chunk_state_of(arena, job, c).store(chunk_held, std::memory_order_relaxed);
    chunk_state_of(arena, job, claimed.chunk).store(chunk_running, std::memory_order_relaxed);
    // The claim is named and marked: a death from here on is on_worker_exit's to report.
    me.claiming.store(0, std::memory_order_release);
    bool listed = false;
    for (std::uint64_t c = claimed.chunk; c < end; ++c) {
        auto& state = chunk_state_of(arena, job, c);
        if (c != claimed.chunk) {
            pool_fault(pool_point::batch_chunk);
            me.chunk.store(c, std::memory_order_relaxed);  // a death before the next store: c is held, so lost
            state.store(chunk_running, std::memory_order_relaxed);
        }
        chunk_context context{arena, ctl, job, me, c, worker};
        try {
            resolve<chunk_runner>(job.runner)(context);
        } catch (...) {
            record_exception(context, me.item.load(std::memory_order_relaxed));
        }
        if (c + 1 == end) {
            listed = may_list && claim_word::exhausted(job.claim.load(std::memory_order_relaxed), claimed.job);
            if (listed) list_idle(ctl, worker);
        }
        state.store(chunk_done, std::memory_order_release);
    }
    const auto count = static_cast<std::uint32_t>(claimed.count);
    const std::uint32_t position = job.log_tail.fetch_add(count, std::memory_order_relaxed);
    auto* log = arena.at<std::atomic<std::uint32_t>>(job.log);
    for (std::uint32_t i = 0; i < count; ++i)
        log[position + i].store(static_cast<std::uint32_t>(claimed.chunk + i + 1), std::memory_order_release);
    const std::uint32_t done = job.chunks_done.fetch_add(count, std::memory_order_seq_cst) + count;
    me.job.store(0, std::memory_order_release);
    if (done >= claim_word::count(job.claim.load(std::memory_order_relaxed)) ||
        job.failed.load(std::memory_order_relaxed) != job_ok ||
        ctl.parent_wants_chunks.load(std::memory_order_relaxed) != 0)
        wake_parent(ctl);
    return listed;
}

/// Runs the pool's initializer; on an exception, records it in the worker's slot for the parent.
inline bool run_initializer(shared_arena& arena, worker_slot& me, const std::function<void()>& initializer) {
    if (initializer) {
        try {
            initializer();
        } catch (...) {
            try {
                auto [type, message] = describe_current_exception();
                std::vector<std::byte> bytes;
                Encoder encoder(bytes);
                encoder(type, message);
                me.init_error = store_in_arena(arena, bytes);
            } catch (...) {
            }
            me.state.store(worker_init_failed, std::memory_order_release);
            return false;
        }
    }
    me.state.store(worker_ready, std::memory_order_seq_cst);
    return true;
}

/// The shortest spin an adaptive budget shrinks to, and how often a spin tries the full budget
/// whatever it is. Without both, a worker and a parent can lock each other into the slow mode:
/// the worker sleeps because the parent slept, so the parent, waiting longer than its own short
/// spin, sleeps again, and every spin that could end it is too short to see the next post.
inline constexpr std::int64_t min_spin_ns = 2'000;
inline constexpr unsigned full_spin_every = 16;

/// Waits, parked (list_idle), until the parent rings the doorbell. First a last look for work
/// posted before the worker was listed (a post after it rings a parked worker); then, if
/// `spin`, a spin on the worker's own doorbell for `budget_ns` (a worker that just finished is
/// the warmest to run the next task, and the parent's turnaround between two submits is a few
/// microseconds; at most ctl.spin_limit workers spin at once, so that an oversubscribed pool
/// does not fill the cores with spinners); then FUTEX_WAIT, for a second at most (which only
/// bounds the cost of a bug). The budget adapts, as glibc's adaptive mutexes do: a spin that
/// ends rung doubles it (up to ctl.spin_ns), one that runs out halves it (down to min_spin_ns;
/// one spin in full_spin_every takes ctl.spin_ns, and restores it when it ends rung):
/// on a busy machine the parent's turnaround is longer than any spin, and a spinner would only
/// take the CPU the parent needs. Returns false when the sleep's second passed: the worker then
/// looks for work and parks again without spinning, so that it does not take the next task from
/// the warm worker the parent rings.
inline bool wait_for_ring(pool_control& ctl, unsigned worker, bool spin, std::int64_t& budget_ns) {
    thread_local unsigned waits = 0;
    worker_slot& me = ctl.workers()[worker];
    // Against the parent's publish(): it posts, then pops the stack; we are listed, then look.
    // Every one of these four steps is seq_cst, so one of the two looks sees the other's
    // change (no fence: ThreadSanitizer does not model them).
    (void)ctl.posted.load(std::memory_order_seq_cst);  // work_available() reads on from here
    if (ctl.shutdown.load(std::memory_order_seq_cst) != 0 || work_available(ctl)) {
        unpark(me);
        return true;
    }
    if (spin && budget_ns > 0) {
        const bool place = ctl.spinning.fetch_add(1, std::memory_order_relaxed) < ctl.spin_limit;
        me.spinning.store(1, std::memory_order_relaxed);  // if it dies now, the parent gives the place back
        if (place) {
            const bool full = ++waits % full_spin_every == 0;
            const std::int64_t until = monotonic_ns() + (full ? ctl.spin_ns : budget_ns);
            bool rung = false;
            do {
                for (int i = 0; i < 32 && !rung; ++i) {
                    cpu_relax();
                    rung = me.doorbell.load(std::memory_order_acquire) != doorbell_parked;
                }
            } while (!rung && monotonic_ns() < until);
            if (rung) budget_ns = full ? ctl.spin_ns : std::min(ctl.spin_ns, 2 * budget_ns);
            else budget_ns = std::min(ctl.spin_ns, std::max(min_spin_ns, budget_ns / 2));
        }
        me.spinning.store(0, std::memory_order_relaxed);
        ctl.spinning.fetch_sub(1, std::memory_order_relaxed);
    }
    std::uint32_t parked = doorbell_parked;
    if (!me.doorbell.compare_exchange_strong(parked, doorbell_sleeping, std::memory_order_seq_cst))
        return true;  // rung (the failed exchange read the ring with acquire)
    const bool timed_out =
        futex_wait(me.doorbell, doorbell_sleeping, Deadline::after(std::chrono::seconds(1))) == futex_status::timeout;
    unpark(me);
    return !timed_out;
}

/// The loop of a worker process: claim a chunk, run it, repeat; with nothing to claim, park and
/// wait to be rung. Returns (the exit code) when the pool shuts down, when the worker has run
/// max_tasks_per_child chunks (the parent replaces it), or when the initializer failed.
inline int worker_main(shared_arena& arena, pool_control& ctl, unsigned worker,
                       const std::function<void()>& initializer) {
    // Ctrl-C in a terminal reaches the whole process group: the parent decides what it means,
    // and its workers die with it if it dies (PR_SET_PDEATHSIG).
    std::signal(SIGINT, SIG_IGN);
    // The arena's header and the pool's control block, in one call instead of a fault a page.
    arena.prefault(0, arena.header().floor, prefault_use::write);
    worker_slot& me = ctl.workers()[worker];
    me.pid.store(static_cast<std::int32_t>(::getpid()), std::memory_order_relaxed);
    const bool ready = run_initializer(arena, me, initializer);
    wake_parent(ctl);  // a Pool's constructor may be waiting for every initializer
    if (!ready) return 3;
    std::uint64_t tasks = 0;
    bool listed = false;  // parked by run_claimed_chunks, before its chunks were seen done
    bool spin = true;     // not after a sleep that timed out
    std::int64_t spin_budget_ns = ctl.spin_ns;
    batch_wish wish;
    for (;;) {
        if (ctl.shutdown.load(std::memory_order_acquire) != 0) return 0;
        // Said before the claim, which nothing names until run_claimed_chunks stores `job`: a
        // parent that sees this worker die with `claiming` set looks for chunks lost between.
        me.claiming.store(1, std::memory_order_release);
        // A worker that recycles after max_tasks_per_child chunks never claims past the last.
        if (ctl.max_tasks_per_child != 0) wish.size = std::min(wish.size, ctl.max_tasks_per_child - tasks);
        if (auto claimed = claim_chunk(ctl, wish)) {
            pool_fault(pool_point::chunk_claimed);
            if (listed) unpark(me);  // work after all (another job): busy, not idle
            tasks += claimed->count;
            const bool last = tasks == ctl.max_tasks_per_child;
            // Timed only while the job has chunks for a next claim, and never a job with a time
            // limit or one its caller wants unbatched: a submit's round trip does not pay for
            // the clock.
            const job_slot& job = ctl.jobs[claimed->job % max_jobs];
            const bool batchable = claimed->left != 0 && job.timeout_ns == 0 && job.unbatched == 0;
            const std::int64_t started = batchable ? monotonic_ns() : 0;
            listed = run_claimed_chunks(arena, ctl, worker, *claimed, !last);
            if (last) return 0;
            const auto quick_below = batch_chunk_ns * static_cast<std::int64_t>(claimed->count);
            if (batchable && monotonic_ns() - started < quick_below)
                wish = {claimed->job, std::min(batch_max_chunks, 2 * claimed->count)};
            else
                wish = {};
            spin = true;
            continue;
        }
        me.claiming.store(0, std::memory_order_release);
        if (!listed) list_idle(ctl, worker);
        listed = false;
        spin = wait_for_ring(ctl, worker, spin, spin_budget_ns);
    }
}

}  // namespace detail
MPROC_NAMESPACE_END

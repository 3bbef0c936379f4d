// The Pool's shared state: the control block, the job ring and the worker slots that live in the
// Pool's shared arena, and the claim protocol by which idle workers pull chunks.
//
// A job is a batch of items cut into chunks (a map is one job; a submit is a job of one item).
// It lives in one of max_jobs slots, taken in any order (a long-running job holds its slot while
// thousands of short ones come and go through the others), and is named by an id:
// generation x max_jobs + slot, a new generation for every job. Published ids go into the post
// queue in order; workers scan it from its head and pull chunks from the oldest job that has one.
// A job's claim word packs [generation:16][cancelled:1][next:23][count:24]: a worker claims chunk
// `next` with one compare-and-swap that also checks the generation (so a worker that lags behind
// never claims from a reused slot) and the cancelled bit (set when the job failed).
#pragma once

#include <mproc/detail/arena.hpp>
#include <mproc/detail/function_id.hpp>
#include <mproc/detail/futex.hpp>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <optional>
#include <vector>

MPROC_NAMESPACE_BEGIN
namespace detail {

inline constexpr std::uint64_t max_jobs = 256;           // job slots, and post queue entries
inline constexpr std::uint64_t max_chunks = (1u << 23) - 1;  // per job (the claim word's fields)

namespace claim_word {
inline constexpr std::uint64_t count_bits = 24, next_bits = 23;
inline constexpr std::uint64_t next_one = std::uint64_t{1} << count_bits;
inline constexpr std::uint64_t cancelled_bit = std::uint64_t{1} << (count_bits + next_bits);
inline constexpr int gen_shift = static_cast<int>(count_bits + next_bits + 1);
inline constexpr std::uint64_t count(std::uint64_t w) { return w & (next_one - 1); }
inline constexpr std::uint64_t next(std::uint64_t w) { return (w >> count_bits) & ((std::uint64_t{1} << next_bits) - 1); }
inline constexpr std::uint64_t gen(std::uint64_t w) { return w >> gen_shift; }
inline constexpr bool cancelled(std::uint64_t w) { return (w & cancelled_bit) != 0; }
inline constexpr std::uint64_t generation_of(std::uint64_t job) { return (job / max_jobs) & 0xffff; }
inline constexpr std::uint64_t make(std::uint64_t job, std::uint64_t chunks) { return (generation_of(job) << gen_shift) | chunks; }
/// Whether claim word `w` has no chunk left for job `job` (all claimed, cancelled, or its slot
/// already holds a newer job).
inline constexpr bool exhausted(std::uint64_t w, std::uint64_t job) {
    return gen(w) != generation_of(job) || cancelled(w) || next(w) >= count(w);
}
}  // namespace claim_word

/// Where a chunk is. Written by the worker that runs it; read by the parent, which marks a chunk
/// lost when its worker died before finishing it (so that it is never counted lost twice).
/// `chunk_held`: claimed in a batch (see claim_chunk) by a worker that has not started it yet.
enum chunk_state : std::uint32_t {
    chunk_pending = 0,
    chunk_running = 1,
    chunk_done = 2,
    chunk_lost = 3,
    chunk_held = 4,
};

/// `failed` word of a job: no error, an error recorded, or (2 + w) while worker w writes one.
enum : std::uint32_t { job_ok = 0, job_error_ready = 1, job_error_writing = 2 };

enum class job_error_kind : std::uint32_t { exception = 0, crash = 1, timeout = 2 };

/// A (offset, length) pair in the arena.
struct arena_span {
    std::uint64_t offset = 0;
    std::uint64_t length = 0;
};

struct alignas(64) job_slot {
    // Each hot word on its own cache line: workers claim, count and log chunks at the same time.
    alignas(64) std::atomic<std::uint64_t> claim{0};
    alignas(64) std::atomic<std::uint32_t> chunks_done{0};  // a hint: see pool_core's done_chunks
    alignas(64) std::atomic<std::uint32_t> log_tail{0};
    alignas(64) std::atomic<std::uint32_t> failed{job_ok};
    // Written by the parent before `claim` publishes the job, read-only afterwards:
    function_id runner;          // the chunk runner instantiated for this job's types
    function_id fn;              // the user's function, when it is a pointer
    std::uint64_t items = 0;
    std::uint64_t chunk_size = 0;  // items per chunk, or 0: the chunks' bounds are in `bounds`
    std::uint64_t bounds = 0;      // chunks + 1 item indices (std::uint64_t) when chunk_size is 0
    std::uint64_t input = 0;     // bulk input array, a table of arena_span per chunk, or (for an
                                 // iota_view input) the first value's bits: item i is first + i
    std::uint64_t output = 0;    // bulk result array, or a table of arena_span per chunk
    std::uint64_t states = 0;    // std::atomic<std::uint32_t> per chunk (chunk_state)
    std::uint64_t log = 0;       // std::atomic<std::uint32_t> per chunk: 1 + chunks in completion order
    std::int64_t timeout_ns = 0; // per-task time limit, 0 for none
    std::uint32_t unbatched = 0; // 1: never claimed in batches (MapOptions::batch_quick_tasks)
    std::uint64_t context = 0;   // fork_map only: the address of the call's state in the parent,
                                 // valid in its workers because they are forked after it exists
    // The first error, valid once failed == job_error_ready:
    job_error_kind error_kind{};
    std::int32_t error_status = 0;   // crash: Python's exitcode of the worker
    std::int32_t error_pid = 0;
    std::uint64_t error_item = 0;
    arena_span error_text;           // exception: encoded (type name, message)
};

enum : std::uint32_t { worker_starting = 0, worker_ready = 1, worker_init_failed = 2 };

/// A worker's doorbell: how an idle worker waits to be handed work, and what its waker must do.
enum : std::uint32_t {
    doorbell_awake = 0,     // running, or rung: nobody needs to wake it
    doorbell_parked = 1,    // on the idle stack, spinning or about to sleep: ringing it is a store
    doorbell_sleeping = 2,  // asleep in FUTEX_WAIT on the doorbell: ringing it calls FUTEX_WAKE
};

struct alignas(64) worker_slot {
    std::atomic<std::uint64_t> job{0};    // 1 + the job whose chunks it holds, 0 when idle
    std::atomic<std::uint64_t> chunk{0};  // the chunk it is on
    std::atomic<std::uint64_t> chunk_end{0};  // its batch's end: the chunks after `chunk` are held
    std::atomic<std::uint64_t> item{0};   // the item it is on, for crash reports
    std::atomic<std::int64_t> item_started{0};  // CLOCK_MONOTONIC ns, kept when tasks have a time limit
    std::atomic<std::int32_t> pid{0};
    std::atomic<std::uint32_t> state{worker_starting};
    // 1 from just before the worker tries to claim chunks until the chunks it claimed are named
    // in `job` and marked running or held (or it found none): a worker that dies with it set may
    // hold chunks that nothing names (see pool_core::resolve_claim_windows).
    std::atomic<std::uint32_t> claiming{0};
    // Written by the parent as well as the worker: a line of its own, away from what the parent
    // polls above. One futex word per worker, so that a post wakes exactly the worker it picks.
    alignas(64) futex_word doorbell{doorbell_awake};
    std::atomic<std::uint32_t> listed{0};  // 1 from just before it pushes itself on the idle stack
                                           // until the parent pops it (see push_idle)
    std::atomic<std::uint32_t> below{0};   // the idle stack's link: 1 + the worker under it, or 0
    std::atomic<std::uint32_t> spinning{0};  // 1 while it holds a place in pool_control::spinning
    arena_span init_error;                   // encoded (type, message) when state == worker_init_failed
};

struct alignas(64) pool_control {
    // The hot words, each on a cache line of its own: `posted` and `head` are read by every
    // worker looking for work, `idle_top` and `spinning` change whenever a worker goes idle, and
    // `parent_sleeping` whenever the parent sleeps; sharing a line would bounce it between
    // all of them on every round trip.
    alignas(64) std::atomic<std::uint64_t> posted{0};  // jobs published so far: the post queue's tail
    alignas(64) std::atomic<std::uint64_t> head{0};    // no job queued before this position has chunks to claim
    // The idle stack: parked workers, the most recently parked on top, [tag:32][1 + worker:32].
    // Workers push themselves; only the parent pops, so a pop never races another pop (no ABA
    // on the link it reads); the tag changes on every push and pop all the same.
    alignas(64) std::atomic<std::uint64_t> idle_top{0};
    alignas(64) std::atomic<std::uint32_t> spinning{0};  // parked workers spinning on their doorbell
    alignas(64) std::atomic<std::uint32_t> parent_sleeping{0};
    // Whether a sleeping parent wants a wake-up for every finished chunk (imap), or only when a
    // job completes or fails (map, futures): a map of 100,000 one-item chunks must not cost
    // 100,000 wake-ups.
    std::atomic<std::uint32_t> parent_wants_chunks{0};
    // Read-mostly from here on.
    alignas(64) std::atomic<std::uint32_t> shutdown{0};
    std::int32_t wake_fd = -1;             // eventfd: a worker writes 1 to wake a sleeping parent
    std::uint32_t worker_count = 0;
    std::uint32_t spin_limit = 1;          // at most this many workers spin at once (half the cores)
    std::int64_t spin_ns = 0;              // how long an idle worker spins before it parks
    std::uint64_t max_tasks_per_child = 0; // 0: never recycle
    job_slot jobs[max_jobs];
    // Job ids in the order they were published; position p at p % max_jobs. The parent writes
    // position p only once head > p - max_jobs, so an entry is never overwritten while needed.
    std::atomic<std::uint64_t> post_queue[max_jobs];

    [[nodiscard]] worker_slot* workers() noexcept { return reinterpret_cast<worker_slot*>(this + 1); }
    [[nodiscard]] static std::size_t bytes_for(unsigned workers) noexcept {
        return sizeof(pool_control) + workers * sizeof(worker_slot);
    }
};

/// Moments at which a test may kill a worker (tests only: the hook is null otherwise).
/// chunk_claimed: chunks are claimed, and nothing names them yet. batch_chunk: a worker is about
/// to start the next chunk of its batch (the ones after it still held).
enum class pool_point { chunk_claimed, batch_chunk };
using pool_fault_fn = void (*)(pool_point);
inline constinit pool_fault_fn pool_fault_hook = nullptr;

inline void pool_fault(pool_point point) {
    if (auto* hook = pool_fault_hook) [[unlikely]]
        hook(point);
}

/// Chunks a worker has claimed: `count` of them from `chunk` on; `left`: how many the job still
/// had for others after the claim.
struct claimed_chunk {
    std::uint64_t job;
    std::uint64_t chunk;
    std::uint64_t count = 1;
    std::uint64_t left = 0;
};

/// Batches. A worker whose chunks of a job end in less than batch_chunk_ns each claims the next
/// ones in batches, doubling up to batch_max_chunks (one claim, one count and one log entry
/// reservation for the batch instead of one of each per chunk: these shared words, not the work,
/// are what a map of tiny chunks costs). A batch takes at most 1/(2 x workers) of the chunks left,
/// so the job's end still spreads one chunk at a time, and jobs with a time limit are never
/// batched (the limit is per task, watched by the parent).
inline constexpr std::uint64_t batch_max_chunks = 64;
inline constexpr std::int64_t batch_chunk_ns = 4'000;

/// What a worker asks of its next claim: batches of `size` chunks for job `job`, one chunk of
/// any other.
struct batch_wish {
    std::uint64_t job = ~std::uint64_t{0};
    std::uint64_t size = 1;
};

/// Claims the next chunk of the oldest job that has one (of `wish.job`: the next `wish.size`
/// chunks at most, see batch_max_chunks), in one compare-and-swap. Never blocks.
[[nodiscard]] inline std::optional<claimed_chunk> claim_chunk(pool_control& ctl, batch_wish wish = {}) noexcept {
    std::uint64_t at = ctl.head.load(std::memory_order_acquire);
    const std::uint64_t posted = ctl.posted.load(std::memory_order_acquire);
    for (; at < posted; ++at) {
        const std::uint64_t id = ctl.post_queue[at % max_jobs].load(std::memory_order_acquire);
        job_slot& job = ctl.jobs[id % max_jobs];
        std::uint64_t w = job.claim.load(std::memory_order_acquire);
        for (;;) {
            if (claim_word::exhausted(w, id)) {
                std::uint64_t expected = at;  // let later scans start after it
                ctl.head.compare_exchange_strong(expected, at + 1, std::memory_order_acq_rel);
                break;
            }
            const std::uint64_t left = claim_word::count(w) - claim_word::next(w);
            std::uint64_t k = 1;
            if (wish.job == id && wish.size > 1)
                k = std::min({wish.size, left, std::max<std::uint64_t>(1, left / (2 * ctl.worker_count))});
            if (job.claim.compare_exchange_weak(w, w + k * claim_word::next_one, std::memory_order_acq_rel))
                return claimed_chunk{id, claim_word::next(w), k, left - k};
        }
    }
    return std::nullopt;
}

/// Moves the post queue's head past the jobs at its front that have nothing left to claim, and
/// returns it (the parent's check for room in the queue).
inline std::uint64_t skip_exhausted(pool_control& ctl) noexcept {
    std::uint64_t at = ctl.head.load(std::memory_order_acquire);
    const std::uint64_t posted = ctl.posted.load(std::memory_order_acquire);
    while (at < posted) {
        const std::uint64_t id = ctl.post_queue[at % max_jobs].load(std::memory_order_acquire);
        if (!claim_word::exhausted(ctl.jobs[id % max_jobs].claim.load(std::memory_order_acquire), id)) break;
        if (ctl.head.compare_exchange_strong(at, at + 1, std::memory_order_acq_rel)) ++at;
    }
    return at;
}

/// Whether some posted job has a chunk left to claim (claims nothing).
[[nodiscard]] inline bool work_available(pool_control& ctl) noexcept {
    return skip_exhausted(ctl) < ctl.posted.load(std::memory_order_acquire);
}

// The idle stack. A worker that parks sets `listed` and pushes itself, unless `listed` says it is
// still on the stack (the parent pops only as many workers as a post needs, so an entry can
// outlive the park that pushed it: such a stale entry is popped later, found awake, and
// dropped). Setting `listed` before the push and clearing it only after the pop means a worker
// is never on the stack twice. A worker that dies leaves `listed` as it was; the parent walks
// the stack before it starts a replacement in that slot (resync_listed).

/// Puts `worker` on top of the idle stack. Called by the worker itself, with `listed` set.
inline void push_idle(pool_control& ctl, unsigned worker) noexcept {
    worker_slot& me = ctl.workers()[worker];
    std::uint64_t top = ctl.idle_top.load(std::memory_order_relaxed);
    for (;;) {
        me.below.store(static_cast<std::uint32_t>(top), std::memory_order_relaxed);
        const std::uint64_t next = (((top >> 32) + 1) << 32) | (worker + 1);
        if (ctl.idle_top.compare_exchange_weak(top, next, std::memory_order_seq_cst, std::memory_order_relaxed)) return;
    }
}

/// Takes the top worker off the idle stack. The parent's alone.
[[nodiscard]] inline std::optional<unsigned> pop_idle(pool_control& ctl) noexcept {
    std::uint64_t top = ctl.idle_top.load(std::memory_order_seq_cst);
    for (;;) {
        const auto entry = static_cast<std::uint32_t>(top);
        if (entry == 0) return std::nullopt;
        worker_slot& w = ctl.workers()[entry - 1];
        const std::uint64_t next = (((top >> 32) + 1) << 32) | w.below.load(std::memory_order_relaxed);
        if (ctl.idle_top.compare_exchange_weak(top, next, std::memory_order_seq_cst, std::memory_order_seq_cst)) {
            w.listed.store(0, std::memory_order_seq_cst);
            return entry - 1;
        }
    }
}

/// Whether `worker` is on the idle stack. The parent's alone (no pop can run meanwhile; pushes
/// only add above what it walks).
[[nodiscard]] inline bool on_idle_stack(pool_control& ctl, unsigned worker) noexcept {
    auto entry = static_cast<std::uint32_t>(ctl.idle_top.load(std::memory_order_acquire));
    for (std::uint32_t steps = 0; entry != 0 && steps <= ctl.worker_count; ++steps) {
        if (entry == worker + 1) return true;
        entry = ctl.workers()[entry - 1].below.load(std::memory_order_relaxed);
    }
    return false;
}

/// Hands work to a parked worker; false when it was not parked (it found work by itself, its
/// entry was stale, or it is gone). FUTEX_WAKE only when it said it sleeps.
inline bool ring(worker_slot& w) noexcept {
    std::uint32_t state = w.doorbell.load(std::memory_order_seq_cst);
    while (state != doorbell_awake) {
        if (w.doorbell.compare_exchange_weak(state, doorbell_awake, std::memory_order_seq_cst)) {
            if (state == doorbell_sleeping) futex_wake(w.doorbell, 1);
            return true;
        }
    }
    return false;
}

/// Wakes up to `count` parked workers, the most recently parked (the warmest) first; returns
/// how many. The parent's alone.
inline unsigned wake_idle_workers(pool_control& ctl, unsigned count) noexcept {
    unsigned woken = 0;
    while (woken < count) {
        const auto worker = pop_idle(ctl);
        if (!worker) break;
        woken += ring(ctl.workers()[*worker]) ? 1 : 0;
    }
    return woken;
}

/// Items [first, end) of a job.
struct item_range {
    std::uint64_t first = 0;
    std::uint64_t end = 0;
};

/// The items of one chunk of a job: fixed-size chunks, or the job's table of bounds.
[[nodiscard]] inline item_range chunk_items(const shared_arena& arena, const job_slot& job, std::uint64_t chunk) noexcept {
    if (job.chunk_size != 0) {
        const std::uint64_t first = chunk * job.chunk_size;
        return {first, std::min(job.items, first + job.chunk_size)};
    }
    const std::uint64_t* bounds = arena.at<const std::uint64_t>(job.bounds);
    return {bounds[chunk], bounds[chunk + 1]};
}

/// Chunk bounds when no chunk size is asked: guided self-scheduling. Each chunk is a quarter of
/// the items left per worker, down to 1/256 of a worker's share: the big first chunks keep the
/// per-chunk cost negligible, and the small last ones leave no core idle while another finishes
/// a big one (with fixed chunks, the last chunk of a map whose late items cost more decides when
/// it ends). About 20 chunks per worker.
[[nodiscard]] inline std::vector<std::uint64_t> guided_bounds(std::uint64_t items, unsigned workers) {
    const std::uint64_t w = std::max(workers, 1u);
    const std::uint64_t smallest = std::max<std::uint64_t>(1, items / (256 * w));
    std::vector<std::uint64_t> bounds{0};
    for (std::uint64_t at = 0; at < items;) {
        at = std::min(items, at + std::max(smallest, (items - at) / (4 * w)));
        bounds.push_back(at);
    }
    return bounds;
}

[[nodiscard]] inline std::atomic<std::uint32_t>& chunk_state_of(shared_arena& arena, const job_slot& job,
                                                                std::uint64_t chunk) noexcept {
    return arena.at<std::atomic<std::uint32_t>>(job.states)[chunk];
}

/// CLOCK_MONOTONIC in nanoseconds: one clock for every process of the machine.
[[nodiscard]] inline std::int64_t monotonic_ns() noexcept {
    return std::chrono::duration_cast<std::chrono::nanoseconds>(
               std::chrono::steady_clock::now().time_since_epoch())
        .count();
}

/// Wakes the parent if it sleeps (or is about to): the worker's half of the parent's wait.
inline void wake_parent(pool_control& ctl) noexcept {
    if (ctl.parent_sleeping.load(std::memory_order_seq_cst) != 0) {
        const std::uint64_t one = 1;
        [[maybe_unused]] ssize_t r = ::write(ctl.wake_fd, &one, sizeof one);
    }
}

}  // namespace detail
MPROC_NAMESPACE_END

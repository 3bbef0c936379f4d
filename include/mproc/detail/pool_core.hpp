// The parent side of the Pool: owns the arena, the workers and the job ring; posts jobs (waking
// the most recently idle worker), waits for them (sleeping on one epoll set, built as the workers
// start, that holds the wake-up eventfd and every worker's pidfd, so a dead worker wakes the
// parent as surely as a finished chunk does), reports and replaces dead workers.
#pragma once

#include <mproc/detail/child.hpp>
#include <mproc/detail/interrupt.hpp>
#include <mproc/detail/pool_options.hpp>
#include <mproc/detail/pool_worker.hpp>
#include <mproc/error.hpp>

#include <sys/epoll.h>
#include <sys/eventfd.h>

#include <algorithm>
#include <array>
#include <exception>
#include <memory>
#include <vector>

MPROC_NAMESPACE_BEGIN
namespace detail {

/// The parent's view of one job slot.
struct job_record {
    bool live = false;      // posted and not yet retired
    bool recount = false;   // a worker died after finishing a chunk: count chunk states instead
    std::uint32_t lost = 0; // chunks whose worker died running them
    std::uint64_t chunks = 0;
    std::uint64_t id = 0;
    std::uint64_t mark = 0;  // the arena's ring position when the job began: all of its memory is above
    std::uint64_t index_base = 0;  // index of the job's first item in the caller's input (imap batches)
    bool timed = false;     // its tasks have a time limit (counted in pool_core::timed_jobs_)
    std::function<void()> on_settled;  // harvests a submitted call's outcome into its Future
    // Its owner let go of it (retire() before it settled): retire_settled frees it once settled.
    // A job that is only cancelled (failed) still has a reader: an ordered imap reads the failed
    // job's results before its failed item, so its slot and memory must stay until then.
    bool released = false;
};

class pool_core {
public:
    /// Makes the arena and the control block; forks the workers now unless `start` is false
    /// (fork_map lays out its job first, so that the workers it forks see it).
    pool_core(const PoolOptions& options, bool start = true);
    pool_core(const pool_core&) = delete;
    pool_core& operator=(const pool_core&) = delete;
    ~pool_core() {
        terminate();
        keep_arena();
    }

    /// A forked child (a Process, or a task that calls exit() and so runs static destructors)
    /// holds a copy of its parent's Pool: the copy must neither run work nor stop the parent's
    /// workers. @throws StateError outside the process that created the pool.
    [[nodiscard]] bool owned() const noexcept { return current_pid() == owner_; }
    void check_owner() const {
        if (!owned())
            throw StateError("mproc::Pool: used in a forked child of the process that made it; a Pool "
                             "works only in that process (make a new Pool in the child)");
    }

    [[nodiscard]] unsigned size() const noexcept { return static_cast<unsigned>(workers_.size()); }
    [[nodiscard]] shared_arena& arena() noexcept { return arena_; }
    [[nodiscard]] pool_control& ctl() noexcept { return *ctl_; }
    /// A job by its id (generation x max_jobs + slot, see pool_shared.hpp).
    [[nodiscard]] job_slot& job(std::uint64_t id) noexcept { return ctl_->jobs[id % max_jobs]; }
    [[nodiscard]] job_record& record(std::uint64_t id) noexcept { return records_[id % max_jobs]; }
    [[nodiscard]] bool running() const noexcept { return !terminated_; }
    [[nodiscard]] const PoolOptions& options() const noexcept { return options_; }
    /// Why the pool stopped working (an initializer that failed in a replacement worker), or null.
    [[nodiscard]] std::exception_ptr broken() const noexcept { return broken_; }
    /// The constructor's work once the arena is there.
    void set_up(bool start);
    /// Forks every worker (and, with an initializer, waits until each has run it).
    /// @throws RemoteError when an initializer threw; ProcessCrashed when a worker died in it.
    void start_workers();
    [[nodiscard]] std::vector<pid_t> pids() const;

    /// Reserves a job slot (waiting for a job to settle if all are taken) and fills in its plan:
    /// chunks of `chunk_size` items, or guided ones (guided_bounds) when it is 0. The caller lays
    /// out input and output, then calls publish().
    std::uint64_t begin_job(function_id runner, function_id fn, std::uint64_t items, std::uint64_t chunk_size);
    /// Makes the job claimable and wakes workers (all of them, or one for a single chunk).
    void publish(std::uint64_t id);

    /// Chunks of the job known done.
    [[nodiscard]] std::uint64_t done_chunks(std::uint64_t id);
    [[nodiscard]] bool complete(std::uint64_t id) { return done_chunks(id) == record(id).chunks; }
    [[nodiscard]] bool failed(std::uint64_t id) noexcept {
        return job(id).failed.load(std::memory_order_acquire) == job_error_ready;
    }
    /// No worker will touch the job again: every claimed chunk is done or lost.
    [[nodiscard]] bool settled(std::uint64_t id);
    /// The job's error as an exception (RemoteError or ProcessCrashed, with the item index).
    [[nodiscard]] std::exception_ptr error(std::uint64_t id);
    /// Stops further claims of the job's chunks (an abandoned imap, a failed map).
    void cancel(std::uint64_t id) noexcept {
        job(id).claim.fetch_or(claim_word::cancelled_bit, std::memory_order_acq_rel);
    }
    /// Frees the slot once settled (now, or later from retire_settled()).
    void retire(std::uint64_t id);
    /// Gives up a job whose caller stopped waiting (interrupted): no chunk of it starts any more,
    /// running ones get `grace`, and the workers still running it then are killed and replaced.
    void abandon(std::uint64_t id, std::chrono::milliseconds grace = std::chrono::milliseconds(100)) noexcept;

    /// Waits until `done()` holds or the deadline passes; handles worker deaths meanwhile.
    /// Workers wake a sleeping parent when a job completes or fails, and after every chunk only
    /// when `every_chunk` (an imap waiting for its next chunk).
    template <class Done>
    bool wait(Done&& done, const Deadline& deadline = Deadline::never(), bool every_chunk = false);

    /// Reaps and replaces workers that died while nobody waited; settles what they held.
    /// @throws SystemError when no worker is left to run posted work and none can be forked.
    void check_workers();
    void check_workers_quietly() noexcept;

    void close() noexcept { closed_ = true; }
    [[nodiscard]] bool closed() const noexcept { return closed_; }
    /// Waits for every posted job, then lets the workers exit and reaps them.
    void join();
    /// Kills every worker now and reaps them. Idempotent; never throws.
    void terminate() noexcept;

private:
    /// Starts worker `index` by the pool's start method, watched by its pidfd: every worker
    /// process is started here, or (a new forkserver pool's first workers) in
    /// start_workers_by_forkserver, which asks the server for all of them in one stream.
    void start_worker(unsigned index);
    void start_workers_by_forkserver();
    void reset_slot(unsigned index);  // the worker's shared slot as a new worker finds it
    /// Adds / removes worker `index`'s pidfd to / from the epoll set.
    void watch(unsigned index) noexcept;
    void unwatch(unsigned index) noexcept;
    /// Every live worker's exit wakes epoll_ (otherwise deaths are found by waitpid polling).
    [[nodiscard]] bool watching() const noexcept { return epoll_ && !polling_; }
    /// Waits up to `timeout_ms` on the epoll set; handles what fired (reaps the workers whose
    /// pidfd did). `on_eintr` runs when a signal interrupts the wait.
    template <class OnEintr>
    void watch_once(int timeout_ms, OnEintr&& on_eintr);
    /// Reaps worker `index` if it exited, and reports what it held.
    void reap_worker(unsigned index);
    void on_worker_exit(unsigned index);
    /// Forks a replacement for every worker that is gone; a fork that fails is kept in
    /// spawn_failure_ and tried again at the next check.
    void replace_workers() noexcept;
    [[nodiscard]] unsigned live_workers() const noexcept;
    [[nodiscard]] bool work_pending();
    void fail_job(std::uint64_t id, job_error_kind kind, pid_t pid, int status, std::uint64_t item) noexcept;
    [[nodiscard]] std::exception_ptr init_error(unsigned index);
    void retire_settled();
    /// A job slot not in use, waiting for one if all are.
    std::uint64_t free_slot();
    /// Lets the arena reuse what no live job can use any more.
    void release_arena() noexcept;
    /// Once no worker can touch the arena again, leaves it to the next pool of this process.
    void keep_arena() noexcept;
    void sleep_once(const Deadline& deadline, std::uint64_t interrupts_seen);
    /// Throws Interrupted when SIGINT arrived in an InterruptScope since the wait began.
    static void check_interrupts(std::uint64_t seen) {
        if (interrupts().received.load(std::memory_order_seq_cst) != seen) throw Interrupted();
    }
    /// Kills workers whose task ran past its time limit; returns the next deadline to check.
    Deadline enforce_task_timeouts();
    /// After a worker died inside a claim (its `claiming` set): once no live worker is inside
    /// one, every claimed chunk still pending was claimed by a dead worker before it named it,
    /// and is reported lost. Until then the parent looks again every millisecond.
    void resolve_claim_windows() noexcept;

    pid_t owner_ = current_pid();
    PoolOptions options_;
    shared_arena arena_;
    pool_control* ctl_ = nullptr;
    unique_fd wake_fd_;
    unique_fd epoll_;               // wake_fd_, the interrupt eventfd, every worker's pidfd
    int watched_interrupt_fd_ = -1; // the interrupt eventfd once it is in epoll_
    std::vector<char> watched_;     // per worker: its pidfd is in epoll_
    bool polling_ = false;          // a worker has no pidfd (old kernel, no descriptor left): poll waitpid
    bool replace_ = false;          // a worker was reaped: fork a replacement at the next check
    bool claim_check_ = false;      // a worker died inside a claim: see resolve_claim_windows
    pid_t claim_dead_pid_ = 0;      // that worker, for the report of a chunk it lost
    int claim_dead_status_ = 0;
    std::uint64_t timed_jobs_ = 0;  // live jobs whose tasks have a time limit
    std::int64_t last_watch_ns_ = 0;  // when the epoll set was last looked at
    std::vector<child_handle> workers_;
    std::array<job_record, max_jobs> records_{};
    std::vector<std::optional<std::uint64_t>> timed_out_;  // per worker: the item it was killed for
    std::exception_ptr broken_;
    std::exception_ptr spawn_failure_;  // why the last replacement could not be forked
    std::uint64_t live_jobs_ = 0;
    std::uint64_t next_generation_ = 0;  // job ids: generation x max_jobs + slot
    std::uint64_t slot_hint_ = 0;        // where the search for a free slot starts
    bool closed_ = false;
    bool terminated_ = false;
};

inline pool_core::pool_core(const PoolOptions& options, bool start)
    : options_(options), arena_(shared_arena::reused(pool_control::bytes_for(options.processes == 0 ? 1 : options.processes))) {
    try {
        set_up(start);
    } catch (...) {
        keep_arena();  // the workers already forked are reaped: it is nobody's
        throw;
    }
}

inline void pool_core::set_up(bool start) {
    const unsigned workers = options_.processes;
    if (workers == 0) throw Error("mproc::Pool: the number of processes must be at least 1");
    arena_.prefault(0, arena_.header().floor, prefault_use::write);  // the control block, in one call
    ctl_ = new (arena_.fixed()) pool_control{};
    for (unsigned i = 0; i < workers; ++i) new (ctl_->workers() + i) worker_slot{};
    ctl_->worker_count = workers;
    ctl_->max_tasks_per_child = options_.max_tasks_per_child;
    // A worker that just finished spins this long for the next post before it parks: longer than
    // a parent's turnaround between two submits, short enough that an idle pool soon uses no
    // CPU. Half the cores at most spin at once, so spinners never crowd out working processes.
    ctl_->spin_ns = 50'000;
    ctl_->spin_limit = std::max(1u, usable_cpu_count() / 2);
    wake_fd_ = unique_fd(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
    if (!wake_fd_) throw_errno("eventfd");
    ctl_->wake_fd = wake_fd_.get();
    // Without a descriptor for the epoll set the pool still works: it polls (see watching()).
    epoll_ = unique_fd(::epoll_create1(EPOLL_CLOEXEC));
    if (epoll_) {
        epoll_event event{};
        event.events = EPOLLIN;
        event.data.u64 = 0;
        if (::epoll_ctl(epoll_.get(), EPOLL_CTL_ADD, wake_fd_.get(), &event) != 0) epoll_.reset();
    }
    workers_.resize(workers);
    watched_.resize(workers, 0);
    timed_out_.resize(workers);
    if (start) start_workers();
}

inline std::uint64_t pool_core::begin_job(function_id runner, function_id fn, std::uint64_t items,
                                          std::uint64_t chunk_size) {
    check_owner();
    if (broken_) std::rethrow_exception(broken_);
    if (terminated_) throw StateError("mproc::Pool: the pool was terminated");
    if (closed_) throw StateError("mproc::Pool: the pool is closed");
    // Deaths while nobody waited: one epoll_wait that returns at once, whatever the worker
    // count, and at most once a millisecond (a death found later is found by the wait, which
    // sleeps on the same set: the dead worker's task is still reported and run elsewhere).
    if (!watching() || spawn_failure_ || monotonic_ns() - last_watch_ns_ >= 1'000'000) check_workers();
    if (spawn_failure_ && live_workers() == 0) std::rethrow_exception(spawn_failure_);
    if (live_jobs_ != 0) retire_settled();
    const std::uint64_t id = next_generation_++ * max_jobs + free_slot();
    const std::uint64_t mark = arena_.mark();  // before any of the job's memory
    std::vector<std::uint64_t> bounds;
    if (chunk_size == 0) bounds = guided_bounds(items, size());
    // The claim word holds at most max_chunks chunks: raise the size if a job would need more.
    else chunk_size = std::max(chunk_size, (items + max_chunks - 1) / max_chunks);
    const std::uint64_t chunks = chunk_size != 0 ? (items + chunk_size - 1) / chunk_size : bounds.size() - 1;
    job_slot& j = job(id);
    j.claim.store(claim_word::make(id, 0) | claim_word::cancelled_bit, std::memory_order_release);
    j.chunks_done.store(0, std::memory_order_relaxed);
    j.failed.store(job_ok, std::memory_order_relaxed);
    j.runner = runner;
    j.fn = fn;
    j.timeout_ns = options_.task_timeout.count();
    j.unbatched = 0;
    j.context = 0;
    j.items = items;
    j.chunk_size = chunk_size;
    j.states = allocate_to_write(arena_, 2 * chunks * sizeof(std::uint32_t));
    j.log = j.states + chunks * sizeof(std::uint32_t);
    j.log_tail.store(0, std::memory_order_relaxed);
    std::memset(arena_.base() + j.states, 0, 2 * chunks * sizeof(std::uint32_t));
    j.bounds = 0;
    if (!bounds.empty()) {
        j.bounds = arena_.allocate(bounds.size() * sizeof(std::uint64_t));
        std::memcpy(arena_.base() + j.bounds, bounds.data(), bounds.size() * sizeof(std::uint64_t));
    }
    job_record& r = record(id);
    r = job_record{};
    r.live = true;
    r.chunks = chunks;
    r.id = id;
    r.mark = mark;
    ++live_jobs_;
    return id;
}

inline std::uint64_t pool_core::free_slot() {
    auto find = [&]() -> std::optional<std::uint64_t> {
        for (std::uint64_t k = 0; k < max_jobs; ++k) {
            const std::uint64_t slot = (slot_hint_ + k) % max_jobs;
            if (!records_[slot].live) {
                slot_hint_ = slot + 1;
                return slot;
            }
        }
        return std::nullopt;
    };
    if (auto slot = find()) return *slot;
    // Every slot holds a job: wait until one settles (its Future harvests it), unless all have
    // and are held by results nobody has read yet.
    (void)wait([&] {
        retire_settled();
        bool running = false;
        for (const auto& r : records_) {
            if (!r.live) return true;
            running = running || !settled(r.id);
        }
        return !running;
    });
    if (auto slot = find()) return *slot;
    throw StateError("mproc::Pool: " + std::to_string(max_jobs) +
                     " maps are finished but unread (imap ranges kept alive?); read or drop some first");
}

inline void pool_core::publish(std::uint64_t id) {
    job(id).claim.store(claim_word::make(id, record(id).chunks), std::memory_order_release);
    const std::uint64_t at = ctl_->posted.load(std::memory_order_relaxed);
    // The post queue holds max_jobs entries from its head: a job at the head that still has
    // chunks to claim keeps later entries from being reused until workers take them.
    while (at - skip_exhausted(*ctl_) >= max_jobs)
        (void)wait([&] { return at - skip_exhausted(*ctl_) < max_jobs; }, Deadline::after(std::chrono::milliseconds(1)));
    ctl_->post_queue[at % max_jobs].store(id, std::memory_order_release);
    ctl_->posted.store(at + 1, std::memory_order_seq_cst);
    job_record& r = record(id);
    if (job(id).timeout_ns != 0 && !r.timed) {
        r.timed = true;
        ++timed_jobs_;
    }
    // Against a worker's wait_for_ring(): it lists itself, then looks for work; we post (the
    // seq_cst store above), then look for listed workers (pop_idle's seq_cst load): one of the
    // two looks sees the other's change.
    // Parked workers that just finished spin on their doorbell: ringing them is a store.
    (void)wake_idle_workers(*ctl_, static_cast<unsigned>(std::min<std::uint64_t>(r.chunks, workers_.size())));
}

inline std::uint64_t pool_core::done_chunks(std::uint64_t id) {
    job_record& r = record(id);
    if (!r.recount) return job(id).chunks_done.load(std::memory_order_acquire);
    std::uint64_t done = 0;
    for (std::uint64_t c = 0; c < r.chunks; ++c)
        done += chunk_state_of(arena_, job(id), c).load(std::memory_order_acquire) == chunk_done;
    return done;
}

inline bool pool_core::settled(std::uint64_t id) {
    const std::uint64_t claimed = claim_word::next(job(id).claim.load(std::memory_order_acquire));
    return done_chunks(id) + record(id).lost >= claimed &&
           (claim_word::cancelled(job(id).claim.load()) || claimed == record(id).chunks);
}

inline std::exception_ptr pool_core::error(std::uint64_t id) {
    const job_slot& j = job(id);
    const std::uint64_t item = j.error_item + record(id).index_base;  // in the caller's input
    if (j.error_kind == job_error_kind::crash)
        return std::make_exception_ptr(ProcessCrashed(j.error_pid, j.error_status, item));
    if (j.error_kind == job_error_kind::timeout) {
        const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::nanoseconds(j.timeout_ns));
        return std::make_exception_ptr(TimeoutError(
            "task " + std::to_string(item) + " ran past its time limit of " +
                std::to_string(ms.count()) + " ms; its worker was killed",
            item));
    }
    std::string type = "unknown exception", message;
    try {
        Decoder decoder(arena_bytes(arena_, j.error_text));
        if (j.error_text.length != 0) decoder(type, message);
    } catch (const DecodeError&) {
    }
    return std::make_exception_ptr(RemoteError(std::move(type), std::move(message), item));
}

inline void pool_core::retire(std::uint64_t id) {
    job_record& r = record(id);
    if (!r.live || r.id != id || !owned()) return;
    if (!settled(id)) {
        cancel(id);  // finish later (retire_settled), once its running chunks end
        r.released = true;
        return;
    }
    if (r.on_settled) std::exchange(r.on_settled, nullptr)();
    r.live = false;
    --live_jobs_;
    if (r.timed) {
        r.timed = false;
        --timed_jobs_;
    }
    release_arena();
}

inline void pool_core::release_arena() noexcept {
    if (live_jobs_ == 0) {
        arena_.reset();
        return;
    }
    // Jobs retire in any order; memory below the oldest live job's mark is nobody's.
    std::uint64_t oldest = UINT64_MAX;
    for (const auto& r : records_)
        if (r.live) oldest = std::min(oldest, r.mark);
    arena_.release_below(oldest);
}

inline void pool_core::keep_arena() noexcept {
    if (!owned() || !std::ranges::all_of(workers_, [](const child_handle& w) { return !w.started() || w.reaped(); }))
        return;
    shared_arena::keep_for_reuse(std::move(arena_));
    ctl_ = nullptr;
}

inline void pool_core::abandon(std::uint64_t id, std::chrono::milliseconds grace) noexcept {
    if (terminated_ || !record(id).live || record(id).id != id || !owned()) return;
    cancel(id);
    // Not wait(): it would throw again for the same interrupt. Chunks that end soon are let end;
    // a worker still on the job after the grace period is in a long task, and is killed.
    const Deadline until = Deadline::after(grace);
    while (!settled(id) && !until.expired()) {
        check_workers_quietly();
        ::usleep(1000);
    }
    try {
        for (unsigned i = 0; i < workers_.size(); ++i)
            if (!settled(id) && ctl_->workers()[i].job.load(std::memory_order_acquire) == id + 1)
                workers_[i].signal(SIGKILL);
        retire(id);  // now, or once the killed workers are reaped
    } catch (...) {
        // Cancelled at least; the next wait reaps and retires what is left.
    }
}

inline void pool_core::retire_settled() {
    for (auto& r : records_)
        if (r.live && settled(r.id) && (r.on_settled || r.released))
            retire(r.id);  // a Future's outcome is harvested now; jobs let go of are freed
}

}  // namespace detail
MPROC_NAMESPACE_END

#include <mproc/detail/pool_watch.hpp>  // the parent's watch over its workers (member definitions)

// The parent's watch over its workers, pool_core's members that fork, reap and replace them:
// starting them, failing the jobs a dead worker held, task time limits, and the wait that
// sleeps on one epoll set holding every worker's pidfd and the wake-up eventfd. Its cost per
// wait does not grow with the worker count: a worker is looked at only when its pidfd fires.
// Without pidfds (Linux < 5.3, or no descriptor left) the wait polls waitpid every 10 ms.
#pragma once

#include <mproc/detail/pool_core.hpp>
#include <mproc/detail/pool_exec.hpp>

#include <poll.h>
#include <sys/epoll.h>

#include <algorithm>
#include <array>
#include <climits>
#include <exception>
#include <string>
#include <vector>

MPROC_NAMESPACE_BEGIN
namespace detail {

inline void pool_core::start_workers() {
    try {
        if (options_.start_method == StartMethod::forkserver) start_workers_by_forkserver();
        else
            for (unsigned i = 0; i < workers_.size(); ++i) start_worker(i);
        if (!options_.initializer) return;
        // A worker whose initializer fails (or that dies in it) breaks the pool: on_worker_exit
        // records why, and terminates the rest.
        (void)wait([&] {
            if (broken_) return true;
            for (unsigned i = 0; i < workers_.size(); ++i)
                if (ctl_->workers()[i].state.load(std::memory_order_acquire) == worker_starting) return false;
            return true;
        });
        for (unsigned i = 0; i < workers_.size() && !broken_; ++i)
            if (ctl_->workers()[i].state.load(std::memory_order_acquire) == worker_init_failed)
                broken_ = init_error(i);
        if (broken_) std::rethrow_exception(broken_);
    } catch (...) {
        terminate();
        throw;
    }
}

inline std::exception_ptr pool_core::init_error(unsigned index) {
    worker_slot& slot = ctl_->workers()[index];
    if (slot.state.load(std::memory_order_acquire) != worker_init_failed) {
        workers_[index].wait(Deadline::never());
        return std::make_exception_ptr(ProcessCrashed(workers_[index].pid(), workers_[index].exitcode().value_or(ProcessCrashed::lost_status)));
    }
    std::string type = "unknown exception", message;
    try {
        Decoder decoder(arena_bytes(arena_, slot.init_error));
        if (slot.init_error.length != 0) decoder(type, message);
    } catch (const DecodeError&) {
    }
    return std::make_exception_ptr(RemoteError(std::move(type), "in the pool's initializer: " + message));
}

inline std::vector<pid_t> pool_core::pids() const {
    std::vector<pid_t> out;
    for (const auto& w : workers_) out.push_back(w.pid());
    return out;
}

inline void pool_core::start_workers_by_forkserver() {
    // Every worker's channel is filled first and the server gets the requests in a stream: the
    // workers start at the pace of its fork() alone.
    std::vector<unique_fd> channels;
    std::vector<int> numbers;
    for (unsigned i = 0; i < workers_.size(); ++i) {
        reset_slot(i);
        channels.push_back(exec_worker_channel(arena_, wake_fd_.get(), i, options_.initializer));
        numbers.push_back(channels.back().get());
    }
    auto started = forkserver_connection().start_many(numbers);
    channels.clear();
    int error = 0;
    for (unsigned i = 0; i < workers_.size(); ++i) {
        if (started[i].error != 0) {
            error = error != 0 ? error : started[i].error;
            continue;
        }
        workers_[i] = std::move(started[i].child);
        watch(i);
    }
    if (error != 0) throw SystemError(error, "fork (in the forkserver)");
}

inline void pool_core::reset_slot(unsigned index) {
    worker_slot& slot = ctl_->workers()[index];
    slot.job.store(0, std::memory_order_relaxed);
    slot.claiming.store(0, std::memory_order_relaxed);
    slot.pid.store(0, std::memory_order_relaxed);
    slot.state.store(worker_starting, std::memory_order_relaxed);
    slot.doorbell.store(doorbell_awake, std::memory_order_relaxed);
    // A worker that died may have left its entry on the idle stack, or set `listed` and died
    // before pushing: make `listed` say the truth, so the new worker neither pushes itself a
    // second time nor stays off the stack for good.
    slot.listed.store(on_idle_stack(*ctl_, index) ? 1 : 0, std::memory_order_seq_cst);
    timed_out_[index].reset();
}

inline void pool_core::start_worker(unsigned index) {
    reset_slot(index);
    const StartMethod method = options_.start_method.value_or(StartMethod::fork);
    if (method != StartMethod::fork)
        workers_[index] = start_worker_by_exec(method, arena_, wake_fd_.get(), index, options_.initializer);
    else
        workers_[index] = child_handle(fork_child([this, index] {
            return worker_main(arena_, *ctl_, index, options_.initializer);
        }, child_sigint::ignore));
    watch(index);  // every method gives a pidfd (a forkserver's child's comes from the server)
}

inline void pool_core::watch(unsigned index) noexcept {
    watched_[index] = 0;
    if (!epoll_ || workers_[index].pidfd() < 0) {
        polling_ = true;  // for the pool's life: rare, and simpler than tracking which worker
        return;
    }
    epoll_event event{};
    event.events = EPOLLIN;
    event.data.u64 = 2 + index;  // 0: wake_fd_, 1: the interrupt eventfd
    if (::epoll_ctl(epoll_.get(), EPOLL_CTL_ADD, workers_[index].pidfd(), &event) == 0) watched_[index] = 1;
    else polling_ = true;
}

inline void pool_core::unwatch(unsigned index) noexcept {
    // Explicitly, before the pidfd is closed: workers forked later hold copies of it, and epoll
    // forgets a descriptor only when its last copy closes.
    if (watched_[index] && workers_[index].pidfd() >= 0)
        (void)::epoll_ctl(epoll_.get(), EPOLL_CTL_DEL, workers_[index].pidfd(), nullptr);
    watched_[index] = 0;
}

inline void pool_core::reap_worker(unsigned index) {
    child_handle& w = workers_[index];
    if (!w.started() || w.reaped()) return;
    unwatch(index);
    if (w.try_reap()) {
        replace_ = true;
        on_worker_exit(index);
    } else {
        watch(index);  // not gone after all (a spurious event): keep watching
    }
}

template <class OnEintr>
void pool_core::watch_once(int timeout_ms, OnEintr&& on_eintr) {
    // The interrupt eventfd exists from the first InterruptScope on, for the process's life.
    if (const int fd = interrupts().wake_fd.load(std::memory_order_relaxed); fd >= 0 && fd != watched_interrupt_fd_) {
        epoll_event event{};
        event.events = EPOLLIN;
        event.data.u64 = 1;
        if (::epoll_ctl(epoll_.get(), EPOLL_CTL_ADD, fd, &event) == 0 || errno == EEXIST) watched_interrupt_fd_ = fd;
    }
    std::array<epoll_event, 16> events{};
    int ready;
    for (;;) {
        ready = ::epoll_wait(epoll_.get(), events.data(), static_cast<int>(events.size()), timeout_ms);
        if (ready >= 0) break;
        if (errno != EINTR) throw_errno("epoll_wait");
        on_eintr();
        timeout_ms = 0;  // look once more, without sleeping, for what the signal interrupted
    }
    for (int k = 0; k < ready; ++k) {
        const std::uint64_t key = events[static_cast<std::size_t>(k)].data.u64;
        if (key == 0) {
            std::uint64_t drained;  // one read empties an eventfd
            [[maybe_unused]] const ssize_t r = ::read(wake_fd_.get(), &drained, sizeof drained);
        } else if (key == 1) {
            drain_interrupt_wake();
        } else {
            reap_worker(static_cast<unsigned>(key - 2));
        }
    }
}

inline void pool_core::check_workers_quietly() noexcept {
    try {
        check_workers();
    } catch (...) {
        // A replacement that cannot be forked now is retried by the next wait.
    }
}

inline void pool_core::fail_job(std::uint64_t id, job_error_kind kind, pid_t pid, int status,
                                std::uint64_t item) noexcept {
    job_slot& j = job(id);
    std::uint32_t state = j.failed.load(std::memory_order_acquire);
    // Take over when nobody recorded an error, or when the dead worker died recording one.
    const bool writer_died = state >= job_error_writing &&
                             ctl_->workers()[state - job_error_writing].pid.load() == pid;
    if (state == job_ok || writer_died) {
        if (j.failed.compare_exchange_strong(state, job_error_writing + ctl_->worker_count)) {
            j.error_kind = kind;
            j.error_pid = pid;
            j.error_status = status;
            j.error_item = item;
            j.failed.store(job_error_ready, std::memory_order_release);
        }
    }
    cancel(id);
}

inline void pool_core::on_worker_exit(unsigned index) {
    child_handle& w = workers_[index];
    if (!w.try_reap()) return;
    worker_slot& slot = ctl_->workers()[index];
    // Killed while spinning: its place among the spinners is free again.
    if (slot.spinning.exchange(0, std::memory_order_relaxed) != 0) ctl_->spinning.fetch_sub(1, std::memory_order_relaxed);
    if (slot.claiming.load(std::memory_order_acquire) != 0 && !claim_check_) {
        claim_check_ = true;
        claim_dead_pid_ = w.pid();
        claim_dead_status_ = w.exitcode().value_or(ProcessCrashed::lost_status);
    }
    const std::uint64_t held = slot.job.load(std::memory_order_acquire);
    if (held != 0) {
        const std::uint64_t id = held - 1;
        job_record& r = record(id);
        if (r.live && r.id == id) {
            // Chunks it published done are not counted yet (the count moves once per batch, and
            // after the states): from now on the states are counted instead.
            r.recount = true;
            // The chunk it was on, unless done, and the rest of its batch (held, never started)
            // are lost; the job fails with the first of them.
            const std::uint64_t chunk = slot.chunk.load(std::memory_order_relaxed);
            const std::uint64_t end = std::max(chunk + 1, slot.chunk_end.load(std::memory_order_relaxed));
            for (std::uint64_t c = chunk; c < end && c < r.chunks; ++c) {
                auto& state = chunk_state_of(arena_, job(id), c);
                const std::uint32_t was = state.load(std::memory_order_acquire);
                if (was == chunk_done || was == chunk_lost) continue;
                state.store(chunk_lost, std::memory_order_relaxed);  // counted here, not again
                ++r.lost;
                const auto& timed_out = timed_out_[index];
                const std::uint64_t item = timed_out           ? *timed_out
                                           : was == chunk_held ? chunk_items(arena_, job(id), c).first
                                                               : slot.item.load(std::memory_order_relaxed);
                fail_job(id, timed_out ? job_error_kind::timeout : job_error_kind::crash, w.pid(),
                         w.exitcode().value_or(ProcessCrashed::lost_status), item);
            }
        }
    }
    const auto state = slot.state.load(std::memory_order_acquire);
    if (state == worker_init_failed || (state == worker_starting && options_.initializer)) {
        // The initializer failed (or died in it): the pool cannot keep its promise of N
        // workers, and a replacement would only fail again.
        broken_ = init_error(index);
        terminate();
        return;
    }
}

inline void pool_core::resolve_claim_windows() noexcept {
    if (!claim_check_) return;
    // The claimed counts first, then the workers: a live worker's claim that the counts include
    // happened after it set `claiming`, so it is seen inside its claim or done with it (its
    // chunks named and marked running or held, never pending); a claim after the counts were
    // read is not among them.
    std::array<std::uint64_t, max_jobs> claimed{};  // per record: its chunks claimed so far
    for (std::size_t k = 0; k < records_.size(); ++k)
        if (records_[k].live) claimed[k] = claim_word::next(job(records_[k].id).claim.load(std::memory_order_seq_cst));
    for (unsigned i = 0; i < workers_.size(); ++i)
        if (workers_[i].started() && !workers_[i].reaped() &&
            ctl_->workers()[i].claiming.load(std::memory_order_seq_cst) != 0)
            return;  // inside a claim now: look again soon
    claim_check_ = false;
    for (std::size_t k = 0; k < records_.size(); ++k) {
        job_record& r = records_[k];
        const std::uint64_t id = r.id;
        for (std::uint64_t c = 0; r.live && c < claimed[k]; ++c) {
            auto& state = chunk_state_of(arena_, job(id), c);
            if (state.load(std::memory_order_acquire) != chunk_pending) continue;
            state.store(chunk_lost, std::memory_order_relaxed);
            ++r.lost;
            fail_job(id, job_error_kind::crash, claim_dead_pid_, claim_dead_status_, chunk_items(arena_, job(id), c).first);
        }
    }
}

inline void pool_core::replace_workers() noexcept {
    if (!replace_ && !spawn_failure_) return;  // nothing reaped since the last look
    replace_ = false;
    spawn_failure_ = nullptr;
    if (terminated_ || broken_ || ctl_->shutdown.load() != 0) return;
    for (unsigned i = 0; i < workers_.size(); ++i) {
        if (!workers_[i].reaped()) continue;
        try {
            start_worker(i);
        } catch (...) {
            spawn_failure_ = std::current_exception();  // EAGAIN at the process limit, ENOMEM...
        }
    }
}

inline unsigned pool_core::live_workers() const noexcept {
    return static_cast<unsigned>(
        std::ranges::count_if(workers_, [](const child_handle& w) { return w.started() && !w.reaped(); }));
}

inline bool pool_core::work_pending() {
    return std::ranges::any_of(records_, [&](const job_record& r) { return r.live && !settled(r.id); });
}

inline void pool_core::check_workers() {
    if (watching()) {
        watch_once(0, [] {});
        last_watch_ns_ = monotonic_ns();
    } else {
        for (unsigned i = 0; i < workers_.size(); ++i)
            if (workers_[i].started() && !workers_[i].reaped() && workers_[i].try_reap()) {
                // try_reap reaped it: handle as an exit (on_worker_exit sees it reaped).
                replace_ = true;
                on_worker_exit(i);
            }
    }
    resolve_claim_windows();
    replace_workers();
    // With no worker left, posted work would wait forever for one that cannot be forked; while
    // another worker lives, the pool carries on with fewer and forks again at the next check.
    if (spawn_failure_ && live_workers() == 0 && work_pending()) std::rethrow_exception(spawn_failure_);
}

inline void pool_core::sleep_once(const Deadline& deadline, std::uint64_t interrupts_seen) {
    if (watching()) {
        Deadline slice = deadline;
        // A replacement that could not be forked is tried again soon, not at the next death.
        if (spawn_failure_) slice = bounded_slice(deadline, std::chrono::milliseconds(10));
        // A claim window to settle waits only for live workers to leave theirs: microseconds.
        if (claim_check_) slice = bounded_slice(slice, std::chrono::milliseconds(1));
        if (timed_jobs_ != 0) {
            const Deadline next_timeout = enforce_task_timeouts();
            if (!next_timeout.is_never() && (slice.is_never() || next_timeout.poll_ms() < slice.poll_ms()))
                slice = next_timeout;
        }
        watch_once(slice.poll_ms(), [&] {
            check_interrupts(interrupts_seen);
            if (options_.on_interrupt) options_.on_interrupt();
        });
        last_watch_ns_ = monotonic_ns();
        check_interrupts(interrupts_seen);
        if (timed_jobs_ != 0) (void)enforce_task_timeouts();
        resolve_claim_windows();
        replace_workers();
        if (spawn_failure_ && live_workers() == 0 && work_pending()) std::rethrow_exception(spawn_failure_);
        return;
    }
    std::vector<pollfd> fds;
    fds.reserve(workers_.size() + 2);
    fds.push_back({wake_fd_.get(), POLLIN, 0});
    // SIGINT in an InterruptScope wakes us through this eventfd, whatever thread took the signal.
    if (const int fd = interrupts().wake_fd.load(std::memory_order_relaxed); fd >= 0) fds.push_back({fd, POLLIN, 0});
    bool every_pidfd = true;
    for (const auto& w : workers_) {
        fds.push_back({w.pidfd(), POLLIN, 0});
        every_pidfd = every_pidfd && w.pidfd() >= 0;
    }
    // Without pidfds (Linux < 5.3) deaths are found by polling waitpid every 10 ms.
    Deadline slice = every_pidfd ? deadline : bounded_slice(deadline, std::chrono::milliseconds(10));
    if (claim_check_) slice = bounded_slice(slice, std::chrono::milliseconds(1));  // see above
    const Deadline next_timeout = enforce_task_timeouts();
    if (!next_timeout.is_never() && (slice.is_never() || next_timeout.poll_ms() < slice.poll_ms())) slice = next_timeout;
    poll_until(fds, slice, [&] {
        check_interrupts(interrupts_seen);
        if (options_.on_interrupt) options_.on_interrupt();
    });
    drain_interrupt_wake();
    check_interrupts(interrupts_seen);
    (void)enforce_task_timeouts();
    std::uint64_t drained;
    while (::read(wake_fd_.get(), &drained, sizeof drained) > 0) {
    }
    check_workers();
}

inline Deadline pool_core::enforce_task_timeouts() {
    std::int64_t earliest = INT64_MAX;
    const std::int64_t now = monotonic_ns();
    for (unsigned i = 0; i < workers_.size(); ++i) {
        worker_slot& slot = ctl_->workers()[i];
        const std::uint64_t held = slot.job.load(std::memory_order_acquire);
        if (held == 0 || timed_out_[i] || workers_[i].reaped()) continue;
        const std::int64_t limit = job(held - 1).timeout_ns;
        if (limit == 0) continue;
        const std::int64_t expires = slot.item_started.load(std::memory_order_acquire) + limit;
        if (expires <= now) {
            timed_out_[i] = slot.item.load(std::memory_order_relaxed);
            workers_[i].signal(SIGKILL);  // its pidfd wakes us; on_worker_exit reports the timeout
        } else {
            earliest = std::min(earliest, expires);
        }
    }
    // A task with a limit may start while the parent sleeps: look again within one limit, so
    // that it is killed within twice its limit at worst.
    for (const auto& r : records_)
        if (r.live && job(r.id).timeout_ns != 0) earliest = std::min(earliest, now + job(r.id).timeout_ns);
    if (earliest == INT64_MAX) return Deadline::never();
    return Deadline::after(std::chrono::nanoseconds(earliest - now));
}

template <class Done>
bool pool_core::wait(Done&& done, const Deadline& deadline, bool every_chunk) {
    check_owner();
    ctl_->parent_wants_chunks.store(every_chunk ? 1 : 0, std::memory_order_relaxed);
    const std::uint64_t interrupts_seen = interrupts().received.load(std::memory_order_seq_cst);
    // A short spin (a few microseconds) catches a chunk that is about to finish without two
    // context switches; longer would steal the core a worker needs on a small machine.
    for (int i = 0; i < 200; ++i) {
        if (done()) return true;
        cpu_relax();
    }
    for (;;) {
        ctl_->parent_sleeping.store(1, std::memory_order_seq_cst);
        if (done()) {
            ctl_->parent_sleeping.store(0, std::memory_order_relaxed);
            return true;
        }
        if (deadline.expired()) {
            ctl_->parent_sleeping.store(0, std::memory_order_relaxed);
            return false;
        }
        try {
            sleep_once(deadline, interrupts_seen);
        } catch (...) {
            ctl_->parent_sleeping.store(0, std::memory_order_relaxed);
            throw;
        }
        ctl_->parent_sleeping.store(0, std::memory_order_relaxed);
    }
}

inline void pool_core::join() {
    check_owner();
    if (terminated_) return;
    closed_ = true;
    (void)wait([&] {
        for (auto& r : records_)
            if (r.live && !settled(r.id)) return false;
        return true;
    });
    retire_settled();
    ctl_->shutdown.store(1, std::memory_order_seq_cst);
    for (unsigned i = 0; i < workers_.size(); ++i) (void)ring(ctl_->workers()[i]);
    for (auto& w : workers_) w.wait(Deadline::never());
    terminated_ = true;
}

inline void pool_core::terminate() noexcept {
    if (terminated_ || !ctl_) return;
    terminated_ = true;
    closed_ = true;
    if (!owned()) return;  // a forked child's copy: the workers are not its own
    ctl_->shutdown.store(1, std::memory_order_seq_cst);
    try {
        for (auto& w : workers_) w.signal(SIGKILL);
    } catch (...) {
    }
    for (auto& w : workers_) w.stop_and_reap(std::chrono::milliseconds(0));
}

}  // namespace detail
MPROC_NAMESPACE_END

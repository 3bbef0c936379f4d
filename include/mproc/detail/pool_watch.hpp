// The parent's watch over its workers, pool_core's members that fork, reap and replace them:
// starting them, failing the jobs a dead worker held, task time limits, and the wait that
// sleeps on every worker's pidfd and the wake-up eventfd at once.
#pragma once

#include <mproc/detail/pool_core.hpp>
#include <mproc/detail/pool_exec.hpp>

#include <poll.h>

#include <algorithm>
#include <climits>
#include <exception>
#include <string>
#include <vector>

MPROC_NAMESPACE_BEGIN
namespace detail {

inline void pool_core::start_workers() {
    try {
        for (unsigned i = 0; i < workers_.size(); ++i) spawn(i);
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

inline void pool_core::spawn(unsigned index) {
    worker_slot& slot = ctl_->workers()[index];
    slot.job.store(0, std::memory_order_relaxed);
    slot.pid.store(0, std::memory_order_relaxed);
    slot.state.store(worker_starting, std::memory_order_relaxed);
    timed_out_[index].reset();
    const StartMethod method = options_.start_method.value_or(StartMethod::fork);
    if (method != StartMethod::fork) {
        workers_[index] = start_worker_by_exec(method, arena_, wake_fd_.get(), index, options_.initializer);
        return;
    }
    workers_[index] = child_handle(fork_child([this, index] {
        return worker_main(arena_, *ctl_, index, options_.initializer);
    }));
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
    const std::uint64_t held = slot.job.load(std::memory_order_acquire);
    if (held != 0) {
        const std::uint64_t id = held - 1;
        job_record& r = record(id);
        if (r.live && r.id == id) {
            const std::uint64_t chunk = slot.chunk.load(std::memory_order_relaxed);
            if (chunk_state_of(arena_, job(id), chunk).load(std::memory_order_acquire) == chunk_done) {
                r.recount = true;  // it died between publishing the chunk and counting it
            } else {
                ++r.lost;
                const auto& timed_out = timed_out_[index];
                fail_job(id, timed_out ? job_error_kind::timeout : job_error_kind::crash, w.pid(),
                         w.exitcode().value_or(ProcessCrashed::lost_status), timed_out ? *timed_out : slot.item.load(std::memory_order_relaxed));
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

inline void pool_core::replace_workers() noexcept {
    spawn_failure_ = nullptr;
    if (terminated_ || broken_ || ctl_->shutdown.load() != 0) return;
    for (unsigned i = 0; i < workers_.size(); ++i) {
        if (!workers_[i].reaped()) continue;
        try {
            spawn(i);
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
    for (unsigned i = 0; i < workers_.size(); ++i)
        if (workers_[i].started() && !workers_[i].reaped() && workers_[i].try_reap()) {
            // try_reap reaped it: handle as an exit (on_worker_exit sees it reaped).
            on_worker_exit(i);
        }
    replace_workers();
    // With no worker left, posted work would wait forever for one that cannot be forked; while
    // another worker lives, the pool carries on with fewer and forks again at the next check.
    if (spawn_failure_ && live_workers() == 0 && work_pending()) std::rethrow_exception(spawn_failure_);
}

inline void pool_core::sleep_once(const Deadline& deadline, std::uint64_t interrupts_seen) {
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
    ctl_->post_seq.fetch_add(1, std::memory_order_seq_cst);
    futex_wake(ctl_->post_seq);
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

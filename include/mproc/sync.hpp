// Process-shared synchronization: Lock, RLock, Condition here; Semaphore, BoundedSemaphore and
// Event in detail/sync_semaphore.hpp; Barrier in detail/sync_barrier.hpp. Python's
// multiprocessing.Lock and friends, with timeouts everywhere and locks that survive their owner.
//
// Every object lives in a MAP_SHARED mapping of a memfd made by its constructor. Handles are
// cheap to copy and every copy refers to the same object; an object made before
// Process::start() is shared with the child, whether the child's callable captures it by
// reference or by copy, and one passed as an argument to a process started by spawn or
// forkserver travels as its memfd (detail/shared_handle.hpp). A moved-from handle may only be
// assigned to or destroyed.
#pragma once

#include <mproc/detail/deadline.hpp>
#include <mproc/detail/futex.hpp>
#include <mproc/detail/robust_mutex.hpp>
#include <mproc/detail/shared_handle.hpp>
#include <mproc/detail/shm.hpp>
#include <mproc/error.hpp>

#include <chrono>
#include <concepts>
#include <cstdint>
#include <memory>
#include <utility>

MPROC_NAMESPACE_BEGIN

namespace detail {
template <class Clock, class Duration>
[[nodiscard]] Deadline deadline_at(std::chrono::time_point<Clock, Duration> at) {
    return Deadline::after(at - Clock::now());
}

/// Lock()/unlock(), as std::unique_lock, Lock, RLock and Condition have.
template <class L>
concept basic_lockable = requires(L& l) {
    l.lock();
    l.unlock();
};

/// The std::Lockable/TimedLockable spellings, shared by every lock type (CRTP).
template <class Derived>
class lockable_names {
public:
    /// Same as acquire(), for std::lock_guard / std::unique_lock / std::scoped_lock.
    void lock() { self().acquire(); }
    /// Same as try_acquire().
    [[nodiscard]] bool try_lock() { return self().try_acquire(); }
    /// Same as try_acquire_for(), for std::unique_lock::try_lock_for.
    template <class Rep, class Period>
    [[nodiscard]] bool try_lock_for(std::chrono::duration<Rep, Period> timeout) {
        return self().try_acquire_for(timeout);
    }
    /// Same as try_acquire_until(), for std::unique_lock::try_lock_until.
    template <class Clock, class Duration>
    [[nodiscard]] bool try_lock_until(std::chrono::time_point<Clock, Duration> at) {
        return self().try_acquire_until(at);
    }
    /// Same as release().
    void unlock() { self().release(); }

    /// Waits at most `timeout`; true when acquired.
    template <class Rep, class Period>
    [[nodiscard]] bool try_acquire_for(std::chrono::duration<Rep, Period> timeout) {
        return self().acquire_until(Deadline::after(timeout));
    }
    /// Waits until `at` at most; true when acquired.
    template <class Clock, class Duration>
    [[nodiscard]] bool try_acquire_until(std::chrono::time_point<Clock, Duration> at) {
        return self().acquire_until(deadline_at(at));
    }

private:
    Derived& self() noexcept { return static_cast<Derived&>(*this); }
};
}  // namespace detail

/// A process-shared mutual-exclusion lock that survives the death of its owner.
///
/// When a process (or thread) dies holding it, the kernel releases it; the next acquirer gets it
/// within milliseconds and owner_died() tells it that the data the lock protects may be half
/// updated. The lock stays usable. Unlike Python's Lock, only the thread that acquired a Lock
/// may release it (that ownership is how its death is noticed), and acquiring it twice from one
/// thread throws StateError instead of deadlocking.
///
/// Timed and standard spellings (from a base shared with RLock and Condition):
/// try_acquire_for(timeout) and try_acquire_until(time_point) wait at most that long and return
/// whether they acquired it; lock(), try_lock(), try_lock_for(), try_lock_until() and unlock()
/// are the same calls under std's names, for std::lock_guard, std::unique_lock and
/// std::scoped_lock.
/// @code
/// mproc::Lock lock;
/// { std::lock_guard g(lock); ... }
/// if (lock.try_acquire_for(100ms)) { if (lock.owner_died()) repair(); lock.release(); }
/// @endcode
class Lock : public detail::lockable_names<Lock> {
public:
    /// A new, unlocked lock in its own shared mapping.
    Lock() : mutex_(detail::make_shared_state<detail::robust_mutex>()) {}

    /// @cond
    /// Refers to a mutex placed inside another shared object (SharedValue's lock); `mutex`
    /// keeps that object's mapping alive.
    explicit Lock(std::shared_ptr<detail::robust_mutex> mutex) noexcept : mutex_(std::move(mutex)) {}
    /// @endcond

    /// Blocks until acquired.
    /// @throws StateError when this thread holds it already (it could only deadlock).
    void acquire() {
        if (!take(mutex_->lock()))
            throw StateError("mproc::Lock: this thread holds it already (a Lock is not "
                             "recursive: use RLock)");
    }
    /// Acquires only if free (or its owner died); true when acquired. False when this thread
    /// holds it already.
    [[nodiscard]] bool try_acquire() { return take(mutex_->try_lock()); }
    /// @cond
    /// Blocks until acquired or the deadline passes; true when acquired. False at once when
    /// this thread holds it already: nobody else can release it.
    [[nodiscard]] bool acquire_until(const detail::Deadline& deadline) {
        return take(mutex_->lock_until(deadline));
    }
    /// @endcond
    /// Releases. @throws StateError when this thread does not hold it.
    void release() { mutex_->unlock(); }

    /// True when the current acquisition took the lock over from a process or thread that died
    /// holding it. Meaningful to the holder; set anew by every acquisition.
    [[nodiscard]] bool owner_died() const noexcept {
        return mutex_->owner_died.load(std::memory_order_relaxed);
    }

private:
    template <class>
    friend struct detail::shared_handle;

    bool take(detail::acquire_result r) {
        if (r == detail::acquire_result::acquired) [[likely]] {
            mutex_->owner_died.store(false, std::memory_order_relaxed);
            return true;
        }
        if (r == detail::acquire_result::owner_died) {
            mutex_->owner_died.store(true, std::memory_order_relaxed);
            return true;
        }
        return false;  // busy, or held by this thread
    }

    std::shared_ptr<detail::robust_mutex> mutex_;
};

namespace detail {
struct rlock_state {
    robust_mutex mutex;
    std::uint32_t depth = 0;  // acquisitions by the owner not yet released; owner-only
    // A non-owner's release() probe took the lock over from a dead owner: the next real
    // acquisition must still learn of that death.
    bool death_unclaimed = false;
};
}  // namespace detail

/// A process-shared reentrant lock: the owning thread may acquire it again, and releases it as
/// many times. Owner death as for Lock: the next acquirer gets it with owner_died() true and a
/// depth of one, whatever depth the dead owner held. The same timed and standard spellings as
/// Lock.
/// @code
/// mproc::RLock r;
/// std::lock_guard outer(r);
/// std::lock_guard inner(r);   // same thread: fine
/// @endcode
class RLock : public detail::lockable_names<RLock> {
public:
    /// A new, free lock in its own shared mapping.
    RLock() : state_(detail::make_shared_state<detail::rlock_state>()) {}

    /// Blocks until acquired (at once when this thread owns it).
    void acquire() { (void)take(state_->mutex.lock()); }
    /// Acquires only if free, owned by this thread, or its owner died; true when acquired.
    [[nodiscard]] bool try_acquire() { return take(state_->mutex.try_lock()); }
    /// @cond
    [[nodiscard]] bool acquire_until(const detail::Deadline& deadline) {
        return take(state_->mutex.lock_until(deadline));
    }
    /// @endcond
    /// Releases one level; the lock is free when every acquire has its release.
    /// @throws StateError when this thread does not own it.
    void release();

    /// True when the outermost acquisition took the lock over from a dead owner.
    [[nodiscard]] bool owner_died() const noexcept {
        return state_->mutex.owner_died.load(std::memory_order_relaxed);
    }

private:
    template <class>
    friend struct detail::shared_handle;
    explicit RLock(std::shared_ptr<detail::rlock_state> state) noexcept : state_(std::move(state)) {}

    bool take(detail::acquire_result r);

    std::shared_ptr<detail::rlock_state> state_;
};

inline bool RLock::take(detail::acquire_result r) {
    auto& s = *state_;
    switch (r) {
    case detail::acquire_result::busy: return false;
    case detail::acquire_result::held: ++s.depth; return true;
    case detail::acquire_result::acquired:
    case detail::acquire_result::owner_died:
        s.depth = 1;
        s.mutex.owner_died.store(r == detail::acquire_result::owner_died || s.death_unclaimed,
                                 std::memory_order_relaxed);
        s.death_unclaimed = false;
        return true;
    }
    return false;
}

inline void RLock::release() {
    auto& s = *state_;
    // An error-checking trylock answers "held" only to the owner: depth is the owner's alone.
    const detail::acquire_result probe = s.mutex.try_lock();
    if (probe != detail::acquire_result::held) {
        if (probe != detail::acquire_result::busy) {  // the probe took a free lock: give it back
            if (probe == detail::acquire_result::owner_died) s.death_unclaimed = true;
            s.mutex.unlock();
        }
        throw StateError("mproc::RLock: release() by a thread that does not own it");
    }
    if (--s.depth == 0) s.mutex.unlock();
}

namespace detail {
struct condition_state {
    futex_word sequence{0};  // bumped by every notify
    futex_word waiters{0};
};
}  // namespace detail

/// A process-shared condition variable over a Lock (its own, or one given to it).
///
/// Built on a futex sequence word, never a process-shared pthread_cond_t (glibc bugs 21422 and
/// 25847 lose wake-ups and hang there). Wake-ups may be spurious, as with every condition
/// variable: wait with a predicate, or re-check after wait(). wait() may also be given any other
/// lock (std::unique_lock<Lock>, an RLock held once) that the caller holds. The condition is
/// itself a lock (its Lock's acquire and release, with the same timed and standard spellings as
/// Lock), so `std::lock_guard g(cv)` holds get_lock().
/// @code
/// mproc::Condition cv;
/// { std::unique_lock lk(cv); cv.wait(lk, [&] { return ready.value(); }); }   // waiter
/// { std::lock_guard g(cv); ready.value() = true; cv.notify_all(); }          // notifier
/// @endcode
class Condition : public detail::lockable_names<Condition> {
public:
    /// A condition with a new Lock of its own.
    Condition() : Condition(Lock()) {}
    /// A condition over `lock` (a copy of the handle: the same shared lock).
    explicit Condition(Lock lock)
        : lock_(std::move(lock)), state_(detail::make_shared_state<detail::condition_state>()) {}

    /// The lock the no-lock-argument waits release and re-acquire.
    [[nodiscard]] Lock& get_lock() noexcept { return lock_; }
    /// get_lock().acquire().
    void acquire() { lock_.acquire(); }
    /// get_lock().try_acquire().
    [[nodiscard]] bool try_acquire() { return lock_.try_acquire(); }
    /// @cond
    [[nodiscard]] bool acquire_until(const detail::Deadline& deadline) {
        return lock_.acquire_until(deadline);
    }
    /// @endcond
    /// get_lock().release().
    void release() { lock_.release(); }
    /// Whether the last acquisition of the lock (including the re-acquisition at the end of a
    /// wait) took it over from a dead owner.
    [[nodiscard]] bool owner_died() const noexcept { return lock_.owner_died(); }

    /// Releases `lock` (held by the caller), sleeps until notified, re-acquires it.
    template <detail::basic_lockable L>
    void wait(L& lock) { (void)wait_until_deadline(lock, detail::Deadline::never()); }
    /// Waits until `ready()` is true, re-checking it after every wake-up, with `lock` held.
    template <detail::basic_lockable L, std::predicate Ready>
    void wait(L& lock, Ready ready) {
        while (!ready()) wait(lock);
    }
    /// As wait(lock), for at most `timeout`; false when it timed out.
    template <detail::basic_lockable L, class Rep, class Period>
    [[nodiscard]] bool wait_for(L& lock, std::chrono::duration<Rep, Period> timeout) {
        return wait_until_deadline(lock, detail::Deadline::after(timeout));
    }
    /// As wait(lock, ready), for at most `timeout`; returns ready() (false on timeout).
    template <detail::basic_lockable L, class Rep, class Period, std::predicate Ready>
    [[nodiscard]] bool wait_for(L& lock, std::chrono::duration<Rep, Period> timeout, Ready ready) {
        const auto deadline = detail::Deadline::after(timeout);
        while (!ready())
            if (!wait_until_deadline(lock, deadline)) return ready();
        return true;
    }

    /// Python's spelling: the caller holds get_lock() (e.g. `std::lock_guard g(cv)`).
    void wait() { wait(lock_); }
    /// wait(get_lock(), ready): Python's wait_for(predicate).
    template <std::predicate Ready>
    void wait(Ready ready) { wait(lock_, std::move(ready)); }
    /// wait_for(get_lock(), timeout): Python's wait(timeout).
    template <class Rep, class Period>
    [[nodiscard]] bool wait_for(std::chrono::duration<Rep, Period> timeout) {
        return wait_for(lock_, timeout);
    }
    /// wait_for(get_lock(), timeout, ready): Python's wait_for(predicate, timeout).
    template <class Rep, class Period, std::predicate Ready>
    [[nodiscard]] bool wait_for(std::chrono::duration<Rep, Period> timeout, Ready ready) {
        return wait_for(lock_, timeout, std::move(ready));
    }

    /// Wakes up to `n` waiters (every process that waits on this condition).
    void notify(int n = 1) noexcept {
        state_->sequence.fetch_add(1, std::memory_order_seq_cst);
        detail::wake_waiters(state_->sequence, state_->waiters, n);
    }
    /// Wakes every waiter.
    void notify_all() noexcept { notify(INT_MAX); }

private:
    template <class>
    friend struct detail::shared_handle;
    Condition(Lock lock, std::shared_ptr<detail::condition_state> state) noexcept
        : lock_(std::move(lock)), state_(std::move(state)) {}

    template <class L>
    bool wait_until_deadline(L& lock, const detail::Deadline& deadline);

    Lock lock_;
    std::shared_ptr<detail::condition_state> state_;
};

template <class L>
bool Condition::wait_until_deadline(L& lock, const detail::Deadline& deadline) {
    auto& s = *state_;
    // Read under the lock: a notify after this point changes the word, so the futex wait
    // below returns at once instead of missing it.
    const std::uint32_t seen = s.sequence.load(std::memory_order_seq_cst);
    lock.unlock();
    std::optional<std::uint32_t> woke;
    try {
        woke = detail::wait_until(
            s.sequence, s.waiters, [seen](std::uint32_t v) { return v != seen; }, deadline);
    } catch (...) {
        lock.lock();
        throw;
    }
    lock.lock();
    return woke.has_value();
}

/// @cond
namespace detail {
template <>
struct shared_handle<Lock> : std::true_type {
    static void save(const Lock& lock, handle_writer& w) { w.state(lock.mutex_); }
    static Lock load(handle_reader& r) { return Lock(r.state<robust_mutex>()); }
};
template <>
struct shared_handle<RLock> : std::true_type {
    static void save(const RLock& lock, handle_writer& w) { w.state(lock.state_); }
    static RLock load(handle_reader& r) { return RLock(r.state<rlock_state>()); }
};
template <>
struct shared_handle<Condition> : std::true_type {
    static void save(const Condition& c, handle_writer& w) {
        shared_handle<Lock>::save(c.lock_, w);
        w.state(c.state_);
    }
    static Condition load(handle_reader& r) {
        Lock lock = shared_handle<Lock>::load(r);
        return Condition(std::move(lock), r.state<condition_state>());
    }
};
}  // namespace detail
/// @endcond

MPROC_NAMESPACE_END

#include <mproc/detail/sync_barrier.hpp>
#include <mproc/detail/sync_semaphore.hpp>

// A process-shared robust pthread mutex in shared memory: the base of Lock, RLock, the locks of
// SharedValue/SharedArray/Condition, and Barrier's member slots.
//
// Why robust pthread mutexes rather than an owner-pid futex word: the kernel itself releases
// them when their owner dies. Each thread registers a "robust list" of the robust mutexes it
// holds (glibc does it at thread start and again in a forked child); at exit, normal or SIGKILL,
// the kernel walks that list, sets FUTEX_OWNER_DIED in each word and wakes one waiter, who gets
// EOWNERDEAD. No liveness polling, no pid-reuse race, no zombie ambiguity, and the uncontended
// path is one CAS each way, which is the benchmark's baseline by construction.
#pragma once

#include <mproc/detail/deadline.hpp>
#include <mproc/error.hpp>

#include <pthread.h>
#include <time.h>

#include <atomic>
#include <cerrno>
#include <cstdint>

#if defined(__SANITIZE_THREAD__)
#define MPROC_DETAIL_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define MPROC_DETAIL_TSAN 1
#endif
#endif

MPROC_NAMESPACE_BEGIN
namespace detail {

/// How an attempt to take a robust mutex ended.
enum class acquire_result {
    busy,        ///< not taken: held by another thread (try) or the deadline passed (timed)
    acquired,    ///< taken
    owner_died,  ///< taken over from a thread or process that died holding it
    held,        ///< not taken: the calling thread holds it already (EDEADLK)
};

/// CLOCK_MONOTONIC (steady_clock's clock on Linux) time `deadline` stands for, millisecond
/// granularity rounded up, for pthread_mutex_clocklock.
[[nodiscard]] inline timespec monotonic_deadline(const Deadline& deadline) noexcept {
    timespec at{};
    ::clock_gettime(CLOCK_MONOTONIC, &at);
    const int ms = deadline.poll_ms();
    at.tv_sec += ms / 1000;
    at.tv_nsec += static_cast<long>(ms % 1000) * 1'000'000;
    if (at.tv_nsec >= 1'000'000'000) {
        at.tv_nsec -= 1'000'000'000;
        ++at.tv_sec;
    }
    return at;
}

/// The mutex, in shared memory. Error-checking type: relocking by the owner is EDEADLK (a clear
/// error instead of a silent self-deadlock), and unlocking by a non-owner is EPERM.
///
/// After EOWNERDEAD the new owner calls pthread_mutex_consistent at once, so the mutex never
/// becomes ENOTRECOVERABLE; whether the protected data is sound is the caller's question, which
/// is what `owner_died` (stored per acquisition, read by the holder) is for.
struct robust_mutex {
    robust_mutex() {
        pthread_mutexattr_t attr;
        int rc = ::pthread_mutexattr_init(&attr);
        if (rc == 0) rc = ::pthread_mutexattr_setpshared(&attr, PTHREAD_PROCESS_SHARED);
        if (rc == 0) rc = ::pthread_mutexattr_setrobust(&attr, PTHREAD_MUTEX_ROBUST);
        if (rc == 0) rc = ::pthread_mutexattr_settype(&attr, PTHREAD_MUTEX_ERRORCHECK);
        if (rc == 0) rc = ::pthread_mutex_init(&mutex, &attr);
        ::pthread_mutexattr_destroy(&attr);
        if (rc != 0) throw_errno(rc, "pthread_mutex_init");
    }

    /// Blocks until taken.
    acquire_result lock() { return settle(::pthread_mutex_lock(&mutex), "pthread_mutex_lock"); }

    /// Takes the mutex only if it is free (or its owner died).
    acquire_result try_lock() {
        return settle(::pthread_mutex_trylock(&mutex), "pthread_mutex_trylock");
    }

    /// Blocks until taken or the deadline passes. EINTR never surfaces: glibc resumes the futex
    /// wait itself, against the same absolute deadline.
    acquire_result lock_until(const Deadline& deadline) {
        if (deadline.is_never()) return lock();
        acquire_result r = try_lock();
        if (r != acquire_result::busy || deadline.expired()) return r;
#ifdef MPROC_DETAIL_TSAN
        // ThreadSanitizer models neither pthread_mutex_clocklock nor an EOWNERDEAD from a timed
        // lock, and would report the matching unlock; its builds poll with trylock instead.
        while (r == acquire_result::busy && !deadline.expired()) {
            const timespec pause{0, 200'000};
            ::nanosleep(&pause, nullptr);
            r = try_lock();
        }
        return r;
#else
        const timespec at = monotonic_deadline(deadline);
        return settle(::pthread_mutex_clocklock(&mutex, CLOCK_MONOTONIC, &at),
                      "pthread_mutex_clocklock");
#endif
    }

    /// Releases. @throws StateError when the calling thread does not hold it.
    void unlock() {
#ifdef MPROC_DETAIL_TSAN
        // ThreadSanitizer reports an unlock by a non-owner before glibc can refuse it (EPERM);
        // ask first (an error-checking trylock says EDEADLK only to the owner).
        if (const int probe = ::pthread_mutex_trylock(&mutex); probe != EDEADLK) {
            if (probe == 0 || probe == EOWNERDEAD) {
                if (probe == EOWNERDEAD) ::pthread_mutex_consistent(&mutex);
                ::pthread_mutex_unlock(&mutex);
            }
            fail(EPERM, "pthread_mutex_unlock");
        }
#endif
        const int rc = ::pthread_mutex_unlock(&mutex);
        if (rc != 0) [[unlikely]]
            fail(rc, "pthread_mutex_unlock");
    }

    pthread_mutex_t mutex;
    /// Whether the current acquisition took over from a dead owner. Written by each new owner,
    /// read by the holder; atomic only so that a stray reader is not a data race.
    std::atomic<bool> owner_died{false};

private:
    acquire_result settle(int rc, const char* call) {
        if (rc == 0) [[likely]]
            return acquire_result::acquired;
        if (rc == EOWNERDEAD) {
            ::pthread_mutex_consistent(&mutex);
            return acquire_result::owner_died;
        }
        if (rc == EBUSY || rc == ETIMEDOUT) return acquire_result::busy;
        if (rc == EDEADLK) return acquire_result::held;
        fail(rc, call);
    }

    [[noreturn]] static void fail(int rc, const char* call) {
        if (rc == EPERM) throw StateError("mproc: release() of a lock this thread does not hold");
        throw_errno(rc, call);
    }
};

}  // namespace detail
MPROC_NAMESPACE_END

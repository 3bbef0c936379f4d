// Futexes on 32-bit words in shared memory: the one way mproc sleeps until another process acts.
//
// Every word lives in a MAP_SHARED mapping and is waited on *without* FUTEX_PRIVATE_FLAG: the
// kernel then keys the wait on the page, not the address, so a process that sees the mapping at
// another address (or a forked child) wakes and is woken by the same word.
//
// The protocol every user follows (Event, Semaphore, Condition, Barrier, and Queue/Pool slots):
//
//     waiter:  spin briefly on the word; then waiters += 1; re-read the word; if still not ready,
//              futex_wait(word, value seen); waiters -= 1; loop.            (wait_until below)
//     waker:   change the word (seq_cst); if waiters != 0, futex_wake(word). (wake_waiters below)
//
// Both sides use sequentially consistent operations on the two words, so either the waker sees
// the waiter's count or the waiter's re-read sees the new value (FUTEX_WAIT also refuses to sleep
// when the word no longer holds the value seen). An uncontended waker therefore makes no system
// call, and a wake-up is never lost while the waker lives. A waker killed between changing the
// word and its futex_wake (SIGKILL, the OOM killer) does lose it, so no sleep in wait_until lasts
// longer than `recheck_interval`: the waiter then re-reads the word and finds the change. An
// untimed wait() therefore costs at most that much latency after such a death, never a hang.
#pragma once

#include <mproc/detail/deadline.hpp>
#include <mproc/detail/sys.hpp>
#include <mproc/error.hpp>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <climits>
#include <cstdint>
#include <optional>

MPROC_NAMESPACE_BEGIN
namespace detail {

/// A 32-bit word the kernel can wait on. Place it in shared memory.
using futex_word = std::atomic<std::uint32_t>;
static_assert(sizeof(futex_word) == 4 && futex_word::is_always_lock_free,
              "futex words must be plain 32-bit integers");

/// How a futex_wait ended. `woken` may be spurious: callers always re-check their condition.
enum class futex_status { woken, timeout, changed };

/// One iteration of a busy wait: tells the CPU we spin (saves power, frees the sibling
/// hyper-thread, avoids a memory-order mis-speculation when the word changes).
inline void cpu_relax() noexcept {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    asm volatile("yield" ::: "memory");
#else
    std::atomic_signal_fence(std::memory_order_seq_cst);
#endif
}

/// Rounds of cpu_relax() before sleeping: a few microseconds, long enough to catch a partner
/// that is about to act (a lock holder leaving a short critical section), short enough not to
/// burn a core that a sleeping partner needs.
inline constexpr int default_spin_rounds = 128;

/// Sleeps while `word` holds `expected`, until woken or the deadline passes. A signal (EINTR)
/// resumes the wait with the time that is left unless the word has changed meanwhile.
///
/// The kernel timeout has millisecond granularity, rounded up (Deadline::poll_ms): a wait never
/// ends early, and a sub-millisecond timeout waits up to 1 ms.
/// @throws SystemError on a futex failure other than EAGAIN/EINTR/ETIMEDOUT (a bad address).
inline futex_status futex_wait(futex_word& word, std::uint32_t expected, const Deadline& deadline) {
    auto* address = reinterpret_cast<std::uint32_t*>(&word);
    for (;;) {
        timespec relative{};
        const timespec* timeout = nullptr;
        if (!deadline.is_never()) {
            const int ms = deadline.poll_ms();
            if (ms == 0) return futex_status::timeout;
            relative.tv_sec = ms / 1000;
            relative.tv_nsec = static_cast<long>(ms % 1000) * 1'000'000;
            timeout = &relative;
        }
        if (sys().futex(address, FUTEX_WAIT, expected, timeout) == 0) return futex_status::woken;
        switch (errno) {
        case EAGAIN: return futex_status::changed;
        case ETIMEDOUT:
            if (deadline.expired()) return futex_status::timeout;
            continue;
        case EINTR:
            if (word.load(std::memory_order_acquire) != expected) return futex_status::changed;
            continue;
        default: throw_errno("futex(FUTEX_WAIT)");
        }
    }
}

/// Wakes up to `count` processes sleeping on `word`; returns how many woke. Never throws: the
/// only failures (EFAULT, EINVAL) mean a bad address, and a waker must not fail its caller.
inline int futex_wake(futex_word& word, int count = INT_MAX) noexcept {
    const long woke = sys().futex(reinterpret_cast<std::uint32_t*>(&word), FUTEX_WAKE,
                                  static_cast<std::uint32_t>(count), nullptr);
    return woke < 0 ? 0 : static_cast<int>(woke);
}

/// The waker's half of the protocol: call after changing `word` with a seq_cst operation.
/// Makes the system call only when `waiters` says someone sleeps (or is about to).
inline void wake_waiters(futex_word& word, const futex_word& waiters, int count = INT_MAX) noexcept {
    if (waiters.load(std::memory_order_seq_cst) != 0) futex_wake(word, count);
}

/// The longest one futex sleep of wait_until lasts before the waiter re-reads its word (see the
/// protocol above: a waker may die before its wake). A sleeping waiter costs one wake-up per
/// interval; a wake lost to a dead waker costs at most this much latency.
inline constexpr std::chrono::milliseconds recheck_interval{100};

/// The earlier of `deadline` and now + `slice`: for waits that must wake periodically to check
/// something no futex can signal (a process that died without waking anyone).
template <class Rep, class Period>
[[nodiscard]] Deadline bounded_slice(const Deadline& deadline, std::chrono::duration<Rep, Period> slice) {
    if (!deadline.is_never() &&
        deadline.poll_ms() <= std::chrono::ceil<std::chrono::milliseconds>(slice).count())
        return deadline;
    return Deadline::after(slice);
}

/// The waiter's half: waits until `ready(value of word)` is true or the deadline passes. Spins
/// `spin_rounds` first, then sleeps on the futex, counted in `waiters`. Returns the value for
/// which ready() held, or nullopt on timeout (ready() is tested once more at the deadline).
/// @code
/// // Event::wait: sleep until the flag is set
/// auto seen = wait_until(state.flag, state.waiters, [](std::uint32_t v) { return v != 0; }, deadline);
/// @endcode
template <class Ready>
[[nodiscard]] std::optional<std::uint32_t> wait_until(futex_word& word, futex_word& waiters,
                                                      Ready&& ready, const Deadline& deadline,
                                                      int spin_rounds = default_spin_rounds) {
    std::uint32_t value = word.load(std::memory_order_acquire);
    for (int i = 0; i < spin_rounds && !ready(value); ++i) {
        cpu_relax();
        value = word.load(std::memory_order_acquire);
    }
    while (!ready(value)) {
        if (deadline.expired()) return std::nullopt;
        waiters.fetch_add(1, std::memory_order_seq_cst);
        value = word.load(std::memory_order_seq_cst);
        if (!ready(value)) {
            try {
                (void)futex_wait(word, value, bounded_slice(deadline, recheck_interval));
            } catch (...) {
                waiters.fetch_sub(1, std::memory_order_release);
                throw;
            }
        }
        waiters.fetch_sub(1, std::memory_order_release);
        value = word.load(std::memory_order_acquire);
    }
    return value;
}

}  // namespace detail
MPROC_NAMESPACE_END

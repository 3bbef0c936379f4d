// Semaphore, BoundedSemaphore and Event: process-shared, on a futex word each. Part of
// <mproc/sync.hpp>; include that header.
#pragma once

#include <mproc/detail/deadline.hpp>
#include <mproc/detail/futex.hpp>
#include <mproc/detail/shared_handle.hpp>
#include <mproc/detail/shm.hpp>
#include <mproc/error.hpp>

#include <chrono>
#include <cstdint>
#include <limits>
#include <memory>
#include <string>

MPROC_NAMESPACE_BEGIN

namespace detail {
struct semaphore_state {
    futex_word count{0};
    futex_word waiters{0};
    std::uint32_t max = 0;  // release() may not raise count above this
};
}  // namespace detail

/// A process-shared counting semaphore: acquire() takes one unit, waiting while there is none;
/// release() gives units back.
///
/// A semaphore has no owner, so when a process dies holding units, nothing gives them back:
/// they are lost, and the semaphore admits that many fewer processes from then on (Python's
/// behaves the same way). Where a dead holder must not cost capacity, use a Lock per unit, or
/// have the parent release() for a child it saw die.
/// @code
/// mproc::Semaphore slots(2);          // at most two processes inside
/// { std::lock_guard g(slots); work(); }
/// @endcode
/// @headerfile sync.hpp <mproc/sync.hpp>
class Semaphore {
public:
    /// A semaphore holding `value` units (at most 2^32 - 2).
    explicit Semaphore(std::uint32_t value = 1)
        : Semaphore(value, std::numeric_limits<std::uint32_t>::max() - 1) {}

    /// Blocks until a unit is available and takes it.
    void acquire() { (void)acquire_until(detail::Deadline::never()); }
    /// Takes a unit only if one is available now.
    [[nodiscard]] bool try_acquire() noexcept { return take_one(); }
    /// Waits at most `timeout` for a unit; true when one was taken.
    template <class Rep, class Period>
    [[nodiscard]] bool try_acquire_for(std::chrono::duration<Rep, Period> timeout) {
        return acquire_until(detail::Deadline::after(timeout));
    }
    /// @cond
    /// Waits until the deadline at most; true when a unit was taken.
    [[nodiscard]] bool acquire_until(const detail::Deadline& deadline);
    /// @endcond

    /// Gives back `n` units and wakes as many waiters.
    /// @throws StateError when the count would pass its maximum (BoundedSemaphore's initial
    ///         value): more releases than acquires.
    void release(std::uint32_t n = 1);

    /// The units available now (a snapshot; other processes change it).
    [[nodiscard]] std::uint32_t get_value() const noexcept {
        return state_->count.load(std::memory_order_relaxed);
    }

    /// Same as acquire(), for std::lock_guard and friends.
    void lock() { acquire(); }
    /// Same as try_acquire().
    [[nodiscard]] bool try_lock() noexcept { return try_acquire(); }
    /// Same as release().
    void unlock() { release(); }

    /// @cond
protected:
    Semaphore(std::uint32_t value, std::uint32_t max)
        : state_(detail::make_shared_state<detail::semaphore_state>()) {
        if (value > max) throw StateError("mproc::Semaphore: initial value above the maximum");
        state_->count.store(value, std::memory_order_relaxed);
        state_->max = max;
    }
    explicit Semaphore(std::shared_ptr<detail::semaphore_state> state) noexcept : state_(std::move(state)) {}
    /// @endcond

private:
    template <class>
    friend struct detail::shared_handle;

    bool take_one() noexcept {
        auto& count = state_->count;
        std::uint32_t c = count.load(std::memory_order_relaxed);
        while (c > 0)
            if (count.compare_exchange_weak(c, c - 1, std::memory_order_acquire,
                                            std::memory_order_relaxed))
                return true;
        return false;
    }

    std::shared_ptr<detail::semaphore_state> state_;
};

/// @cond
inline bool Semaphore::acquire_until(const detail::Deadline& deadline) {
    auto& s = *state_;
    while (!take_one()) {
        const auto seen = detail::wait_until(
            s.count, s.waiters, [](std::uint32_t v) { return v > 0; }, deadline);
        if (!seen) return take_one();  // one last try at the deadline
    }
    return true;
}
/// @endcond

inline void Semaphore::release(std::uint32_t n) {
    auto& s = *state_;
    std::uint32_t c = s.count.load(std::memory_order_relaxed);
    do {
        if (n > s.max || c > s.max - n)
            throw StateError("mproc::Semaphore: released more times than acquired (count " +
                             std::to_string(c) + " + " + std::to_string(n) + " > " +
                             std::to_string(s.max) + ")");
    } while (!s.count.compare_exchange_weak(c, c + n, std::memory_order_seq_cst,
                                            std::memory_order_relaxed));
    detail::wake_waiters(s.count, s.waiters, static_cast<int>(std::min<std::uint32_t>(n, INT_MAX)));
}

/// A Semaphore whose count may never exceed its initial value: a release() without a matching
/// acquire() throws StateError instead of silently raising the capacity.
/// @code
/// mproc::BoundedSemaphore b(2);
/// b.acquire(); b.release(); b.release();   // the second release throws
/// @endcode
/// @headerfile sync.hpp <mproc/sync.hpp>
class BoundedSemaphore : public Semaphore {
public:
    /// A semaphore holding `value` units, at most `value` ever.
    explicit BoundedSemaphore(std::uint32_t value = 1) : Semaphore(value, value) {}

private:
    template <class>
    friend struct detail::shared_handle;
    explicit BoundedSemaphore(std::shared_ptr<detail::semaphore_state> state) noexcept : Semaphore(std::move(state)) {}
};

namespace detail {
struct event_state {
    futex_word flag{0};
    futex_word waiters{0};
};
}  // namespace detail

/// A process-shared flag that processes wait on: set() wakes every waiter, clear() resets it.
/// @code
/// mproc::Event ready;
/// // child: ... ready.set();
/// if (!ready.wait_for(5s)) throw std::runtime_error("child never got ready");
/// @endcode
/// @headerfile sync.hpp <mproc/sync.hpp>
class Event {
public:
    /// A new, clear flag in its own shared mapping.
    Event() : state_(detail::make_shared_state<detail::event_state>()) {}

    /// Sets the flag and wakes every waiter.
    void set() noexcept {
        state_->flag.store(1, std::memory_order_seq_cst);
        detail::wake_waiters(state_->flag, state_->waiters);
    }
    /// Resets the flag; later waits block until the next set().
    void clear() noexcept { state_->flag.store(0, std::memory_order_seq_cst); }
    /// Whether the flag is set now (a snapshot).
    [[nodiscard]] bool is_set() const noexcept {
        return state_->flag.load(std::memory_order_acquire) != 0;
    }

    /// Blocks until the flag is set.
    void wait() { (void)wait_until(detail::Deadline::never()); }
    /// Waits at most `timeout`; returns whether the flag is set.
    template <class Rep, class Period>
    [[nodiscard]] bool wait_for(std::chrono::duration<Rep, Period> timeout) {
        return wait_until(detail::Deadline::after(timeout));
    }
    /// @cond
    [[nodiscard]] bool wait_until(const detail::Deadline& deadline) {
        auto& s = *state_;
        return detail::wait_until(
                   s.flag, s.waiters, [](std::uint32_t v) { return v != 0; }, deadline)
            .has_value();
    }
    /// @endcond

private:
    template <class>
    friend struct detail::shared_handle;
    explicit Event(std::shared_ptr<detail::event_state> state) noexcept : state_(std::move(state)) {}

    std::shared_ptr<detail::event_state> state_;
};

/// @cond
namespace detail {
template <>
struct shared_handle<Semaphore> : std::true_type {
    static void save(const Semaphore& s, handle_writer& w) { w.state(s.state_); }
    static Semaphore load(handle_reader& r) { return Semaphore(r.state<semaphore_state>()); }
};
template <>
struct shared_handle<BoundedSemaphore> : std::true_type {
    static void save(const BoundedSemaphore& s, handle_writer& w) { w.state(s.state_); }
    static BoundedSemaphore load(handle_reader& r) { return BoundedSemaphore(r.state<semaphore_state>()); }
};
template <>
struct shared_handle<Event> : std::true_type {
    static void save(const Event& e, handle_writer& w) { w.state(e.state_); }
    static Event load(handle_reader& r) { return Event(r.state<event_state>()); }
};
}  // namespace detail
/// @endcond

MPROC_NAMESPACE_END

// Barrier: process-shared, Python's threading.Barrier semantics, and a member that dies while
// waiting breaks it instead of hanging the others. Part of <mproc/sync.hpp>; include that header.
#pragma once

#include <mproc/detail/deadline.hpp>
#include <mproc/detail/futex.hpp>
#include <mproc/detail/robust_mutex.hpp>
#include <mproc/detail/shared_handle.hpp>
#include <mproc/detail/shm.hpp>
#include <mproc/error.hpp>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <new>
#include <optional>

MPROC_NAMESPACE_BEGIN

/// A Barrier is broken: abort() or reset() was called, a wait timed out, or a member died while
/// waiting. Every current and later wait() throws it until reset().
/// @headerfile sync.hpp <mproc/sync.hpp>
class BrokenBarrierError : public Error {
public:
    using Error::Error;
};

namespace detail {
struct barrier_state {
    enum phase_t : std::uint32_t { filling, draining, resetting, broken };

    explicit barrier_state(std::uint32_t n) : parties(n) {
        for (std::uint32_t i = 0; i < n; ++i) ::new (&slot(i)) robust_mutex();
    }
    // Slot i is held by the member that arrived i-th, for as long as it waits: the kernel marks
    // it owner-died if that member dies, which the others find when they check.
    robust_mutex& slot(std::uint32_t i) noexcept { return reinterpret_cast<robust_mutex*>(this + 1)[i]; }

    robust_mutex mutex;      // guards the fields below, except the two futex words
    futex_word changes{0};   // bumped at every phase change; waiters sleep on it
    futex_word waiters{0};
    std::uint32_t parties;
    std::uint32_t inside = 0;  // members of this round still inside wait()
    phase_t phase = filling;
};
static_assert(sizeof(barrier_state) % alignof(robust_mutex) == 0);

/// Test hook: when set, called inside Barrier::wait's critical section right after the caller
/// is counted in `inside` and before it takes its slot, so a test can kill a member at the one
/// moment when the count and the slots disagree. Null (one predictable branch) otherwise.
inline void (*barrier_counted_hook)() = nullptr;
}  // namespace detail

/// A process-shared barrier for `parties` members: each wait() blocks until `parties` of them
/// have called it, then all return together, and the barrier is ready for the next round.
///
/// Like Python's Barrier, a round drains before the next begins; a wait that times out, and
/// abort(), break the barrier, and every waiter then gets BrokenBarrierError until reset().
///
/// A member that dies *while waiting* is found by the others within about 10 ms (each waiter
/// holds a robust mutex slot; the kernel marks it when its holder dies, and waiters check the
/// slots whenever 10 ms pass without news), and the barrier breaks. A party that dies before it
/// reaches wait() cannot be told from a slow one: use wait_for(), or call abort() from the
/// process that watches the children when it sees one die.
/// @code
/// mproc::Barrier bar(4);
/// // in each of 4 processes:
/// std::size_t index = bar.wait();     // 0..3, in arrival order
/// @endcode
/// @headerfile sync.hpp <mproc/sync.hpp>
class Barrier {
public:
    /// A barrier for `parties` (at least 1) members.
    explicit Barrier(std::uint32_t parties)
        : state_(detail::make_shared_state<detail::barrier_state>(
              check(parties) * sizeof(detail::robust_mutex), parties)) {}

    /// Waits for the round to fill; returns this member's arrival index (0 .. parties - 1).
    /// @throws BrokenBarrierError when the barrier is or becomes broken.
    std::size_t wait() { return *wait_until(detail::Deadline::never()); }

    /// As wait(), for at most `timeout`. On a timeout after arriving, breaks the barrier (the
    /// round cannot complete correctly any more, as in Python) and returns nullopt.
    template <class Rep, class Period>
    [[nodiscard]] std::optional<std::size_t> wait_for(std::chrono::duration<Rep, Period> timeout) {
        return wait_until(detail::Deadline::after(timeout));
    }
    /// @cond
    [[nodiscard]] std::optional<std::size_t> wait_until(const detail::Deadline& deadline);
    /// @endcond

    /// Breaks the barrier: every waiter, now and later, gets BrokenBarrierError until reset().
    void abort() {
        guard g(*state_);
        break_locked();
    }
    /// Returns the barrier to its empty state; current waiters get BrokenBarrierError.
    void reset() {
        guard g(*state_);
        state_->phase = state_->inside > 0 ? detail::barrier_state::resetting
                                           : detail::barrier_state::filling;
        changed();
    }

    /// The number of members a round needs.
    [[nodiscard]] std::uint32_t parties() const noexcept { return state_->parties; }
    /// Members waiting in the current round (a snapshot).
    [[nodiscard]] std::uint32_t n_waiting() {
        guard g(*state_);
        return state_->phase == detail::barrier_state::filling ? state_->inside : 0;
    }
    /// Whether the barrier is broken (a snapshot); reset() mends it.
    [[nodiscard]] bool broken() {
        guard g(*state_);
        return state_->phase == detail::barrier_state::broken;
    }

private:
    using phase_t = detail::barrier_state::phase_t;

    // Takes the state mutex. A member that died holding it may have left the counts half
    // updated (counted in `inside` without a slot, or out of its slot but still counted), so
    // `inside` is counted again from the slots, and the barrier is broken.
    static void lock_state(detail::barrier_state& s) {
        if (s.mutex.lock() != detail::acquire_result::owner_died) return;
        recount_inside_locked(s);
        s.phase = phase_t::broken;
        s.changes.fetch_add(1, std::memory_order_seq_cst);
        detail::wake_waiters(s.changes, s.waiters);
    }
    static void recount_inside_locked(detail::barrier_state& s);

    class guard {
    public:
        explicit guard(detail::barrier_state& s) : s_(s) { lock_state(s_); }
        ~guard() { s_.mutex.unlock(); }
        guard(const guard&) = delete;
        guard& operator=(const guard&) = delete;

    private:
        detail::barrier_state& s_;
    };

    static std::uint32_t check(std::uint32_t parties) {
        if (parties == 0) throw StateError("mproc::Barrier: parties must be at least 1");
        return parties;
    }

    void changed() noexcept {
        state_->changes.fetch_add(1, std::memory_order_seq_cst);
        detail::wake_waiters(state_->changes, state_->waiters);
    }
    void break_locked() noexcept {
        if (state_->phase != detail::barrier_state::broken) {
            state_->phase = detail::barrier_state::broken;
            changed();
        }
    }
    void leave_locked() noexcept {
        auto& s = *state_;
        if (--s.inside == 0 && (s.phase == phase_t::draining || s.phase == phase_t::resetting)) {
            s.phase = phase_t::filling;
            changed();
        }
    }
    bool sleep_locked(const detail::Deadline& deadline);
    void check_members_locked();
    [[noreturn]] static void throw_broken() {
        throw BrokenBarrierError("mproc::Barrier: the barrier is broken (aborted, reset, timed "
                                 "out, or a member died while waiting)");
    }

    template <class>
    friend struct detail::shared_handle;
    explicit Barrier(std::shared_ptr<detail::barrier_state> state) noexcept : state_(std::move(state)) {}

    std::shared_ptr<detail::barrier_state> state_;
};

/// @cond
namespace detail {
template <>
struct shared_handle<Barrier> : std::true_type {
    static void save(const Barrier& b, handle_writer& w) { w.state(b.state_); }
    static Barrier load(handle_reader& r) {
        auto state = r.state<barrier_state>();
        // The member slots follow the state: the file must hold as many as it says.
        if (state->parties == 0 ||
            (handle_reader::room(state) - sizeof(barrier_state)) / sizeof(robust_mutex) < state->parties)
            throw DecodeError("mproc::Barrier: the handle's memory does not hold its members' slots");
        return Barrier(std::move(state));
    }
};
}  // namespace detail
/// @endcond

// Called and returns with the state mutex held; sleeps without it until the phase may have
// changed, at most 10 ms at a time, checking the members' slots after each quiet slice.
// Returns false once the deadline has passed.
inline bool Barrier::sleep_locked(const detail::Deadline& deadline) {
    auto& s = *state_;
    const std::uint32_t seen = s.changes.load(std::memory_order_seq_cst);
    s.mutex.unlock();
    std::optional<std::uint32_t> news;
    try {
        news = detail::wait_until(
            s.changes, s.waiters, [seen](std::uint32_t v) { return v != seen; },
            detail::bounded_slice(deadline, std::chrono::milliseconds(10)));
    } catch (...) {
        lock_state(s);  // our caller's guard releases it
        throw;
    }
    lock_state(s);
    if (!news) check_members_locked();
    return !deadline.expired();
}

// Tries every slot: one whose holder died comes back as owner_died (and is then ours, so we
// release it). A free slot is released at once; a busy one has a live holder; our own says
// "held". Under the state mutex, holding a slot and being counted in `inside` go together (both
// change in one critical section), so a dead holder is also counted out here, and the round can
// drain and reset() can work. Only a death while the round fills breaks the barrier: a member
// that dies after its round was released (draining) or reset was no longer waiting.
inline void Barrier::check_members_locked() {
    auto& s = *state_;
    for (std::uint32_t i = 0; i < s.parties; ++i) {
        const auto r = s.slot(i).try_lock();
        if (r == detail::acquire_result::acquired || r == detail::acquire_result::owner_died)
            s.slot(i).unlock();
        if (r == detail::acquire_result::owner_died) {
            if (s.phase == phase_t::filling) break_locked();
            leave_locked();
        }
    }
}

// After a member died holding the state mutex. Outside the critical section, a member is
// counted in `inside` exactly while it holds its slot (the last arrival takes none, but it
// leaves within the same critical section), so the live holders are the true count: a busy
// slot or our own ("held") is a live member; a free one is nobody; a dead holder's is taken
// over and released, which also spares check_members_locked from counting it out again.
inline void Barrier::recount_inside_locked(detail::barrier_state& s) {
    std::uint32_t live = 0;
    for (std::uint32_t i = 0; i < s.parties; ++i) {
        const auto r = s.slot(i).try_lock();
        if (r == detail::acquire_result::acquired || r == detail::acquire_result::owner_died)
            s.slot(i).unlock();
        else
            ++live;
    }
    s.inside = live;
}

/// @cond
inline std::optional<std::size_t> Barrier::wait_until(const detail::Deadline& deadline) {
    auto& s = *state_;
    guard g(s);
    while (s.phase == phase_t::draining || s.phase == phase_t::resetting)
        if (!sleep_locked(deadline)) return std::nullopt;  // not counted yet: nothing to undo
    if (s.phase == phase_t::broken) throw_broken();

    const std::uint32_t index = s.inside++;
    if (detail::barrier_counted_hook) [[unlikely]]
        detail::barrier_counted_hook();
    if (s.inside == s.parties) {  // the last arrival releases the round
        s.phase = phase_t::draining;
        changed();
        leave_locked();
        return index;
    }
    auto& slot = s.slot(index);
    // Every member of the previous round released its slot before leaving, and this round
    // began only after they all left: the slot is free, or its holder died.
    if (slot.try_lock() == detail::acquire_result::busy) {
        break_locked();
        leave_locked();
        throw StateError("mproc::Barrier: member slot still held (internal error)");
    }
    bool timed_out = false;
    while (s.phase == phase_t::filling && !timed_out) timed_out = !sleep_locked(deadline);
    if (s.phase == phase_t::filling) break_locked();  // timed out: Python breaks it too
    const bool released = s.phase == phase_t::draining;
    slot.unlock();
    leave_locked();
    if (released) return index;
    if (timed_out) return std::nullopt;
    throw_broken();
}
/// @endcond

MPROC_NAMESPACE_END

// The queue's consumer side (get, free, drop of dead holders) and the whole-queue operations
// (close, full, task_done, join). Part of queue_ring.hpp, which includes it at its end.
#pragma once

#include <mproc/detail/queue_ring.hpp>

#include <chrono>
#include <climits>
#include <span>

MPROC_NAMESPACE_BEGIN
namespace detail {

template <class Consume>
bool queue_ring::get(const Deadline& deadline, Consume&& consume) {
    queue_memory& m = mem();
    queue_control& c = ctl();
    const std::uint32_t me = holder_id();
    stall_watch watch;
    for (;;) {
        const std::uint64_t head = c.head.load(std::memory_order_acquire);
        const std::uint64_t pos = qpos(head);
        queue_slot& s = m.slot(pos);
        std::uint64_t state = s.state.load(std::memory_order_acquire);
        const auto changed = [&] {
            return s.state.load(std::memory_order_acquire) != state ||
                   c.head.load(std::memory_order_acquire) != head ||
                   c.closed.load(std::memory_order_acquire) != 0;
        };
        if (qpos(state) != pos) {  // nothing claimed at the head yet (or our head is stale)
            if (qpos(c.tail.load(std::memory_order_acquire)) != pos) continue;
            if (c.closed.load(std::memory_order_acquire))
                throw EndOfStream("mproc::Queue: get() on a closed queue that is drained");
            if (!sleep(c.data_event, c.get_waiters, deadline, std::chrono::milliseconds(100), changed)) return false;
            continue;
        }
        switch (status_of(state)) {
        case slot_status::ready:
            if (!s.state.compare_exchange_strong(state, slot_state(pos, slot_status::reading, me),
                                                 std::memory_order_acq_rel))
                continue;
            {
                __builtin_prefetch(&m.slot(pos + prefetch_distance), 1);
                advance_head(head, s);
                struct release {
                    queue_ring& ring;
                    queue_slot& s;
                    std::uint64_t pos;
                    ~release() { ring.free_record(s, pos); }
                } on_exit{*this, s, pos};
                queue_fault(queue_point::get_claimed);
                const std::uint64_t length = s.length;
                const std::uint64_t spill = s.spill.load(std::memory_order_acquire);
                const std::byte* from = spill ? m.spill_block(spill)
                                        : length <= queue_slot::inline_bytes ? s.inline_data
                                                                             : m.cell(pos);
                consume(std::span<const std::byte>(from, length));
                queue_fault(queue_point::get_consumed);
            }
            return true;
        case slot_status::writing:
            if (watch.holder_dead(state, c.registry, deadline.expired())) {
                drop(pos, state);
                continue;
            }
            if (!sleep(c.data_event, c.get_waiters, deadline, std::chrono::milliseconds(5), changed)) return false;
            continue;
        default:  // taken or freed by another consumer whose head move we have not seen
            advance_head(head, s);
            continue;
        }
    }
}

inline void queue_ring::free_record(queue_slot& s, std::uint64_t pos) noexcept {
    // The spill block goes first: once the state says freed, the slot may be claimed again.
    // (Loaded before the exchange: only a record's holder frees it, and most have no block.)
    if (s.spill.load(std::memory_order_relaxed) != 0)
        if (const std::uint64_t spill = s.spill.exchange(0, std::memory_order_acq_rel)) mem().spill_release(spill);
    s.state.store(slot_state(pos, slot_status::freed, 0), std::memory_order_seq_cst);
    // The reclaim cursor is left to producers, which move it in batches when they run short,
    // unless one sleeps: then this consumer moves it and wakes it if it can go on.
    queue_control& c = ctl();
    if (c.put_waiters.load(std::memory_order_seq_cst) == 0) return;
    std::uint64_t ignored;
    const std::uint64_t reclaim = advance_reclaim(ignored);
    std::uint64_t target = c.space_target.load(std::memory_order_seq_cst);
    if (c.maxsize != 0 || reached(reclaim, target)) {
        // A CAS, not a store: a target lowered meanwhile by a producer about to sleep stays.
        c.space_target.compare_exchange_strong(target, qadd(reclaim, queue_pos_mask / 2 - 1),
                                               std::memory_order_seq_cst);
        c.space_event.fetch_add(1, std::memory_order_seq_cst);
        futex_wake(c.space_event);
    }
}

inline void queue_ring::drop(std::uint64_t pos, std::uint64_t state) {
    queue_control& c = ctl();
    queue_slot& s = mem().slot(pos);
    std::uint64_t span = s.span.load(std::memory_order_acquire);
    // A producer that died before storing its span held one cell: the tail has not passed it.
    if (qpos(span) != pos) s.span.compare_exchange_strong(span, qpack(pos, 1), std::memory_order_acq_rel);
    // Take the record over as its reader, so a death of ours here is handled the same way.
    if (!s.state.compare_exchange_strong(state, slot_state(pos, slot_status::reading, holder_id()),
                                         std::memory_order_acq_rel))
        return;
    c.dropped.fetch_add(1, std::memory_order_acq_rel);
    free_record(s, pos);
    c.done.fetch_add(1, std::memory_order_seq_cst);  // a dropped item can never be task_done()
    if (c.join_waiters.load(std::memory_order_seq_cst) != 0) futex_wake(c.done);
    notify(c.data_event, c.get_waiters);
}

inline void queue_ring::close() noexcept {
    queue_control& c = ctl();
    c.closed.store(1, std::memory_order_seq_cst);
    for (futex_word* event : {&c.data_event, &c.space_event}) {
        event->fetch_add(1, std::memory_order_seq_cst);
        futex_wake(*event);
    }
}

inline bool queue_ring::full() const noexcept {
    const queue_control& c = ctl();
    if (c.maxsize != 0) return qsize() >= c.maxsize;
    const std::uint64_t tail = qpos(c.tail.load(std::memory_order_acquire));
    return ((qadd(tail, 1) - c.reclaim.load(std::memory_order_acquire)) & queue_pos_mask) > mem().cells();
}

inline void queue_ring::task_done() {
    queue_control& c = ctl();
    std::uint32_t done = c.done.load(std::memory_order_acquire);
    do {
        if (((qlow(c.tail.load(std::memory_order_acquire)) - done) & queue_low_mask) == 0)
            throw StateError("mproc::JoinableQueue: task_done() called more times than items were put");
    } while (!c.done.compare_exchange_weak(done, done + 1, std::memory_order_seq_cst));
    if (c.join_waiters.load(std::memory_order_seq_cst) != 0) futex_wake(c.done);
}

inline bool queue_ring::join(const Deadline& deadline) {
    queue_control& c = ctl();
    const auto finished = [&](std::uint32_t done) {
        return ((qlow(c.tail.load(std::memory_order_seq_cst)) - done) & queue_low_mask) == 0;
    };
    for (;;) {
        // Sliced: a dropped record counts as done a moment before the tail counts it as put,
        // and an item held by a dead consumer is found only by looking.
        if (wait_until(c.done, c.join_waiters, finished, bounded_slice(deadline, std::chrono::milliseconds(50))))
            return true;
        if (deadline.expired()) return false;
        drop_dead_readers();
    }
}

inline void queue_ring::drop_dead_readers() {
    queue_control& c = ctl();
    const std::uint64_t head = qpos(c.head.load(std::memory_order_acquire));
    std::uint64_t pos = c.reclaim.load(std::memory_order_acquire);
    for (std::uint64_t walked = 0; pos != head && walked < mem().cells();) {
        const queue_slot& s = mem().slot(pos);
        const std::uint64_t state = s.state.load(std::memory_order_acquire);
        const std::uint64_t span = s.span.load(std::memory_order_acquire);
        if (qpos(state) != pos || qpos(span) != pos) return;  // the ring moved on under us
        if (status_of(state) == slot_status::reading && c.registry.holder_dead(holder_of(state)))
            drop(pos, state);
        pos = qadd(pos, qlow(span));
        walked += qlow(span);
    }
}

}  // namespace detail
MPROC_NAMESPACE_END

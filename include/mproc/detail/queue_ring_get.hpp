// The queue's consumer side (get, free, drop of dead holders) and the whole-queue operations
// (close, full, task_done, join). Part of queue_ring.hpp, which includes it at its end.
#pragma once

#include <mproc/detail/queue_ring.hpp>

#include <chrono>
#include <algorithm>
#include <climits>
#include <span>

MPROC_NAMESPACE_BEGIN
namespace detail {

template <class Consume>
std::size_t queue_ring::get(const Deadline& deadline, Consume&& consume, std::size_t max) {
    if (const std::size_t taken = get_ready(consume, max)) return taken;
    return get_waiting(deadline, consume, max);
}

template <class Consume>
std::size_t queue_ring::get_ready(Consume& consume, std::size_t max, head_mark& seen) {
    // The short way: the record at the head is ready, and this process has its id.
    const std::uint64_t me = shared_->me.load(std::memory_order_relaxed);
    const std::uint64_t head = ctl().head.load(std::memory_order_acquire);
    queue_slot& s = mem().slot(qpos(head));
    const std::uint64_t state = s.state.load(std::memory_order_acquire);
    seen = head_mark{head, state};
    if (me >> 32 == static_cast<std::uint64_t>(current_pid()) && qpos(state) == qpos(head) &&
        status_of(state) == slot_status::ready && claim_ready(s, qpos(head), state, static_cast<std::uint32_t>(me)))
        return take(s, qpos(head), head, state, static_cast<std::uint32_t>(me), consume, max);
    return 0;
}

inline bool queue_ring::claim_ready(queue_slot& s, std::uint64_t pos, std::uint64_t state, std::uint32_t me) noexcept {
    // seq_cst: the claim and the read of put_waiters after it pair with a sleeping producer's
    // count-in and re-read (see the top of queue_ring.hpp).
    return s.state.compare_exchange_strong(state, slot_state(pos, slot_status::reading, in_slot_of(state) | me),
                                           std::memory_order_seq_cst);
}

template <class Consume>
std::size_t queue_ring::take(queue_slot& s, std::uint64_t pos, std::uint64_t head, std::uint64_t state,
                             std::uint32_t me, Consume& consume, std::size_t max) {
    if (max <= 1) return take_one(s, pos, head, state, consume);
    queue_memory& m = mem();
    queue_control& c = ctl();
    held records[batch_max];
    records[0] = hold(s, pos, state);
    std::uint64_t end = qadd(pos, span_cells(records[0].span));
    std::size_t count = 1;
    // The batch: the records ready right behind, each claimed (and so named) before the head
    // moves past them all at once. A record published this lap sits below the tail. While the
    // head is ours no other consumer reaches them, their producers are done with them and a
    // drop takes only records being written or read: a store claims each (see claim_more for
    // why not a CAS), and one full barrier after the last stands for the CASes' barriers.
    for (const std::size_t limit = std::min(max, batch_max); count < limit; ++count) {
        queue_slot& next = m.slot(end);
        const std::uint64_t next_state = next.state.load(std::memory_order_acquire);
        if (qpos(next_state) != end || status_of(next_state) != slot_status::ready) break;
        next.state.store(slot_state(end, slot_status::reading, in_slot_of(next_state) | me), std::memory_order_release);
        queue_fault(queue_point::get_many_claimed);
        records[count] = hold(next, end, next_state);
        end = qadd(end, span_cells(records[count].span));
    }
    if (count > 1) full_barrier_after(*records[count - 1].slot);
    const bool putters_sleep = c.put_waiters.load(std::memory_order_seq_cst) != 0;
    queue_fault(queue_point::get_claimed);
    c.head.store(qpack(end, qlow(head) + count), std::memory_order_release);
    prefetch_published(records[count - 1].pos);
    // Frees the records not yet freed, also when consume throws.
    struct release {
        queue_ring& ring;
        held* records;
        std::size_t next, count;
        bool putters_sleep;
        void one() noexcept {
            const held& r = records[next++];
            ring.free_record(*r.slot, r.pos, r.in_slot, r.span, putters_sleep);
        }
        ~release() {
            while (next < count) one();
        }
    } freeing{*this, records, 0, count, putters_sleep};
    queue_fault(queue_point::get_moved);
    while (freeing.next < count) {
        consume(bytes_of(records[freeing.next]));
        queue_fault(queue_point::get_consumed);
        freeing.one();
    }
    return count;
}

template <class Consume>
std::size_t queue_ring::take_one(queue_slot& s, std::uint64_t pos, std::uint64_t head, std::uint64_t state,
                                 Consume& consume) {
    queue_control& c = ctl();
    const held r = hold(s, pos, state);
    const bool putters_sleep = c.put_waiters.load(std::memory_order_seq_cst) != 0;
    queue_fault(queue_point::get_claimed);
    c.head.store(qpack(qadd(pos, span_cells(r.span)), qlow(head) + 1), std::memory_order_release);
    prefetch_published(pos);
    struct release {  // frees the record also when consume throws
        queue_ring& ring;
        const held& r;
        bool putters_sleep;
        ~release() { ring.free_record(*r.slot, r.pos, r.in_slot, r.span, putters_sleep); }
    } freeing{*this, r, putters_sleep};
    queue_fault(queue_point::get_moved);
    consume(bytes_of(r));
    queue_fault(queue_point::get_consumed);
    return 1;
}

inline std::span<const std::byte> queue_ring::bytes_of(const held& r) const noexcept {
    if (r.in_slot) return {reinterpret_cast<const std::byte*>(&r.word), r.length};
    const queue_memory& m = mem();
    const queue_cell_header& h = m.header(r.pos);
    const std::byte* from = m.cell(r.pos) + queue_header_bytes;
    if (span_spilled(r.span)) from = m.spill_block(atomic_word(h.spill).load(std::memory_order_relaxed));
    return {from, h.length};
}

template <class Consume>
std::size_t queue_ring::get_waiting(const Deadline& deadline, Consume& consume, std::size_t max) {
    queue_memory& m = mem();
    queue_control& c = ctl();
    const std::uint32_t me = holder_id();
    stall_watch watch;
    for (;;) {
        const std::uint64_t head = c.head.load(std::memory_order_acquire);
        const std::uint64_t pos = qpos(head);
        queue_slot& s = m.slot(pos);
        std::uint64_t state = s.state.load(std::memory_order_acquire);
        // seq_cst: after counting itself in, a sleeper re-reads the slot that a producer's claim
        // changes (see the top of queue_ring.hpp).
        const auto changed = [&] {
            return s.state.load(std::memory_order_seq_cst) != state ||
                   c.head.load(std::memory_order_acquire) != head ||
                   c.closed.load(std::memory_order_acquire) != 0;
        };
        if (qpos(state) != pos) {  // nothing claimed at the head yet (or our head is stale)
            if (qpos(c.tail.load(std::memory_order_acquire)) != pos) continue;
            if (c.closed.load(std::memory_order_acquire))
                throw EndOfStream("mproc::Queue: get() on a closed queue that is drained");
            if (!sleep(bell().data_event, bell().get_waiters, deadline, std::chrono::milliseconds(100), changed)) return 0;
            continue;
        }
        switch (status_of(state)) {
        case slot_status::ready:
            if (!claim_ready(s, pos, state, me)) continue;
            return take(s, pos, head, state, me, consume, max);
        case slot_status::writing:
            if (watch.holder_dead(state, c.registry, deadline.expired())) {
                drop(pos, state);
                continue;
            }
            // Its producer publishes within nanoseconds unless preempted or copying a big
            // message; a short slice bounds what a wake-up missed in the race costs.
            if (!sleep(bell().data_event, bell().get_waiters, deadline, std::chrono::milliseconds(1), changed)) return 0;
            continue;
        case slot_status::reading:
            if (watch.holder_dead(state, c.registry, deadline.expired())) {
                drop(pos, state);
                continue;
            }
            if (deadline.expired()) return 0;
            watch.pause(state, deadline);
            continue;
        default:  // freed by a drop that has not moved the head yet, or our head is stale
            if (c.head.load(std::memory_order_acquire) == head) advance_head(head, state, s);
            continue;
        }
    }
}

inline void queue_ring::free_record(queue_slot& s, std::uint64_t pos, std::uint32_t in_slot, std::uint64_t span,
                                    bool putters_sleep, bool after_death) noexcept {
    // The spill block goes first: once the state says freed, the slot may be claimed again.
    if (in_slot) {
        s.word = 0;  // never left holding bytes that could pass for a span (see drop)
    } else if (span_spilled(span)) {
        mem().spill_release(pos, after_death);
    }
    s.state.store(slot_state(pos, slot_status::freed, in_slot), std::memory_order_release);
    // The reclaim cursor is left to producers, which move it in batches when they run short,
    // unless one sleeps: then this consumer moves it and wakes it if it can go on.
    queue_control& c = ctl();
    if (!putters_sleep && c.put_waiters.load(std::memory_order_seq_cst) == 0) return;
    // Reclaim never passes the head: until the head reaches what the sleeper waits for, moving
    // the shared cursor on every get would only slow this consumer down.
    if (c.maxsize == 0 && !reached(qpos(c.head.load(std::memory_order_seq_cst)), c.space_target.load(std::memory_order_seq_cst)))
        return;
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
    queue_slot& s = mem().slot(pos);
    const std::uint32_t in_slot = in_slot_of(state);
    std::uint64_t span = qpack(pos, 1);
    if (!in_slot) {
        // A producer that died before storing its span held one cell: it had not moved the
        // tail. (The word is a span or 0, never message bytes: see free_record.)
        std::atomic_ref<std::uint64_t> word = atomic_word(s.word);
        std::uint64_t seen = word.load(std::memory_order_acquire);
        const auto valid = [&](std::uint64_t w) { return qpos(w) == pos && span_cells(w) != 0; };
        if (valid(seen) || !word.compare_exchange_strong(seen, span, std::memory_order_acq_rel)) span = seen;
    }
    (void)discard(pos, state, span, true);
}

inline void queue_ring::give_up(std::span<const claimed> records) noexcept {
    for (const claimed& record : records) {
        const std::uint64_t state = record.slot->state.load(std::memory_order_acquire);
        const std::uint64_t span = in_slot_of(state) ? qpack(record.pos, 1)
                                                     : atomic_word(record.slot->word).load(std::memory_order_acquire);
        (void)discard(record.pos, state, span, false);
    }
}

inline bool queue_ring::discard(std::uint64_t pos, std::uint64_t state, std::uint64_t span, bool dropped) noexcept {
    queue_control& c = ctl();
    queue_slot& s = mem().slot(pos);
    const std::uint32_t in_slot = in_slot_of(state);
    const std::uint64_t cells = span_cells(span);
    // Where its holder died before moving the tail (a producer) or the head (a consumer).
    skip_record(c.tail, pos, cells);
    // Take the record over as its reader, so a death of ours here is handled the same way.
    std::uint32_t me = 0;
    try {
        me = holder_id();
    } catch (...) {
        return false;  // no registry entry left for us: leave it to a process that has one
    }
    if (!s.state.compare_exchange_strong(state, slot_state(pos, slot_status::reading, in_slot | me),
                                         std::memory_order_acq_rel))
        return false;
    if (dropped) c.dropped.fetch_add(1, std::memory_order_acq_rel);
    skip_record(c.head, pos, cells);
    free_record(s, pos, in_slot, span, true, dropped);
    queue_control& b = bell();
    b.done.fetch_add(1, std::memory_order_seq_cst);  // a discarded item can never be task_done()
    if (b.join_waiters.load(std::memory_order_seq_cst) != 0) futex_wake(b.done);
    notify(b.data_event, b.get_waiters);
    return true;
}

inline void queue_ring::close() noexcept {
    queue_control& c = ctl();
    c.closed.store(1, std::memory_order_seq_cst);
    for (futex_word* event : {&bell().data_event, &c.space_event}) {
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

inline std::uint64_t queue_ring::drop_dead_readers() {
    std::uint64_t dropped = 0;
    queue_control& c = ctl();
    const std::uint64_t head = qpos(c.head.load(std::memory_order_acquire));
    std::uint64_t pos = c.reclaim.load(std::memory_order_acquire);
    // Up to the record at the head too: its consumer may have died before moving the head.
    for (std::uint64_t walked = 0; walked < mem().cells();) {
        const queue_slot& s = mem().slot(pos);
        const std::uint64_t state = s.state.load(std::memory_order_acquire);
        // The ring moved on under us, or the head's record is still being written (its span
        // may not be known yet).
        if (qpos(state) != pos || status_of(state) == slot_status::writing) return dropped;
        const std::uint64_t cells = record_cells(s, state);
        if (status_of(state) == slot_status::reading && c.registry.holder_dead(holder_of(state))) {
            drop(pos, state);
            ++dropped;
        }
        if (pos == head) return dropped;
        pos = qadd(pos, cells);
        walked += cells;
    }
    return dropped;
}

}  // namespace detail
MPROC_NAMESPACE_END

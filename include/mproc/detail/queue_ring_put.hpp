// The queue's producer side (claim, publish, room, reclaim, waiting for the tail). Part of
// queue_ring.hpp, which includes it at its end.
#pragma once

#include <mproc/detail/queue_ring.hpp>

#include <sched.h>

#include <atomic>
#include <chrono>
#include <algorithm>
#include <exception>
#include <optional>
#include <string>
#include <utility>

MPROC_NAMESPACE_BEGIN
namespace detail {

inline std::optional<queue_ring::claimed> queue_ring::claim_in_slot(std::uint64_t length) noexcept {
    if (length > queue_slot::inline_bytes) return std::nullopt;
    queue_control& c = ctl();
    const std::uint64_t me = shared_->me.load(std::memory_order_relaxed);
    if (me >> 32 != static_cast<std::uint64_t>(current_pid()) || c.closed.load(std::memory_order_acquire)) return std::nullopt;
    const std::uint64_t tail = c.tail.load(std::memory_order_acquire);
    const std::uint64_t pos = qpos(tail);
    queue_slot& s = mem().slot(pos);
    std::uint64_t state = s.state.load(std::memory_order_acquire);
    const std::uint64_t reclaim = shared_->reclaim_seen.load(std::memory_order_acquire);
    if (!before(qpos(state), pos) || ((qadd(pos, 1) - reclaim) & queue_pos_mask) > mem().cells() ||
        (c.maxsize != 0 && ((qlow(tail) - qlow(c.head.load(std::memory_order_acquire))) & queue_low_mask) >= c.maxsize))
        return std::nullopt;
    // The same claim as claim()'s (see there for the orders).
    if (!s.state.compare_exchange_strong(state, slot_state(pos, slot_status::writing, queue_in_slot | static_cast<std::uint32_t>(me)),
                                         std::memory_order_seq_cst))
        return std::nullopt;
    const bool getters_sleep = bell().get_waiters.load(std::memory_order_seq_cst) != 0;
    queue_fault(queue_point::put_claimed);
    queue_fault(queue_point::put_spanned);
    c.tail.store(qpack(qadd(pos, 1), qlow(tail) + 1), std::memory_order_release);
    if (((qadd(pos, 1 + prefetch_distance) - reclaim) & queue_pos_mask) < mem().cells())
        prefetch_for_write(&mem().slot(pos + 1 + prefetch_distance));
    return claimed{&s, pos, reinterpret_cast<std::byte*>(&s.word), queue_in_slot | static_cast<std::uint32_t>(length),
                   getters_sleep};
}

inline queue_ring::record_shape queue_ring::shape(std::uint64_t length) const noexcept {
    if (length <= queue_slot::inline_bytes) return {1, true, false};
    const std::uint64_t cells = (length + queue_header_bytes + queue_memory::cell_bytes - 1) / queue_memory::cell_bytes;
    // A spilled record takes one cell, and its block only once the record is claimed: a block
    // is never held by a process alone, where a death would lose it (see queue_memory.hpp).
    if (cells > mem().cells() / 2 || cells > queue_max_cells) return {1, false, true};
    return {cells, false, false};
}

inline std::size_t queue_ring::claim(std::span<const std::uint64_t> lengths, claimed* out, const Deadline& deadline) {
    queue_memory& m = mem();
    queue_control& c = ctl();
    const std::uint64_t length = lengths[0];
    const record_shape first = shape(length);
    const bool in_slot = first.in_slot, spilled = first.spilled;
    const std::uint64_t cells = first.cells;
    if (spilled && !m.spill_fits(length)) spill_full(length);
    const std::uint32_t me = holder_id();
    stall_watch watch;
    bool looked_for_dead_readers = false;
    for (;;) {
        if (c.closed.load(std::memory_order_acquire)) throw EndOfStream("mproc::Queue: put() on a closed queue");
        const std::uint64_t tail = c.tail.load(std::memory_order_acquire);
        const std::uint64_t pos = qpos(tail);
        queue_slot& s = m.slot(pos);
        std::uint64_t state = s.state.load(std::memory_order_acquire);
        if (qpos(state) == pos) {  // claimed, and its producer has not moved the tail yet
            if (!wait_for_tail(tail, state, watch, deadline)) return 0;
            continue;
        }
        // A slot newer than our tail means the tail we read is laps old: read it again.
        if (((pos - qpos(state)) & queue_pos_mask) >= queue_pos_mask / 2) continue;
        std::uint64_t oldest_pos = 0, oldest_state = 0;
        const room_status why = room(tail, cells, oldest_pos, oldest_state);
        if (why == room_status::room) {
            // seq_cst: the claim and the read of get_waiters after it pair with a sleeping
            // consumer's count-in and re-read of this slot (see the top of this file).
            const std::uint32_t flag = in_slot ? queue_in_slot : 0;
            if (!s.state.compare_exchange_strong(state, slot_state(pos, slot_status::writing, flag | me),
                                                 std::memory_order_seq_cst))
                continue;
            const bool getters_sleep = bell().get_waiters.load(std::memory_order_seq_cst) != 0;
            queue_fault(queue_point::put_claimed);
            std::byte* to = reinterpret_cast<std::byte*>(&s.word);
            if (!in_slot) {
                m.header(pos).length = length;
                to = m.cell(pos) + queue_header_bytes;
                if (!spilled) {
                    atomic_word(s.word).store(qpack(pos, cells), std::memory_order_release);
                } else if (const std::uint64_t block = take_spill_block(pos, state, length)) {
                    to = m.spill_block(block);  // span stored too
                } else {
                    // Unclaimed. Blocks held by consumers that died holding their records come
                    // back when the ring comes round to them, or now, once, before giving up.
                    if (std::exchange(looked_for_dead_readers, true) || drop_dead_readers() == 0)
                        spill_full(length);
                    continue;
                }
            }
            out[0] = claimed{&s, pos, to, in_slot ? queue_in_slot | static_cast<std::uint32_t>(length) : 0, getters_sleep};
            std::uint64_t end = qadd(pos, cells);
            const std::size_t count = spilled ? 1 : claim_more(lengths, out, tail, end, me);
            // Read again after the batch's last claim, behind a full barrier (as the first
            // claim's CAS was): a consumer that came to sleep on a record of the batch meanwhile
            // is seen.
            if (count > 1) {
                full_barrier_after(*out[count - 1].slot);
                const bool sleeping = bell().get_waiters.load(std::memory_order_seq_cst) != 0;
                for (std::size_t i = 0; i < count; ++i) out[i].getters_sleep = sleeping;
            }
            queue_fault(queue_point::put_spanned);
            c.tail.store(qpack(end, qlow(tail) + count), std::memory_order_release);
            // The next slots are this producer's to claim soon: start taking their lines now.
            // Only slots already reclaimed: taking a line a consumer still reads slows both.
            if (((qadd(end, prefetch_distance) - shared_->reclaim_seen.load(std::memory_order_relaxed)) &
                 queue_pos_mask) < m.cells())
                prefetch_for_write(&m.slot(end + prefetch_distance));
            return count;
        }
        // A consumer that died holding the oldest record must not keep the ring full.
        const bool held = why == room_status::ring_full && qpos(oldest_state) == oldest_pos &&
                          status_of(oldest_state) == slot_status::reading;
        if (held && watch.holder_dead(oldest_state, c.registry, deadline.expired())) {
            drop(oldest_pos, oldest_state);
            continue;
        }
        const std::uint64_t seen_head = c.head.load(std::memory_order_seq_cst);
        const std::uint64_t head_state = m.slot(qpos(seen_head)).state.load(std::memory_order_seq_cst);
        // Ring full: wait until a sixteenth of the ring is free beyond what this record needs.
        const std::uint64_t target = qadd(qpos(tail), cells + m.cells() / 16 - m.cells());
        if (why == room_status::ring_full) lower_space_target(target);
        queue_fault(queue_point::put_waiting);
        // Short slices: a free stored just as we counted ourselves in may go unseen by its
        // consumer (see the top of this file).
        const bool slept = sleep(c.space_event, c.put_waiters, deadline, std::chrono::milliseconds(5), [&] {
            if (c.closed.load(std::memory_order_acquire) != 0) return true;
            if (why == room_status::bound_full)
                return c.head.load(std::memory_order_seq_cst) != seen_head ||
                       m.slot(qpos(seen_head)).state.load(std::memory_order_seq_cst) != head_state;
            if (c.tail.load(std::memory_order_acquire) != tail) return true;
            // The head first: reclaim never passes it, and walking the slots at the consumers'
            // heels would pull the lines they are freeing away from them.
            std::uint64_t ignored;
            return reached(qpos(c.head.load(std::memory_order_acquire)), target) &&
                   reached(advance_reclaim(ignored), target);
        });
        if (!slept) return 0;
    }
}

inline std::size_t queue_ring::claim_more(std::span<const std::uint64_t> lengths, claimed* out, std::uint64_t tail,
                                          std::uint64_t& end, std::uint32_t me) noexcept {
    queue_memory& m = mem();
    queue_control& c = ctl();
    // Room as claim() last saw it (the reclaim cursor and the head only move forward, so what
    // fitted then fits now): no shared cursor is read again for the batch.
    const std::uint64_t reclaim = shared_->reclaim_seen.load(std::memory_order_acquire);
    std::uint64_t records_left = lengths.size();
    if (c.maxsize != 0)
        records_left = c.maxsize - ((qlow(tail) - qlow(c.head.load(std::memory_order_acquire))) & queue_low_mask);
    std::size_t count = 1;
    for (; count < lengths.size() && count < records_left; ++count) {
        const record_shape next = shape(lengths[count]);
        // A spilled message goes in a claim of its own: its block may have to be waited for.
        if (next.spilled || ((qadd(end, next.cells) - reclaim) & queue_pos_mask) > m.cells()) break;
        queue_slot& s = m.slot(end);
        // Free this lap: reclaimed, so no one but a producer at the tail claims it, and the tail
        // is still ours. (A failed check cannot happen then; stopping is always safe.) So a
        // store claims it: no one else writes this state until the tail passes it, and a CAS
        // here would stall on each line the consumers just freed, one after the other (half
        // of a batch's time on 2 cores). The caller's barrier after the batch stands for the
        // full barrier a CAS was.
        if (!before(qpos(s.state.load(std::memory_order_acquire)), end)) break;
        const std::uint32_t flag = next.in_slot ? queue_in_slot : 0;
        s.state.store(slot_state(end, slot_status::writing, flag | me), std::memory_order_release);
        queue_fault(queue_point::put_many_claimed);
        std::byte* to = reinterpret_cast<std::byte*>(&s.word);
        if (!next.in_slot) {
            m.header(end).length = lengths[count];
            to = m.cell(end) + queue_header_bytes;
            // Before the next claim (a full barrier): a record found claimed with no span is
            // always the batch's last, so a drop that takes it for one cell loses nothing.
            atomic_word(s.word).store(qpack(end, next.cells), std::memory_order_release);
        }
        out[count] = claimed{&s, end, to, next.in_slot ? queue_in_slot | static_cast<std::uint32_t>(lengths[count]) : 0,
                             false};
        end = qadd(end, next.cells);
    }
    return count;
}

template <class Write>
std::size_t queue_ring::put_many(std::span<const std::uint64_t> lengths, Write&& write, const Deadline& deadline) {
    claimed records[batch_max];
    std::size_t put = 0;
    while (put < lengths.size()) {
        const std::span<const std::uint64_t> pass = lengths.subspan(put, std::min(batch_max, lengths.size() - put));
        std::size_t count = 0;
        if (pass.size() == 1)
            if (const std::optional<claimed> record = claim_in_slot(pass[0])) {
                records[0] = *record;
                count = 1;
            }
        if (count == 0) count = claim(pass, records, deadline);
        if (count == 0) return put;
        for (std::size_t i = 0; i < count; ++i) {
            bool written = false;
            try {
                written = write(put + i, records[i].to);
            } catch (...) {
                written_up_to(records, i, count);
                throw;
            }
            if (!written) {
                written_up_to(records, i, count);
                throw Error("mproc::Queue: the value encoded to another size than mproc::encoded_size said "
                            "(does its codec depend on something that changed meanwhile?)");
            }
        }
        publish(std::span<const claimed>(records, count));
        put += count;
    }
    return put;
}

inline std::uint64_t queue_ring::take_spill_block(std::uint64_t pos, std::uint64_t unclaimed, std::uint64_t length) {
    std::exception_ptr failure;
    try {
        if (const std::uint64_t block = mem().spill_allocate(pos, length)) [[likely]]
            return block;
    } catch (...) {
        failure = std::current_exception();
    }
    // No block: the claim is undone, as if it had never been made. Nothing has moved past it
    // (the tail is still here), and while its holder lives no one else changes a claimed slot:
    // others only wait for the tail to move, and now find the slot free again. So the put fails
    // as it did before the claim, counting nothing (a record given up would count in qsize()
    // until a get passed it).
    mem().slot(pos).state.store(unclaimed, std::memory_order_seq_cst);
    if (failure) std::rethrow_exception(failure);
    return 0;
}

inline void queue_ring::spill_full(std::uint64_t length) const {
    throw Error("mproc::Queue: a message of " + std::to_string(length) +
                " bytes does not fit the spill window (QueueOptions::spill_bytes = " +
                std::to_string(ctl().spill_bytes) + ")");
}

inline void queue_ring::publish(std::span<const claimed> records) noexcept {
    for (std::size_t i = 0; i < records.size(); ++i) {
        if (i != 0) queue_fault(queue_point::put_many_published);
        const claimed& record = records[i];
        record.slot->state.store(slot_state(record.pos, slot_status::ready, record.ready_low), std::memory_order_release);
    }
    // A consumer that counted itself in before our claim was seen then; a second look catches
    // one that came to wait for these records since.
    queue_control& b = bell();
    if (records[0].getters_sleep || b.get_waiters.load(std::memory_order_seq_cst) != 0) {
        b.data_event.fetch_add(1, std::memory_order_seq_cst);
        // Lanes: a woken consumer may be one waiting in another lane for a record being
        // written there; everyone wakes, so that one that looks at every lane is among them.
        futex_wake(b.data_event, shared_->lanes_share_bell ? INT_MAX : static_cast<int>(records.size()));
    }
}

inline void queue_ring::written_up_to(const claimed* records, std::size_t failed, std::size_t count) noexcept {
    if (failed != 0) publish(std::span<const claimed>(records, failed));
    give_up(std::span<const claimed>(records + failed, count - failed));
}

inline queue_ring::room_status queue_ring::room(std::uint64_t tail, std::uint64_t cells,
                                                std::uint64_t& oldest_pos, std::uint64_t& oldest_state) {
    const std::uint64_t end = qadd(qpos(tail), cells);
    // The cursor seen last, kept in this process: the shared one is read only when it must have
    // moved, so a producer does not pull its line from the consumers on every put.
    std::uint64_t reclaim = shared_->reclaim_seen.load(std::memory_order_acquire);
    if (((end - reclaim) & queue_pos_mask) > mem().cells()) {
        reclaim = advance_reclaim(oldest_state);
        shared_->reclaim_seen.store(reclaim, std::memory_order_release);
        if (((end - reclaim) & queue_pos_mask) > mem().cells()) {
            oldest_pos = reclaim;
            return room_status::ring_full;
        }
    }
    const std::uint64_t bound = ctl().maxsize;
    if (bound != 0 && ((qlow(tail) - qlow(ctl().head.load(std::memory_order_acquire))) & queue_low_mask) >= bound)
        return room_status::bound_full;
    return room_status::room;
}

inline std::uint64_t queue_ring::advance_reclaim(std::uint64_t& oldest_state) noexcept {
    queue_control& c = ctl();
    std::uint64_t reclaim = c.reclaim.load(std::memory_order_acquire);
    for (;;) {
        // Walk every freed record in order, then move the cursor once. A record seen freed
        // stays so until the cursor passes it, so a successful CAS covers a valid walk.
        std::uint64_t end = reclaim;
        for (std::uint64_t walked = 0; walked < mem().cells();) {
            const queue_slot& s = mem().slot(end);
            const std::uint64_t state = s.state.load(std::memory_order_acquire);
            if (qpos(state) != end || status_of(state) != slot_status::freed) {
                oldest_state = state;
                break;
            }
            const std::uint64_t cells = record_cells(s, state);
            end = qadd(end, cells);
            walked += cells;
        }
        if (end == reclaim) return reclaim;
        if (c.reclaim.compare_exchange_strong(reclaim, end, std::memory_order_seq_cst)) return end;
    }
}

inline bool queue_ring::wait_for_tail(std::uint64_t tail, std::uint64_t state, stall_watch& watch,
                                      const Deadline& deadline) {
    // The claimer stores the tail a few instructions after its claim, unless it was preempted
    // or died there. Only a writing record can sit at the tail (a publish or a drop comes after
    // the tail's move).
    queue_control& c = ctl();
    for (int i = 0; i < 64; ++i) {
        if (c.tail.load(std::memory_order_acquire) != tail) return true;
        cpu_relax();
    }
    if (status_of(state) == slot_status::writing && watch.holder_dead(state, c.registry, deadline.expired())) {
        drop(qpos(tail), state);
        return true;
    }
    if (deadline.expired()) return false;
    watch.pause(state, deadline);
    return true;
}

inline void queue_ring::advance_head(std::uint64_t head, std::uint64_t state, const queue_slot& s) noexcept {
    // Only for a record seen freed at the head: a drop that has not moved the head yet (a live
    // consumer moves the head before it frees). Freed, it stays so until the head passes it.
    ctl().head.compare_exchange_strong(head, qpack(qadd(qpos(head), record_cells(s, state)), qlow(head) + 1),
                                       std::memory_order_acq_rel);
}

}  // namespace detail
MPROC_NAMESPACE_END

// The queue's test hook: moments at which a test may stop or kill a process in the middle of a
// put or a get, so that a fault test makes its moment certain instead of hoping for it. Apart
// from queue_wait.hpp because the spill window's lock (queue_memory.hpp) has moments too.
#pragma once

#include <mproc/version.hpp>

MPROC_NAMESPACE_BEGIN
namespace detail {

/// Moments at which a test may stop a process in the middle of a put or a get.
/// put_claimed: the slot is ours, span and tail not yet stored; put_spanned: the span stored,
/// the tail not yet moved; put_copying: half the message written. get_claimed: the slot is
/// ours, the head not yet moved; get_moved: the head moved, nothing read; get_consumed: read,
/// not yet freed. put_waiting: about to sleep for room (nothing claimed). The spill window's
/// moments, all with its lock held: spill_noted: the lock's note of a block about to move is
/// written, nothing moved yet (in a put: the block still on its list or the window's top; in a
/// get: still named in its record); spill_taken: the block is off its list, not yet named in
/// its record; spill_recorded: named in its record, the note not yet cleared; spill_releasing:
/// a freed record no longer names its block, which is not yet on a free list; spill_released:
/// on its list, the note not yet cleared.
/// Batches (put_many, get_many) claim several records before one move of the tail or head, so
/// some moments mean more there: put_claimed comes after the first record's claim, put_spanned
/// after every record of the batch is claimed and spanned (the tail not yet moved), get_claimed
/// after every record of the batch is claimed (the head not yet moved), get_consumed once per
/// record (read, not yet freed). And three moments are theirs alone: put_many_claimed: a further
/// record claimed, its span not yet stored (once per record after the first); put_many_published:
/// a record published, the ones after it written but not yet published (once per record but
/// the last: a batch is written whole, then published); get_many_claimed: a further record claimed (once per record after the first).
enum class queue_point {
    put_claimed, put_copying, get_claimed, get_consumed, put_spanned, get_moved,
    put_waiting, spill_noted, spill_taken, spill_recorded, spill_releasing, spill_released,
    put_many_claimed, put_many_published, get_many_claimed
};

/// Called at each queue_point when set (tests only: e.g. raise(SIGKILL) in a child).
using queue_fault_fn = void (*)(queue_point);
inline constinit queue_fault_fn queue_fault_hook = nullptr;

inline void queue_fault(queue_point point) {
    if (auto* hook = queue_fault_hook) [[unlikely]]
        hook(point);
}

}  // namespace detail
MPROC_NAMESPACE_END

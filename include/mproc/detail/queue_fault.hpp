// The queue's test hook: moments at which a test may stop or kill a process in the middle of a
// put or a get, so that a fault test makes its moment certain instead of hoping for it.
#pragma once

#include <mproc/version.hpp>

MPROC_NAMESPACE_BEGIN
namespace detail {

/// put_ticketed: the fetch_add took the tickets, not yet recorded in the process's claim word;
/// put_claimed: tickets recorded, the slot not yet the producer's; put_spanned: the slot is the
/// producer's, its cells and spill block reserved and named in it, nothing copied;
/// put_copying: half the message written. get_ticketed: the ticket taken, not yet recorded;
/// get_claimed: recorded, the record seen ready, nothing read; get_moved: the message located,
/// not yet decoded; get_consumed: decoded, not yet freed. spill_taken: a spill block is off the
/// free lists (spill lock held), not yet named in its record's slot.
enum class queue_point {
    put_claimed, put_copying, get_claimed, get_consumed, put_spanned, get_moved,
    put_ticketed, get_ticketed, spill_taken
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

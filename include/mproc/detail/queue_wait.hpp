// Waiting in the queue: the test hook, the copy that a test can interrupt, and the watch that
// decides when a stuck record's holder is worth a look in /proc.
#pragma once

#include <mproc/detail/queue_memory.hpp>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstring>

MPROC_NAMESPACE_BEGIN
namespace detail {

/// Moments at which a test may stop a process in the middle of a put or a get.
/// put_claimed: the slot is ours, span and tail not yet stored; put_spanned: the span stored,
/// the tail not yet moved; put_copying: half the message written. get_claimed: the slot is
/// ours, the head not yet moved; get_moved: the head moved, nothing read; get_consumed: read,
/// not yet freed.
enum class queue_point { put_claimed, put_copying, get_claimed, get_consumed, put_spanned, get_moved };

/// Called at each queue_point when set (tests only: e.g. raise(SIGKILL) in a child).
using queue_fault_fn = void (*)(queue_point);
inline constinit queue_fault_fn queue_fault_hook = nullptr;

inline void queue_fault(queue_point point) {
    if (auto* hook = queue_fault_hook) [[unlikely]]
        hook(point);
}

/// Copies a message's bytes into a claimed record in two halves, so that a test can kill the
/// producer with the message half written.
inline void queue_copy(std::byte* to, const void* from, std::size_t n) noexcept {
    const std::size_t half = n / 2;
    if (half) std::memcpy(to, from, half);
    queue_fault(queue_point::put_copying);
    if (n > half) std::memcpy(to + half, static_cast<const std::byte*>(from) + half, n - half);
}

/// Decides when a stuck holder is worth a look in /proc: not at first sight (holders are
/// normally just busy), then every few milliseconds. A call with no time left looks at once.
class stall_watch {
public:
    [[nodiscard]] bool holder_dead(std::uint64_t state, const queue_registry& registry, bool last_chance) {
        const auto now = std::chrono::steady_clock::now();
        if (state != seen_) {
            seen_ = state;
            next_ = now + std::chrono::milliseconds(1);
            if (!last_chance) return false;
        } else if (now < next_ && !last_chance) {
            return false;
        }
        next_ = now + std::chrono::milliseconds(5);
        return registry.holder_dead(holder_of(state));
    }

private:
    std::uint64_t seen_ = ~std::uint64_t{0};
    std::chrono::steady_clock::time_point next_{};
};

}  // namespace detail
MPROC_NAMESPACE_END

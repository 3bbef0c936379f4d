// Waiting in the queue: the copy that a test can interrupt, and the watch that
// decides when a stuck record's holder is worth a look in /proc.
#pragma once

#include <mproc/detail/deadline.hpp>
#include <mproc/detail/queue_fault.hpp>
#include <mproc/detail/queue_memory.hpp>

#include <sched.h>
#include <time.h>

#include <algorithm>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstring>

MPROC_NAMESPACE_BEGIN
namespace detail {

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

    /// Lets the holder of `state` run: a yield while the stall is young (a preempted holder is
    /// back within a time slice), then sleeps of up to 1 ms, so that a holder that was stopped
    /// (SIGSTOP, a debugger) costs the processes waiting on it no CPU. Never past `deadline`.
    void pause(std::uint64_t state, const Deadline& deadline) {
        const auto now = std::chrono::steady_clock::now();
        if (state != paused_on_) {
            paused_on_ = state;
            pause_since_ = now;
        }
        if (now - pause_since_ < std::chrono::milliseconds(1)) {
            ::sched_yield();
            return;
        }
        const auto nap = std::min<std::chrono::steady_clock::duration>(std::chrono::milliseconds(1), deadline.remaining());
        const auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(nap).count();
        timespec ts{static_cast<time_t>(ns / 1'000'000'000), static_cast<long>(ns % 1'000'000'000)};
        ::nanosleep(&ts, nullptr);
    }

private:
    std::uint64_t seen_ = ~std::uint64_t{0};
    std::chrono::steady_clock::time_point next_{};
    std::uint64_t paused_on_ = ~std::uint64_t{0};
    std::chrono::steady_clock::time_point pause_since_{};
};

}  // namespace detail
MPROC_NAMESPACE_END

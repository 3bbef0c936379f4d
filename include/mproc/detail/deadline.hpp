// A point in time that a blocking call must not wait past.
#pragma once

#include <mproc/version.hpp>

#include <chrono>
#include <climits>
#include <optional>

MPROC_NAMESPACE_BEGIN
namespace detail {

/// Either "forever" or a steady_clock time point. Blocking calls take one, so that a wait that
/// is interrupted (EINTR) and resumed never extends the caller's timeout.
class Deadline {
public:
    using clock = std::chrono::steady_clock;

    static Deadline never() noexcept { return Deadline(); }

    template <class Rep, class Period>
    static Deadline after(std::chrono::duration<Rep, Period> timeout) noexcept {
        // A century is "never": this keeps hours::max() from overflowing into the past.
        if (timeout >= std::chrono::hours(24 * 365 * 100)) return never();
        if (timeout <= timeout.zero()) return Deadline(clock::now());
        return Deadline(clock::now() + std::chrono::ceil<clock::duration>(timeout));
    }

    [[nodiscard]] bool is_never() const noexcept { return !at_; }
    /// The time point, or nullopt for never (for calls that take an absolute monotonic time).
    [[nodiscard]] const std::optional<clock::time_point>& at() const noexcept { return at_; }
    /// Time left, at least zero; duration::max() for never.
    [[nodiscard]] clock::duration remaining() const noexcept {
        if (!at_) return clock::duration::max();
        const auto left = *at_ - clock::now();
        return left > clock::duration::zero() ? left : clock::duration::zero();
    }
    [[nodiscard]] bool expired() const noexcept { return at_ && clock::now() >= *at_; }

    /// Milliseconds for poll(2): -1 for never, else the time left rounded up (so that a wait
    /// never returns before the deadline and spins on a zero timeout).
    [[nodiscard]] int poll_ms() const noexcept {
        if (!at_) return -1;
        const auto left = *at_ - clock::now();
        if (left <= clock::duration::zero()) return 0;
        const auto ms = std::chrono::ceil<std::chrono::milliseconds>(left).count();
        return ms > INT_MAX ? INT_MAX : static_cast<int>(ms);
    }

private:
    Deadline() = default;
    explicit Deadline(clock::time_point at) noexcept : at_(at) {}

    std::optional<clock::time_point> at_;
};

}  // namespace detail
MPROC_NAMESPACE_END

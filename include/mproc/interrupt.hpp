// mproc::InterruptScope: Ctrl-C (SIGINT) as an exception in a Pool's waits, like Python's
// KeyboardInterrupt, instead of the process's default death.
#pragma once

#include <mproc/detail/interrupt.hpp>
#include <mproc/error.hpp>

#include <csignal>
#include <cstdint>

MPROC_NAMESPACE_BEGIN

/// While an InterruptScope lives, SIGINT (Ctrl-C) does not kill the process: a Pool wait in
/// progress (map, imap, Future::get, join; fork_map too) throws mproc::Interrupted within
/// milliseconds. A map so interrupted cancels its tasks, gives the running ones 100 ms and
/// replaces the workers still running them. The workers themselves ignore SIGINT. The previous
/// disposition comes back when the scope ends. Scopes nest; make them in one thread.
/// @code
/// mproc::InterruptScope ctrl_c;
/// try { auto r = pool.map(search, ranges); } catch (const mproc::Interrupted&) { save_partial(); }
/// @endcode
class InterruptScope {
public:
    InterruptScope() {
        detail::install_sigint_handler(previous_);
        seen_ = detail::interrupts().received.load();
    }
    ~InterruptScope() { detail::restore_sigint_handler(previous_); }
    InterruptScope(const InterruptScope&) = delete;
    InterruptScope& operator=(const InterruptScope&) = delete;

    /// Whether SIGINT arrived since this scope began.
    [[nodiscard]] bool interrupted() const noexcept { return detail::interrupts().received.load() != seen_; }

private:
    struct sigaction previous_ {};
    std::uint64_t seen_ = 0;
};

MPROC_NAMESPACE_END

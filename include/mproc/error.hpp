// The one exception family of mproc: every failure is one of these, nothing is reported only
// through stderr.
#pragma once

#include <mproc/version.hpp>

#include <cerrno>
#include <csignal>
#include <cstddef>
#include <limits>
#include <optional>
#include <stdexcept>
#include <string>
#include <system_error>
#include <utility>

MPROC_NAMESPACE_BEGIN

/// Root of every exception mproc throws.
class Error : public std::runtime_error {
public:
    using std::runtime_error::runtime_error;
};

/// A system call failed: `code()` holds errno, `what()` names the call.
/// @code
/// try { ... } catch (const mproc::SystemError& e) { if (e.code() == std::errc::too_many_files_open) ... }
/// @endcode
class SystemError : public Error {
public:
    /// `call` failed with `errno_value`; what() names both, e.g. "shm_open: File exists".
    SystemError(int errno_value, const std::string& call)
        : Error(call + ": " + std::generic_category().message(errno_value)),
          code_(errno_value, std::generic_category()), call_(call) {}

    /// The errno, in std::generic_category: compare it with a std::errc.
    [[nodiscard]] const std::error_code& code() const noexcept { return code_; }
    /// The name of the system call that failed.
    [[nodiscard]] const std::string& call() const noexcept { return call_; }

private:
    std::error_code code_;
    std::string call_;
};

/// An exception thrown in another process (a child, a pool worker), carried back by name and
/// message. `task_index()` is set when the exception came from one task of a map.
class RemoteError : public Error {
public:
    /// what() reads `task 3 raised std::invalid_argument: bad input`, or `remote ...` without
    /// an index.
    RemoteError(std::string type_name, std::string message,
                std::optional<std::size_t> task_index = std::nullopt)
        : Error(describe(type_name, message, task_index)), type_name_(std::move(type_name)),
          message_(std::move(message)), task_index_(task_index) {}

    /// The demangled type of the original exception, e.g. "std::invalid_argument".
    [[nodiscard]] const std::string& type_name() const noexcept { return type_name_; }
    /// The original exception's what().
    [[nodiscard]] const std::string& message() const noexcept { return message_; }
    /// The index of the failed task in the map's input, when there is one.
    [[nodiscard]] std::optional<std::size_t> task_index() const noexcept { return task_index_; }

private:
    static std::string describe(const std::string& type, const std::string& message,
                                std::optional<std::size_t> index) {
        std::string text = index ? "task " + std::to_string(*index) + " raised " : "remote ";
        return text + type + ": " + message;
    }

    std::string type_name_;
    std::string message_;
    std::optional<std::size_t> task_index_;
};

/// The name of a signal ("SIGSEGV"), or "signal N" for one without a standard name.
[[nodiscard]] inline std::string signal_name(int sig) {
    switch (sig) {
#define MPROC_DETAIL_SIGNAL_CASE(s) \
    case s: return #s;
        MPROC_DETAIL_SIGNAL_CASE(SIGHUP)
        MPROC_DETAIL_SIGNAL_CASE(SIGINT)
        MPROC_DETAIL_SIGNAL_CASE(SIGQUIT)
        MPROC_DETAIL_SIGNAL_CASE(SIGILL)
        MPROC_DETAIL_SIGNAL_CASE(SIGTRAP)
        MPROC_DETAIL_SIGNAL_CASE(SIGABRT)
        MPROC_DETAIL_SIGNAL_CASE(SIGBUS)
        MPROC_DETAIL_SIGNAL_CASE(SIGFPE)
        MPROC_DETAIL_SIGNAL_CASE(SIGKILL)
        MPROC_DETAIL_SIGNAL_CASE(SIGUSR1)
        MPROC_DETAIL_SIGNAL_CASE(SIGSEGV)
        MPROC_DETAIL_SIGNAL_CASE(SIGUSR2)
        MPROC_DETAIL_SIGNAL_CASE(SIGPIPE)
        MPROC_DETAIL_SIGNAL_CASE(SIGALRM)
        MPROC_DETAIL_SIGNAL_CASE(SIGTERM)
        MPROC_DETAIL_SIGNAL_CASE(SIGCHLD)
        MPROC_DETAIL_SIGNAL_CASE(SIGCONT)
        MPROC_DETAIL_SIGNAL_CASE(SIGSTOP)
        MPROC_DETAIL_SIGNAL_CASE(SIGTSTP)
        MPROC_DETAIL_SIGNAL_CASE(SIGTTIN)
        MPROC_DETAIL_SIGNAL_CASE(SIGTTOU)
        MPROC_DETAIL_SIGNAL_CASE(SIGXCPU)
        MPROC_DETAIL_SIGNAL_CASE(SIGXFSZ)
        MPROC_DETAIL_SIGNAL_CASE(SIGSYS)
#undef MPROC_DETAIL_SIGNAL_CASE
    default: return "signal " + std::to_string(sig);
    }
}

/// A process ended without delivering its result: killed by `signal()`, or exited with
/// `exit_code()` before returning. `task_index()` is set when it died running one task of a map.
class ProcessCrashed : public Error {
public:
    /// The status of a process reaped by someone else (a program that ignores SIGCHLD, or whose
    /// handler reaps every child): the kernel dropped it.
    static constexpr int lost_status = std::numeric_limits<int>::min();

    /// Process `pid` ended without its result; what() says how.
    /// @param pid the process that ended.
    /// @param status Python's exitcode convention: negative signal number, or the exit code;
    ///        lost_status when unknown.
    /// @param task_index the task it was running, when it was a map's worker.
    ProcessCrashed(int pid, int status, std::optional<std::size_t> task_index = std::nullopt)
        : Error(describe(pid, status, task_index)), pid_(pid), status_(status),
          task_index_(task_index) {}

    /// The pid of the process that ended.
    [[nodiscard]] int pid() const noexcept { return pid_; }
    /// True when the exit status is unknown (see lost_status): signal() is 0, exit_code() empty.
    [[nodiscard]] bool status_lost() const noexcept { return status_ == lost_status; }
    /// The signal that killed the process, or 0 when it exited.
    [[nodiscard]] int signal() const noexcept { return status_ < 0 && !status_lost() ? -status_ : 0; }
    /// The exit code, or std::nullopt when a signal killed it.
    [[nodiscard]] std::optional<int> exit_code() const noexcept {
        return status_ >= 0 ? std::optional<int>(status_) : std::nullopt;
    }
    /// Python's exitcode: -signal or the exit code.
    [[nodiscard]] int exitcode() const noexcept { return status_; }
    /// The index of the task it was running in the map's input, when there is one.
    [[nodiscard]] std::optional<std::size_t> task_index() const noexcept { return task_index_; }

private:
    static std::string describe(int pid, int status, std::optional<std::size_t> index) {
        std::string text = "process " + std::to_string(pid);
        if (index) text += " running task " + std::to_string(*index);
        if (status == lost_status)
            return text + " ended without a result (its exit status is unknown: the program ignores "
                          "SIGCHLD or reaps its children itself)";
        if (status < 0)
            return text + " was killed by " + signal_name(-status) + " (signal " +
                   std::to_string(-status) + ")";
        return text + " exited with code " + std::to_string(status) + " without a result";
    }

    int pid_;
    int status_;
    std::optional<std::size_t> task_index_;
};

/// A wait ran past its deadline, or a task ran past its time limit (then `task_index()` names it
/// and its worker was killed).
class TimeoutError : public Error {
public:
    using Error::Error;
    /// A task of a map, `task_index` in its input, ran past its time limit.
    TimeoutError(const std::string& what, std::size_t task_index)
        : Error(what), task_index_(task_index) {}

    /// The task that ran past its time limit; empty for a wait that ran past its deadline.
    [[nodiscard]] std::optional<std::size_t> task_index() const noexcept { return task_index_; }

private:
    std::optional<std::size_t> task_index_;
};

/// Bytes that do not decode to the expected type: truncated, corrupted, or of another type.
class DecodeError : public Error {
public:
    using Error::Error;
};

/// The other side is gone: every peer end of a pipe is closed, or a queue is closed and drained.
class EndOfStream : public Error {
public:
    using Error::Error;
};

/// A call that the object's state does not allow (a Process started twice, a closed Connection).
class StateError : public Error {
public:
    using Error::Error;
};

/// A wait on a Pool (map, imap, Future::get...) stopped because Ctrl-C (SIGINT) arrived inside an
/// mproc::InterruptScope. Python's KeyboardInterrupt.
class Interrupted : public Error {
public:
    Interrupted() : Error("mproc::Interrupted: SIGINT (Ctrl-C) arrived during the wait") {}
};

namespace detail {
/// Throws SystemError for the current errno; kept out of line of the hot paths.
[[noreturn]] inline void throw_errno(const char* call) { throw SystemError(errno, call); }
[[noreturn]] inline void throw_errno(int err, const char* call) { throw SystemError(err, call); }
}  // namespace detail

MPROC_NAMESPACE_END

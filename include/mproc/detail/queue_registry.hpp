// Who may hold a queue record, and whether that thread is still alive.
//
// Every thread that uses a queue has an entry in a small table in the queue's shared memory,
// named by a 21-bit id: the entry's index plus its generation. The entry records the thread's
// id (its tid: the pid for a single-threaded process) and the low bits of its start time (from
// /proc), so a process that finds a record stuck can tell a slow holder from a dead one without
// being fooled by id reuse: an id now running a thread that started at another time, a zombie,
// or a generation that moved on all mean the holder is gone. An entry per thread, not per
// process, so that each entry's claim word (queue_memory.hpp) has one writer.
#pragma once

#include <mproc/detail/sys.hpp>
#include <mproc/error.hpp>

#include <fcntl.h>
#include <sys/syscall.h>
#include <pthread.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <optional>

MPROC_NAMESPACE_BEGIN
namespace detail {

/// What /proc says about a pid: whether it runs (a zombie does not) and when it started, in
/// clock ticks since boot.
struct process_status {
    bool running = false;
    std::uint64_t start_ticks = 0;
};

/// This thread's id without a system call on the hot path. A fork handler forgets it in the
/// child (whose one thread is the one that called fork).
[[nodiscard]] inline pid_t current_tid() noexcept {
    static thread_local pid_t cached = 0;
    if (cached == 0) [[unlikely]] {
        static const int registered = ::pthread_atfork(nullptr, nullptr, [] { cached = 0; });
        (void)registered;
        cached = static_cast<pid_t>(::syscall(SYS_gettid));
    }
    return cached;
}

/// Reads /proc/<pid>/stat (pid 0: this process; a tid works too). nullopt when no such process exists.
[[nodiscard]] inline std::optional<process_status> read_process_status(pid_t pid) {
    char path[40];
    if (pid == 0) std::snprintf(path, sizeof path, "/proc/self/stat");
    else std::snprintf(path, sizeof path, "/proc/%d/stat", static_cast<int>(pid));
    int fd;
    do fd = ::open(path, O_RDONLY | O_CLOEXEC);
    while (fd < 0 && errno == EINTR);
    if (fd < 0) return std::nullopt;
    char text[1024];
    ssize_t got;
    do got = sys().read(fd, text, sizeof text - 1);
    while (got < 0 && errno == EINTR);
    sys().close(fd);
    if (got <= 0) return std::nullopt;  // the process went away while we read
    text[got] = '\0';
    // The command name (field 2) may hold spaces and parentheses: fields 3.. follow the last ')'.
    const char* p = std::strrchr(text, ')');
    if (!p) return std::nullopt;
    process_status status;
    char state = '?';
    unsigned long long start = 0;
    // Field 3 is the state, field 22 the start time: 18 fields lie between them.
    if (std::sscanf(p + 1, " %c %*s %*s %*s %*s %*s %*s %*s %*s %*s %*s %*s %*s %*s %*s %*s %*s %*s %*s %llu",
                    &state, &start) != 2)
        return std::nullopt;
    status.running = state != 'Z' && state != 'X' && state != 'x';
    status.start_ticks = start;
    return status;
}

/// The table of processes that use one queue. Each entry's word packs the generation (12 bits
/// of room, counting 1 .. 2047 so that an id fits the 21 bits a slot state has for it), the pid (22 bits: Linux pids stay below 2^22) and the low 30 bits of the
/// start time. One atomic word, so a reader never sees an entry half rewritten.
struct queue_registry {
    static constexpr unsigned entries = 1024;  // processes using one queue at the same time
    static constexpr unsigned id_bits = 21;    // 10 bits of index, 11 of generation

    std::atomic<std::uint64_t> words[entries];

    static constexpr std::uint64_t pack(std::uint64_t gen, std::uint64_t pid, std::uint64_t start) {
        return gen << 52 | (pid & 0x3FFFFF) << 30 | (start & 0x3FFFFFFF);
    }
    static constexpr std::uint32_t gen_of(std::uint64_t w) { return static_cast<std::uint32_t>(w >> 52); }
    static constexpr pid_t pid_of(std::uint64_t w) { return static_cast<pid_t>(w >> 30 & 0x3FFFFF); }
    static constexpr std::uint64_t start_of(std::uint64_t w) { return w & 0x3FFFFFFF; }
    static constexpr std::uint32_t make_id(std::uint32_t index, std::uint32_t gen) { return gen << 10 | index; }

    /// Whether the entry's process no longer runs: gone, a zombie, or the pid reused. Never a
    /// guess: without a readable /proc only "no such process" counts, so a live holder is never
    /// taken for dead (a dead one then is found once reaped, not while a zombie).
    static bool entry_dead(std::uint64_t w) {
        const pid_t pid = pid_of(w);
        if (sys().kill(pid, 0) != 0 && errno == ESRCH) return true;
        const auto status = read_process_status(pid);
        if (!status) return proc_readable();  // it exited between the two looks
        return !status->running || (status->start_ticks & 0x3FFFFFFF) != start_of(w);
    }

    static bool proc_readable() {
        static const bool readable = read_process_status(0).has_value();
        return readable;
    }

    /// True when the process that held `id` is known to be dead. A generation that moved on means
    /// the entry was taken over, which only happens once its process was found dead.
    [[nodiscard]] bool holder_dead(std::uint32_t id) const {
        const std::uint64_t w = words[id & 1023].load(std::memory_order_acquire);
        if (gen_of(w) != (id >> 10)) return true;
        return entry_dead(w);
    }

    /// Takes an entry for the calling thread: a never-used one, or one whose thread died.
    /// @throws Error when `entries` live threads hold every entry.
    [[nodiscard]] std::uint32_t enroll(bool& fresh) {
        fresh = false;
        const pid_t tid = current_tid();
        const auto self = read_process_status(tid);  // no /proc: start time 0, id checks only
        const std::uint64_t start = self ? self->start_ticks : 0;
        const auto pid = static_cast<std::uint64_t>(tid);
        // This thread's own entry, if it has one already (its id fell out of a small cache).
        for (std::uint32_t i = 0; i < entries; ++i) {
            const std::uint64_t w = words[i].load(std::memory_order_acquire);
            if (w != 0 && w == pack(gen_of(w), pid, start)) return make_id(i, gen_of(w));
        }
        fresh = true;
        for (int pass = 0; pass < 2; ++pass) {
            for (std::uint32_t i = 0; i < entries; ++i) {
                std::uint64_t w = words[i].load(std::memory_order_acquire);
                // First pass: fresh entries only (cheap); second: entries of dead processes.
                if (pass == 0 ? w != 0 : (w == 0 || !entry_dead(w))) continue;
                std::uint32_t gen = (gen_of(w) + 1) & 0x7FF;
                if (gen == 0) gen = 1;
                if (words[i].compare_exchange_strong(w, pack(gen, pid, start),
                                                     std::memory_order_acq_rel))
                    return make_id(i, gen);
            }
        }
        throw Error("mproc::Queue: more than 1024 live threads use this queue");
    }
};

}  // namespace detail
MPROC_NAMESPACE_END

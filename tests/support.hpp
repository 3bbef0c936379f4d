// Helpers shared by the tests: resource counts and failure injection through detail::sys().
#pragma once

#include <mproc/detail/exec.hpp>
#include <mproc/detail/sys.hpp>
#include <mproc/detail/pool_options.hpp>
#include <mproc/process.hpp>
#include <mproc/start_method.hpp>

#include <catch2/catch.hpp>

#include <dirent.h>
#include <sys/stat.h>

#include <cerrno>
#include <chrono>
#include <fstream>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <unistd.h>
#include <vector>

namespace mproc_test {

/// Number of open descriptors of this process.
inline int open_fd_count() {
    int count = 0;
    if (DIR* dir = ::opendir("/proc/self/fd")) {
        while (::readdir(dir)) ++count;
        ::closedir(dir);
    }
    return count - 3;  // ".", ".." and the directory's own descriptor
}

/// A number from /proc/self/status ("VmRSS:" in KiB, "voluntary_ctxt_switches:"...); 0 if absent.
inline long status_field(const std::string& field) {
    std::ifstream status("/proc/self/status");
    std::string key;
    long value = 0;
    while (status >> key)
        if (key == field) {
            status >> value;
            break;
        }
    return value;
}

/// A memory figure of this process in MiB, from /proc/self/status ("VmRSS:", "RssShmem:"...).
inline long status_mib(const std::string& field) { return status_field(field) / 1024; }

/// The inode numbers of this process's open memfds whose name starts with `name`.
inline std::set<ino_t> memfd_inodes(const std::string& name) {
    std::set<ino_t> inodes;
    DIR* dir = ::opendir("/proc/self/fd");
    if (!dir) return inodes;
    while (dirent* entry = ::readdir(dir)) {
        const std::string path = std::string("/proc/self/fd/") + entry->d_name;
        char target[256] = {};
        struct stat st {};
        if (::readlink(path.c_str(), target, sizeof target - 1) > 0 &&
            std::string(target).rfind("/memfd:" + name, 0) == 0 && ::stat(path.c_str(), &st) == 0)
            inodes.insert(st.st_ino);
    }
    ::closedir(dir);
    return inodes;
}

/// Bytes of memory held by this process's open memfds whose name starts with `name` (the
/// blocks the files have allocated, whoever touched them).
inline long long memfd_bytes(const std::string& name) {
    long long total = 0;
    DIR* dir = ::opendir("/proc/self/fd");
    if (!dir) return -1;
    while (dirent* entry = ::readdir(dir)) {
        const std::string path = std::string("/proc/self/fd/") + entry->d_name;
        char target[256] = {};
        if (::readlink(path.c_str(), target, sizeof target - 1) <= 0) continue;
        struct stat st {};
        if (std::string(target).rfind("/memfd:" + name, 0) == 0 && ::stat(path.c_str(), &st) == 0)
            total += static_cast<long long>(st.st_blocks) * 512;
    }
    ::closedir(dir);
    return total;
}

/// Names in /dev/shm right now.
inline std::set<std::string> shm_names() {
    std::set<std::string> names;
    if (DIR* dir = ::opendir("/dev/shm")) {
        while (dirent* entry = ::readdir(dir)) names.insert(entry->d_name);
        ::closedir(dir);
    }
    return names;
}

/// Names in /dev/shm that this test process made (they all carry its pid). ctest runs other test
/// programs in parallel, so a plain before/after listing would see their names come and go.
inline std::set<std::string> our_shm_names() {
    const std::string pid = std::to_string(::getpid());
    std::set<std::string> ours;
    for (const auto& n : shm_names())
        if (n.find(pid) != std::string::npos) ours.insert(n);
    return ours;
}

/// Starts `n` children running `body(i)`, joins them (bounded), and checks they exited 0.
template <class Body>
void run_children(int n, Body body) {
    std::vector<mproc::Process<void>> children;
    for (int i = 0; i < n; ++i) children.emplace_back([&body, i] { body(i); });
    for (auto& c : children) c.start();
    for (auto& c : children) {
        REQUIRE(c.join(std::chrono::seconds(60)));
        CHECK(c.exitcode() == 0);
    }
}

/// The pids of `parent`'s children now (from /proc: every process whose parent it is).
inline std::vector<pid_t> child_pids(pid_t parent = ::getpid()) {
    std::vector<pid_t> children;
    const std::string self = std::to_string(parent);
    if (DIR* dir = ::opendir("/proc")) {
        while (dirent* entry = ::readdir(dir)) {
            if (entry->d_name[0] < '0' || entry->d_name[0] > '9') continue;
            std::ifstream stat(std::string("/proc/") + entry->d_name + "/stat");
            std::string line;
            if (!std::getline(stat, line)) continue;  // gone meanwhile
            // "pid (comm) state ppid ...": comm may hold spaces and parentheses, so from the last ')'.
            const auto close = line.rfind(')');
            if (close == std::string::npos) continue;
            std::string state, ppid;
            std::istringstream rest(line.substr(close + 1));
            if (rest >> state >> ppid && ppid == self) children.push_back(static_cast<pid_t>(std::stoi(entry->d_name)));
        }
        ::closedir(dir);
    }
    return children;
}

/// The state letter /proc gives `pid` (R, S, T, Z...), or 0 when it is gone.
inline char process_state(pid_t pid) {
    std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
    std::string line;
    if (!std::getline(stat, line)) return 0;
    const auto close = line.rfind(')');  // the name in parentheses may hold spaces
    if (close == std::string::npos || close + 2 >= line.size()) return 0;
    return line[close + 2];
}

/// True while `pid` runs: it exists and is not a zombie (for any process, not only our children).
inline bool running(pid_t pid) {
    const char state = process_state(pid);
    return state != 0 && state != 'Z' && state != 'X';
}

/// True once `pid` and every thread of it ended: its main thread is a zombie (or gone) before its
/// other threads (a sanitizer's) have closed the descriptors they share, so a test that needs
/// those closed (a peer's EPIPE) waits for this, not for !running(pid).
inline bool ended_with_every_thread(pid_t pid) {
    if (running(pid)) return false;
    DIR* dir = ::opendir(("/proc/" + std::to_string(pid) + "/task").c_str());
    if (!dir) return true;
    int threads = 0;
    while (const dirent* entry = ::readdir(dir))
        if (entry->d_name[0] != '.') ++threads;
    ::closedir(dir);
    return threads <= 1;
}

/// True when this process has no child left: no zombie of ours to reap, and none running but
/// the forkserver, which serves the program for its whole life once started.
inline bool no_children_left() {
    siginfo_t info{};
    if (::waitid(P_ALL, 0, &info, WEXITED | WNOHANG | WNOWAIT) == 0 && info.si_pid != 0) return false;  // a zombie
    const pid_t server = mproc::detail::forkserver_connection().server_pid();
    for (pid_t child : child_pids())
        if (child != server) return false;
    return true;
}

/// Waits (at most 5 s) until the forkserver, when one runs, has announced its spare child to
/// this process, which then holds the spare's socket and pidfd: descriptor counts taken after
/// this agree whether or not the announcement had been read before.
inline void settle_forkserver_spare() {
    auto& server = mproc::detail::forkserver_connection();
    if (server.server_pid() == 0) return;
    const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(5);
    while (server.announced_spare() == 0 && std::chrono::steady_clock::now() < until)
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
}

/// Every start method, for GENERATE: `const auto method = GENERATE(mproc_test::every_start_method());`
/// then `CAPTURE(method);`, so a failure says which one.
inline Catch::Generators::GeneratorWrapper<mproc::StartMethod> every_start_method() {
    return Catch::Generators::values({mproc::StartMethod::fork, mproc::StartMethod::spawn, mproc::StartMethod::forkserver});
}

/// Options for a pool of `processes` workers started by `method`.
inline mproc::PoolOptions pool_options(mproc::StartMethod method, unsigned processes = 2) {
    mproc::PoolOptions options;
    options.processes = processes;
    options.start_method = method;
    return options;
}

/// Replaces the sys() table for one scope, then restores it.
class ScopedSys {
public:
    ScopedSys() : saved_(mproc::detail::sys()) {}
    ~ScopedSys() { mproc::detail::sys() = saved_; }
    ScopedSys(const ScopedSys&) = delete;
    ScopedSys& operator=(const ScopedSys&) = delete;
    mproc::detail::sys_table* operator->() { return &mproc::detail::sys(); }

private:
    mproc::detail::sys_table saved_;
};

}  // namespace mproc_test

/// A start method's name in Catch's output (CAPTURE, INFO, GENERATE's values).
template <>
struct Catch::StringMaker<mproc::StartMethod> {
    static std::string convert(mproc::StartMethod method) {
        switch (method) {
            case mproc::StartMethod::fork: return "fork";
            case mproc::StartMethod::spawn: return "spawn";
            case mproc::StartMethod::forkserver: return "forkserver";
        }
        return "start method " + std::to_string(static_cast<int>(method));
    }
};

// Helpers shared by the tests: resource counts and failure injection through detail::sys().
#pragma once

#include <mproc/detail/sys.hpp>
#include <mproc/process.hpp>

#include <catch2/catch.hpp>

#include <dirent.h>
#include <sys/stat.h>

#include <cerrno>
#include <chrono>
#include <fstream>
#include <set>
#include <string>
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

/// A memory figure of this process in MiB, from /proc/self/status ("VmRSS:", "RssShmem:"...).
inline long status_mib(const std::string& field) {
    std::ifstream status("/proc/self/status");
    std::string key;
    long kib = 0;
    while (status >> key)
        if (key == field) {
            status >> kib;
            break;
        }
    return kib / 1024;
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

/// True when this process has no child left to reap (no zombie of ours).
inline bool no_children_left() {
    int status;
    return ::waitpid(-1, &status, WNOHANG) < 0 && errno == ECHILD;
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

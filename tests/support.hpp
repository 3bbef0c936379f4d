// Helpers shared by the tests: resource counts and failure injection through detail::sys().
#pragma once

#include <mproc/detail/sys.hpp>

#include <dirent.h>

#include <cerrno>
#include <set>
#include <string>

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

/// Names in /dev/shm right now.
inline std::set<std::string> shm_names() {
    std::set<std::string> names;
    if (DIR* dir = ::opendir("/dev/shm")) {
        while (dirent* entry = ::readdir(dir)) names.insert(entry->d_name);
        ::closedir(dir);
    }
    return names;
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

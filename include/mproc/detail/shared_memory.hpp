// SharedMemory: named POSIX shared memory for unrelated processes. Part of <mproc/shared.hpp>;
// include that header.
#pragma once

#include <mproc/detail/shm.hpp>
#include <mproc/detail/shm_tracker.hpp>
#include <mproc/error.hpp>

#include <unistd.h>

#include <atomic>
#include <cstddef>
#include <random>
#include <span>
#include <string>
#include <string_view>
#include <utility>

MPROC_NAMESPACE_BEGIN

/// A block of named shared memory (shm_open, seen as `/dev/shm/<name>`), like Python's
/// multiprocessing.shared_memory.SharedMemory: one process create()s it, others attach() by name.
///
/// Who owns the name: the creator. Its destructor unlinks the name unless keep() was called (or
/// unlink() already removed it); attached handles and forked children never unlink it on
/// destruction. Unlinking removes only the name: every mapping stays valid until unmapped.
/// The safest pattern is to unlink() as soon as every party has attached. If the creator is
/// SIGKILLed (or crashes) first, no destructor runs; a small tracker process (one per creating
/// process, started at its first create, see detail/shm_tracker.hpp) then unlinks the names it
/// still owned: created by it, not unlinked, not keep()-ed, and still the same file. Attached
/// processes keep their mappings; a kept name is never touched. It prints nothing.
/// @code
/// auto shm = mproc::SharedMemory::create("results", 1 << 20);    // creator
/// auto view = mproc::SharedMemory::attach("results");           // another process
/// view.unlink();                                                // every party attached: drop the name
/// std::memcpy(view.data(), bytes, n);
/// @endcode
/// @headerfile shared.hpp <mproc/shared.hpp>
class SharedMemory {
public:
    /// Creates `name` ("name" or "/name", at most 254 characters, no other '/') of `bytes`,
    /// readable and writable by this user only, zero-filled.
    /// @throws SystemError: EINVAL for a bad name, EEXIST when it is taken.
    [[nodiscard]] static SharedMemory create(std::string_view name, std::size_t bytes) {
        std::string path = detail::shm_path(name);
        detail::unique_fd fd = detail::shm_create(path, bytes);
        detail::shared_mapping mapping;
        try {
            mapping = detail::shared_mapping(fd.get(), bytes, true);
        } catch (...) {
            // mmap failed (ENOMEM: a size the file took but no address space can hold): the
            // name is ours, and no handle exists that would ever unlink it.
            ::shm_unlink(path.c_str());
            throw;
        }
        struct stat st {};
        if (::fstat(fd.get(), &st) == 0) detail::shm_names_tracker().own(path, st.st_ino);
        return SharedMemory(std::move(path), std::move(mapping), true);
    }
    /// Creates a block under a fresh unique name ("mproc_<pid>_<n>_<random>"); see name().
    [[nodiscard]] static SharedMemory create(std::size_t bytes) {
        static std::atomic<unsigned> counter{0};
        for (int attempt = 0;; ++attempt) {
            std::string name = "mproc_" + std::to_string(::getpid()) + "_" +
                               std::to_string(counter.fetch_add(1)) + "_" +
                               std::to_string(std::random_device{}() & 0xffffff);
            try {
                return create(name, bytes);
            } catch (const SystemError& e) {
                if (e.code() != std::errc::file_exists || attempt == 16) throw;
            }
        }
    }
    /// Maps the existing block `name` at its full size.
    /// @throws SystemError: EINVAL for a bad name, ENOENT when there is no such block.
    [[nodiscard]] static SharedMemory attach(std::string_view name, bool writable = true) {
        std::string path = detail::shm_path(name);
        detail::unique_fd fd = detail::shm_attach(path, writable);
        const std::size_t bytes = detail::fd_size(fd.get());
        return SharedMemory(std::move(path), detail::shared_mapping(fd.get(), bytes, writable), false);
    }

    /// Takes over the mapping, and the duty to unlink the name; `other` is left empty.
    SharedMemory(SharedMemory&& other) noexcept
        : path_(std::move(other.path_)), mapping_(std::move(other.mapping_)),
          owner_pid_(std::exchange(other.owner_pid_, 0)) {}
    /// Releases this handle as the destructor does (unlinking the name it created), then takes
    /// over `other`'s.
    SharedMemory& operator=(SharedMemory&& other) noexcept {
        if (this != &other) {
            release_name();
            path_ = std::move(other.path_);
            mapping_ = std::move(other.mapping_);
            owner_pid_ = std::exchange(other.owner_pid_, 0);
        }
        return *this;
    }
    SharedMemory(const SharedMemory&) = delete;
    SharedMemory& operator=(const SharedMemory&) = delete;
    /// Unmaps; the creator also unlinks the name (unless keep() was called). Never throws.
    ~SharedMemory() { release_name(); }

    /// The first byte of the mapping (page-aligned).
    [[nodiscard]] std::byte* data() const noexcept { return static_cast<std::byte*>(mapping_.data()); }
    /// The block's size in bytes.
    [[nodiscard]] std::size_t size() const noexcept { return mapping_.size(); }
    /// The whole block as a span.
    [[nodiscard]] std::span<std::byte> bytes() const noexcept { return {data(), size()}; }
    /// The name without its leading '/', as given to attach().
    [[nodiscard]] std::string name() const { return path_.empty() ? path_ : path_.substr(1); }

    /// Removes the name now (any process may); mappings stay valid. Returns false when the
    /// name was already gone.
    bool unlink() {
        const bool owned = is_owner();
        owner_pid_ = 0;
        const bool removed = detail::shm_remove(path_);
        if (owned) detail::shm_names_tracker().disown(path_);
        return removed;
    }
    /// The destructor will leave the name in place (for processes that attach later), and so
    /// will the tracker if this process is killed.
    void keep() noexcept {
        if (is_owner()) detail::shm_names_tracker().disown(path_);
        owner_pid_ = 0;
    }

private:
    SharedMemory(std::string path, detail::shared_mapping mapping, bool owner) noexcept
        : path_(std::move(path)), mapping_(std::move(mapping)), owner_pid_(owner ? ::getpid() : 0) {}

    // Only the creating process unlinks: a forked child that runs destructors (exit(), not
    // mproc's _exit) must not remove the name under its parent.
    [[nodiscard]] bool is_owner() const noexcept { return owner_pid_ != 0 && owner_pid_ == ::getpid(); }
    void release_name() noexcept {
        if (is_owner()) {
            try {
                (void)detail::shm_remove(path_);
            } catch (...) {
                // a destructor cannot report it; the name is at worst left behind
            }
            detail::shm_names_tracker().disown(path_);
        }
        owner_pid_ = 0;
    }

    std::string path_;
    detail::shared_mapping mapping_;
    pid_t owner_pid_ = 0;
};

MPROC_NAMESPACE_END

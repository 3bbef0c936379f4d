// Shared memory mappings: MAP_SHARED memory that forked children inherit (anonymous, or a memfd
// kept open so that a program started by exec can map it too), named POSIX shared memory
// (shm_open) for unrelated processes, and refcounted state placed in a mapping.
#pragma once

#include <mproc/detail/fd.hpp>
#include <mproc/detail/sys.hpp>
#include <mproc/error.hpp>

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>

#include <climits>
#include <cstddef>
#include <memory>
#include <new>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>

MPROC_NAMESPACE_BEGIN
namespace detail {

/// Owns one MAP_SHARED mapping; munmap in the destructor. Move-only.
///
/// Memory mapped before fork() is the *same* memory in parent and child (not a copy-on-write
/// copy), which is what makes every mproc sync object and SharedValue work across processes.
/// @code
/// detail::shared_mapping m(4096);            // zero-filled, shared with children forked later
/// auto* counter = static_cast<std::atomic<int>*>(m.data());
/// @endcode
class shared_mapping {
public:
    shared_mapping() noexcept = default;

    /// An anonymous shared mapping of `bytes` (at least 1), zero-filled.
    /// @throws SystemError when mmap fails (ENOMEM).
    explicit shared_mapping(std::size_t bytes) : shared_mapping(-1, bytes, true) {}

    /// Maps `bytes` of the file (a shm_open or memfd descriptor) `fd`, shared. The descriptor
    /// may be closed afterwards; the mapping stays.
    shared_mapping(int fd, std::size_t bytes, bool writable) : size_(bytes) {
        const int prot = PROT_READ | (writable ? PROT_WRITE : 0);
        const int flags = MAP_SHARED | (fd < 0 ? MAP_ANONYMOUS : 0);
        void* p = sys().mmap(nullptr, bytes == 0 ? 1 : bytes, prot, flags, fd, 0);
        if (p == MAP_FAILED) throw_errno("mmap");
        data_ = p;
    }

    shared_mapping(shared_mapping&& other) noexcept
        : data_(std::exchange(other.data_, nullptr)), size_(std::exchange(other.size_, 0)) {}
    shared_mapping& operator=(shared_mapping&& other) noexcept {
        if (this != &other) {
            reset();
            data_ = std::exchange(other.data_, nullptr);
            size_ = std::exchange(other.size_, 0);
        }
        return *this;
    }
    shared_mapping(const shared_mapping&) = delete;
    shared_mapping& operator=(const shared_mapping&) = delete;
    ~shared_mapping() { reset(); }

    [[nodiscard]] void* data() const noexcept { return data_; }
    [[nodiscard]] std::size_t size() const noexcept { return size_; }
    explicit operator bool() const noexcept { return data_ != nullptr; }

    /// Unmaps now (this process only; other processes keep their view).
    void reset() noexcept {
        if (data_) ::munmap(std::exchange(data_, nullptr), size_ == 0 ? 1 : size_);
        size_ = 0;
    }

private:
    void* data_ = nullptr;
    std::size_t size_ = 0;
};

/// The owner of a shared state's mapping, and the deleter of the pointers make_shared_state
/// returns: the mapping, and the memfd behind it. The descriptor is kept (close-on-exec) so that
/// the state can be handed to a program started by exec (spawn, forkserver), which maps the same
/// file; detail/shared_handle.hpp finds it with std::get_deleter, also through aliasing
/// pointers to a sub-object. `fd` is empty when the state is in anonymous memory: the process
/// had no descriptor left when it was made (it then works as before, but only across fork).
struct shared_state_owner {
    shared_mapping mapping;
    unique_fd fd;
    void operator()(const void*) noexcept {
        mapping.reset();
        fd.reset();
    }
};

/// `bytes` of zero-filled shared memory in a memfd of its own, or in an anonymous mapping when
/// no memfd can be made (EMFILE, ENFILE): a program with more shared objects than descriptors
/// keeps working, and only the exec start methods refuse those objects (with a clear error).
[[nodiscard]] inline shared_state_owner make_state_memory(std::size_t bytes) {
    shared_state_owner owner;
    owner.fd = unique_fd(::memfd_create("mproc-shared", MFD_CLOEXEC));
    if (owner.fd && sys().ftruncate(owner.fd.get(), static_cast<off_t>(bytes == 0 ? 1 : bytes)) == 0) {
        owner.mapping = shared_mapping(owner.fd.get(), bytes, true);
        return owner;
    }
    owner.fd.reset();
    owner.mapping = shared_mapping(bytes);
    return owner;
}

/// Places a `State` (constructed from `args`) at the start of a fresh shared mapping of
/// sizeof(State) + `trailing_bytes` (see make_state_memory), and returns a pointer that keeps the
/// mapping alive: copies share it in this process, and forked children inherit it. Sub-objects
/// can be handed out with shared_ptr's aliasing constructor,
/// `std::shared_ptr<Sub>(state, &state->sub)`.
///
/// The State's destructor never runs: other processes may still use it. States are therefore
/// trivially destructible (process-shared robust mutexes and atomics need no destruction).
/// @code
/// struct event_state { detail::futex_word flag{0}, waiters{0}; };
/// std::shared_ptr<event_state> s = detail::make_shared_state<event_state>();
/// @endcode
template <class State, class... Args>
[[nodiscard]] std::shared_ptr<State> make_shared_state(std::size_t trailing_bytes, Args&&... args) {
    static_assert(std::is_trivially_destructible_v<State>,
                  "state in shared memory is never destroyed: make it trivially destructible");
    static_assert(alignof(State) <= 4096, "a mapping is only page-aligned");
    shared_state_owner owner = make_state_memory(sizeof(State) + trailing_bytes);
    State* state = ::new (owner.mapping.data()) State(std::forward<Args>(args)...);
    return std::shared_ptr<State>(state, std::move(owner));
}

template <class State>
[[nodiscard]] std::shared_ptr<State> make_shared_state() {
    return make_shared_state<State>(0);
}

/// Checks a POSIX shared memory name and returns it with its leading '/'. Accepted: "name" or
/// "/name", 1 to NAME_MAX - 1 characters after the slash, no other '/', not "." or "..".
/// @throws SystemError(EINVAL) whose what() says what a valid name is.
[[nodiscard]] inline std::string shm_path(std::string_view name) {
    if (!name.empty() && name.front() == '/') name.remove_prefix(1);
    const bool ok = !name.empty() && name.size() < NAME_MAX && name != "." && name != ".." &&
                    name.find('/') == std::string_view::npos &&
                    name.find('\0') == std::string_view::npos;
    if (!ok)
        throw SystemError(EINVAL, "mproc::SharedMemory: bad name \"" + std::string(name) +
                                      "\" (want 1-254 characters, no '/' except a leading one)");
    // Built by append: GCC 12 at -O3 warns (-Wrestrict, a false positive) on "/" + string.
    std::string path(1, '/');
    path.append(name);
    return path;
}

/// Creates the shared memory object `path` (from shm_path) of `bytes`, mode 0600, close-on-exec.
/// Fails with EEXIST when the name is taken. A failure after the name was created unlinks it.
[[nodiscard]] inline unique_fd shm_create(const std::string& path, std::size_t bytes) {
    unique_fd fd(sys().shm_open(path.c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600));
    if (!fd) throw_errno(("shm_open(" + path + ")").c_str());
    if (sys().ftruncate(fd.get(), static_cast<off_t>(bytes)) != 0) {
        const int err = errno;
        ::shm_unlink(path.c_str());
        throw_errno(err, "ftruncate");
    }
    return fd;
}

/// Opens the existing shared memory object `path`, close-on-exec.
[[nodiscard]] inline unique_fd shm_attach(const std::string& path, bool writable) {
    unique_fd fd(sys().shm_open(path.c_str(), (writable ? O_RDWR : O_RDONLY) | O_CLOEXEC, 0));
    if (!fd) throw_errno(("shm_open(" + path + ")").c_str());
    return fd;
}

/// The size in bytes of the file behind `fd`.
[[nodiscard]] inline std::size_t fd_size(int fd) {
    struct stat st {};
    if (::fstat(fd, &st) != 0) throw_errno("fstat");
    return static_cast<std::size_t>(st.st_size);
}

/// Removes the name `path`; mappings stay valid until unmapped. Returns false when the name was
/// already gone (ENOENT), which is not an error: some other party unlinked it first.
inline bool shm_remove(const std::string& path) {
    if (::shm_unlink(path.c_str()) == 0) return true;
    if (errno == ENOENT) return false;
    throw_errno(("shm_unlink(" + path + ")").c_str());
}

}  // namespace detail
MPROC_NAMESPACE_END

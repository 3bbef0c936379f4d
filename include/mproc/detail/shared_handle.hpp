// Shared objects (Lock, Queue, SharedValue...) handed to a program started by exec (the spawn and
// forkserver start methods). A fresh program does not inherit the caller's mappings, so each
// object travels as the memfd behind its memory plus a few numbers: the descriptors go beside
// the request (SCM_RIGHTS), the numbers inside it, and the receiver maps the same files, so
// the object it rebuilds is the same object (a put there is a get here, a Lock held there
// excludes this process).
//
// A type opts in by specializing shared_handle<T> (next to its class, which befriends it):
//   static void save(const T&, handle_writer&);   // the caller's side
//   static T load(handle_reader&);                // the new program's side
// The ordinary codec (Pipe, Queue messages) does not know these types: a descriptor in a byte
// message would mean nothing to its reader.
#pragma once

#include <mproc/detail/fd.hpp>
#include <mproc/detail/shm.hpp>
#include <mproc/error.hpp>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <new>
#include <span>
#include <string>
#include <type_traits>
#include <vector>

MPROC_NAMESPACE_BEGIN
namespace detail {

/// Specialized, with save and load, for each shared object that can reach a program started
/// by exec.
template <class T>
struct shared_handle : std::false_type {};

/// Whether T is such a shared object.
template <class T>
inline constexpr bool shared_handle_v = shared_handle<T>::value;

/// The caller's side: numbers for the request, and the descriptors to send beside it. A
/// descriptor that several objects share (a SharedValue and its get_lock()) is sent once.
class handle_writer {
public:
    explicit handle_writer(std::vector<int>& fds) noexcept : fds_(fds) {}

    /// A number for the other side's word().
    void word(std::uint64_t w) { words_.push_back(w); }
    /// A descriptor for the other side's fd(): its index in the list sent.
    void fd(int fd) {
        const auto at = std::find(fds_.begin(), fds_.end(), fd);
        word(static_cast<std::uint64_t>(at - fds_.begin()));
        if (at == fds_.end()) fds_.push_back(fd);
    }
    /// A state from make_shared_state (or a sub-object of one, through an aliasing pointer):
    /// its memfd and its offset in that file, for the other side's state<State>().
    /// @throws Error when the state has no memfd (made when no descriptor was left).
    template <class State>
    void state(const std::shared_ptr<State>& s) {
        const auto* owner = std::get_deleter<shared_state_owner>(s);
        if (!owner || !owner->fd)
            throw Error(
                "mproc: this shared object cannot be passed to a process started by spawn or forkserver: "
                "it was made when the process had no file descriptor left, so it lives in anonymous "
                "memory that only forked children share");
        fd(owner->fd.get());
        word(static_cast<std::uint64_t>(reinterpret_cast<const std::byte*>(s.get()) -
                                        static_cast<const std::byte*>(owner->mapping.data())));
    }

    [[nodiscard]] const std::vector<std::uint64_t>& words() const noexcept { return words_; }

private:
    std::vector<int>& fds_;
    std::vector<std::uint64_t> words_;
};

/// The descriptors that came with a request, and the files of them mapped so far (each mapped
/// once, however many objects live in it).
class received_descriptors {
public:
    received_descriptors() = default;
    explicit received_descriptors(std::vector<unique_fd> fds) : fds_(std::move(fds)), mapped_(fds_.size()) {}

    [[nodiscard]] std::size_t size() const noexcept { return fds_.size(); }

    /// Descriptor `index`, still owned here. @throws DecodeError for an index out of range.
    [[nodiscard]] int fd(std::uint64_t index) const {
        if (index >= fds_.size()) throw DecodeError("mproc: a shared object names a descriptor that did not come");
        return fds_[static_cast<std::size_t>(index)].get();
    }

    /// The whole file of descriptor `index`, mapped shared and writable; the pointer owns the
    /// mapping (and a descriptor of its own, so the object can be passed on again).
    [[nodiscard]] const std::shared_ptr<void>& mapping(std::uint64_t index) {
        const int from = fd(index);
        auto& slot = mapped_[static_cast<std::size_t>(index)];
        if (!slot) {
            shared_state_owner owner;
            owner.fd = unique_fd(::fcntl(from, F_DUPFD_CLOEXEC, 3));
            if (!owner.fd) throw_errno("fcntl");
            const std::size_t bytes = fd_size(owner.fd.get());
            if (bytes == 0) throw DecodeError("mproc: a shared object's memory is empty");
            owner.mapping = shared_mapping(owner.fd.get(), bytes, true);
            void* base = owner.mapping.data();
            slot = std::shared_ptr<void>(base, std::move(owner));
        }
        return slot;
    }

private:
    std::vector<unique_fd> fds_;
    std::vector<std::shared_ptr<void>> mapped_;
};

/// The new program's side: reads back what handle_writer wrote.
class handle_reader {
public:
    handle_reader(received_descriptors& fds, std::span<const std::uint64_t> words) noexcept
        : fds_(fds), words_(words) {}

    /// The next number. @throws DecodeError when none is left.
    [[nodiscard]] std::uint64_t word() {
        if (next_ >= words_.size()) throw DecodeError("mproc: a shared object's handle is truncated");
        return words_[next_++];
    }
    /// The next descriptor (owned by the list: dup it to keep it).
    [[nodiscard]] int fd() { return fds_.fd(word()); }
    /// The next state: the object of type State that the other process placed in that file,
    /// at that offset, with at least `bytes` of the file from there on. The pointer keeps the
    /// mapping alive.
    /// @throws DecodeError when the offset is misaligned or the file too short.
    template <class State>
    [[nodiscard]] std::shared_ptr<State> state(std::size_t bytes = sizeof(State)) {
        const std::uint64_t index = word();
        const std::uint64_t offset = word();
        const std::shared_ptr<void>& file = fds_.mapping(index);
        const std::size_t size = std::get_deleter<shared_state_owner>(file)->mapping.size();
        if (offset % alignof(State) != 0 || offset > size || bytes > size - offset)
            throw DecodeError("mproc: a shared object's handle points outside its memory");
        return std::shared_ptr<State>(file, std::launder(reinterpret_cast<State*>(static_cast<std::byte*>(file.get()) + offset)));
    }
    /// The bytes of its file from `s` to the end, for a state with trailing elements.
    template <class State>
    [[nodiscard]] static std::size_t room(const std::shared_ptr<State>& s) noexcept {
        const auto* owner = std::get_deleter<shared_state_owner>(s);
        return owner->mapping.size() -
               static_cast<std::size_t>(reinterpret_cast<const std::byte*>(s.get()) -
                                        static_cast<const std::byte*>(owner->mapping.data()));
    }
    /// Throws DecodeError unless every word was read.
    void finish() const {
        if (next_ != words_.size()) throw DecodeError("mproc: a shared object's handle has words left over");
    }

private:
    received_descriptors& fds_;
    std::span<const std::uint64_t> words_;
    std::size_t next_ = 0;
};

}  // namespace detail
MPROC_NAMESPACE_END

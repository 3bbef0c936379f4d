// Shared memory: SharedValue<T> and SharedArray<T> (Python's multiprocessing.Value and Array),
// inherited by children; SharedMemory (Python's shared_memory.SharedMemory), named, for
// unrelated processes.
#pragma once

#include <mproc/detail/robust_mutex.hpp>
#include <mproc/detail/shared_handle.hpp>
#include <mproc/detail/shm.hpp>
#include <mproc/error.hpp>
#include <mproc/sync.hpp>

#include <algorithm>
#include <atomic>
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <memory>
#include <mutex>
#include <new>
#include <span>
#include <string>
#include <string_view>
#include <type_traits>

MPROC_NAMESPACE_BEGIN

namespace detail {
template <class T>
concept shareable = std::is_trivially_copyable_v<T> && !std::is_pointer_v<T>;

// Atomic operations across processes need lock-free atomics: a lock-based std::atomic_ref takes
// a lock that lives in one process only.
template <class T>
concept lock_free_atomic = std::atomic_ref<T>::is_always_lock_free;

template <class T>
struct value_block {
    robust_mutex mutex;
    alignas(std::atomic_ref<T>::required_alignment) T value;
};
}  // namespace detail

/// One T in shared memory with a lock, like Python's multiprocessing.Value. Copies of the handle,
/// and children forked after it was made, see the same value.
///
/// value() is a plain reference: guard compound updates with get_lock(). When T is lock-free
/// atomic (integers, floating point, small trivially copyable types), load/store/fetch_add and
/// friends need no lock. A process that dies holding get_lock() releases it (see Lock).
/// @code
/// mproc::SharedValue<long> counter(0);
/// { std::lock_guard g(counter.get_lock()); counter.value() += 1; }
/// counter.fetch_add(1);
/// @endcode
template <class T>
class SharedValue {
    static_assert(detail::shareable<T>,
                  "mproc::SharedValue<T>: T must be trivially copyable and not a pointer (another "
                  "process cannot follow a pointer into this one)");

public:
    /// A value initialised to `initial`.
    explicit SharedValue(const T& initial = T{})
        : block_(detail::make_shared_state<detail::value_block<T>>()),
          lock_(std::shared_ptr<detail::robust_mutex>(block_, &block_->mutex)) {
        ::new (&block_->value) T(initial);
    }

    /// The value itself, in shared memory.
    [[nodiscard]] T& value() noexcept { return block_->value; }
    /// The value itself, read-only.
    [[nodiscard]] const T& value() const noexcept { return block_->value; }
    /// The lock that guards value(); the same lock in every process.
    [[nodiscard]] Lock& get_lock() noexcept { return lock_; }

    /// Reads the value under the lock (Python's `v.value`); works for any T.
    [[nodiscard]] T get() {
        std::lock_guard g(lock_);
        return block_->value;
    }
    /// Writes the value under the lock; works for any T.
    void set(const T& v) {
        std::lock_guard g(lock_);
        block_->value = v;
    }

    /// The value as a std::atomic_ref, for the operations not spelled out below.
    [[nodiscard]] std::atomic_ref<T> atomic() noexcept requires detail::lock_free_atomic<T>
    {
        return std::atomic_ref<T>(block_->value);
    }
    /// Reads the value atomically, without the lock.
    [[nodiscard]] T load(std::memory_order o = std::memory_order_seq_cst) const noexcept
        requires detail::lock_free_atomic<T>
    {
        return std::atomic_ref<T>(block_->value).load(o);
    }
    /// Writes `v` atomically, without the lock.
    void store(T v, std::memory_order o = std::memory_order_seq_cst) noexcept
        requires detail::lock_free_atomic<T>
    {
        atomic().store(v, o);
    }
    /// Writes `v` atomically; returns the previous value.
    T exchange(T v, std::memory_order o = std::memory_order_seq_cst) noexcept
        requires detail::lock_free_atomic<T>
    {
        return atomic().exchange(v, o);
    }
    /// Writes `desired` if the value equals `expected` (a strong compare-and-swap); otherwise
    /// loads the current value into `expected`. True when it wrote.
    bool compare_exchange(T& expected, T desired) noexcept requires detail::lock_free_atomic<T>
    {
        return atomic().compare_exchange_strong(expected, desired);
    }
    /// Adds atomically; returns the previous value.
    T fetch_add(T d, std::memory_order o = std::memory_order_seq_cst) noexcept
        requires detail::lock_free_atomic<T> && (std::integral<T> || std::floating_point<T>)
    {
        return atomic().fetch_add(d, o);
    }
    /// Subtracts atomically; returns the previous value.
    T fetch_sub(T d, std::memory_order o = std::memory_order_seq_cst) noexcept
        requires detail::lock_free_atomic<T> && (std::integral<T> || std::floating_point<T>)
    {
        return atomic().fetch_sub(d, o);
    }
    /// Bitwise and, atomically (integers); returns the previous value.
    T fetch_and(T m, std::memory_order o = std::memory_order_seq_cst) noexcept
        requires detail::lock_free_atomic<T> && std::integral<T>
    {
        return atomic().fetch_and(m, o);
    }
    /// Bitwise or, atomically (integers); returns the previous value.
    T fetch_or(T m, std::memory_order o = std::memory_order_seq_cst) noexcept
        requires detail::lock_free_atomic<T> && std::integral<T>
    {
        return atomic().fetch_or(m, o);
    }
    /// Bitwise exclusive or, atomically (integers); returns the previous value.
    T fetch_xor(T m, std::memory_order o = std::memory_order_seq_cst) noexcept
        requires detail::lock_free_atomic<T> && std::integral<T>
    {
        return atomic().fetch_xor(m, o);
    }

private:
    template <class>
    friend struct detail::shared_handle;
    explicit SharedValue(std::shared_ptr<detail::value_block<T>> block)
        : block_(std::move(block)), lock_(std::shared_ptr<detail::robust_mutex>(block_, &block_->mutex)) {}

    std::shared_ptr<detail::value_block<T>> block_;
    Lock lock_;
};

namespace detail {
template <class T>
struct array_block {
    robust_mutex mutex;
    std::size_t size = 0;
    static constexpr std::size_t offset =
        (sizeof(robust_mutex) + sizeof(std::size_t) + alignof(T) - 1) / alignof(T) * alignof(T);
    T* elements() noexcept {
        return std::launder(reinterpret_cast<T*>(reinterpret_cast<std::byte*>(this) + offset));
    }
};
}  // namespace detail

/// A fixed-size array of T in shared memory with a lock, like Python's multiprocessing.Array.
/// @code
/// mproc::SharedArray<double> a(1000);          // 1000 zeros
/// a[3] = 1.5;
/// { std::lock_guard g(a.get_lock()); std::fill(a.begin(), a.end(), 0.0); }
/// @endcode
template <class T>
class SharedArray {
    static_assert(detail::shareable<T>,
                  "mproc::SharedArray<T>: T must be trivially copyable and not a pointer");
    static_assert(alignof(T) <= 4096, "mproc::SharedArray<T>: T's alignment exceeds a page");

public:
    /// The element type.
    using value_type = T;
    /// A plain pointer into the shared elements.
    using iterator = T*;
    /// A plain pointer to const elements.
    using const_iterator = const T*;

    /// `n` elements, each initialised to `fill`.
    explicit SharedArray(std::size_t n, const T& fill = T{})
        : block_(detail::make_shared_state<detail::array_block<T>>(trailing_bytes(n))),
          lock_(std::shared_ptr<detail::robust_mutex>(block_, &block_->mutex)) {
        block_->size = n;
        T* p = block_->elements();
        for (std::size_t i = 0; i < n; ++i) ::new (p + i) T(fill);
    }
    /// A copy of `init`.
    explicit SharedArray(std::span<const T> init) : SharedArray(init.size()) {
        std::copy(init.begin(), init.end(), begin());
    }
    /// A copy of `init`: `mproc::SharedArray<int> a{1, 2, 3};`.
    SharedArray(std::initializer_list<T> init) : SharedArray(std::span<const T>(init.begin(), init.size())) {}

    /// The number of elements, fixed at construction.
    [[nodiscard]] std::size_t size() const noexcept { return block_->size; }
    /// Element `i`, unchecked; guard compound updates with get_lock().
    [[nodiscard]] T& operator[](std::size_t i) noexcept { return data()[i]; }
    /// Element `i` of a const array, unchecked.
    [[nodiscard]] const T& operator[](std::size_t i) const noexcept { return data()[i]; }
    /// The first element, in shared memory.
    [[nodiscard]] T* data() noexcept { return block_->elements(); }
    /// The first element of a const array.
    [[nodiscard]] const T* data() const noexcept { return block_->elements(); }
    /// An iterator to the first element.
    [[nodiscard]] iterator begin() noexcept { return data(); }
    /// An iterator past the last element.
    [[nodiscard]] iterator end() noexcept { return data() + size(); }
    /// A const iterator to the first element.
    [[nodiscard]] const_iterator begin() const noexcept { return data(); }
    /// A const iterator past the last element.
    [[nodiscard]] const_iterator end() const noexcept { return data() + size(); }
    /// The elements as a std::span.
    [[nodiscard]] std::span<T> span() noexcept { return {data(), size()}; }
    /// The elements of a const array as a std::span.
    [[nodiscard]] std::span<const T> span() const noexcept { return {data(), size()}; }
    /// The lock that guards the elements; the same lock in every process.
    [[nodiscard]] Lock& get_lock() noexcept { return lock_; }
    /// Element `i` as a std::atomic_ref (fetch_add and friends without the lock).
    [[nodiscard]] std::atomic_ref<T> atomic(std::size_t i) noexcept
        requires detail::lock_free_atomic<T> && (alignof(T) >= std::atomic_ref<T>::required_alignment)
    {
        return std::atomic_ref<T>(data()[i]);
    }

private:
    // Bytes past the header's sizeof that the elements need (they start at `offset`).
    static std::size_t trailing_bytes(std::size_t n) {
        using block = detail::array_block<T>;
        if (n > (SIZE_MAX - 4096) / sizeof(T)) throw std::bad_array_new_length();
        return std::max(block::offset + n * sizeof(T), sizeof(block)) - sizeof(block);
    }

    template <class>
    friend struct detail::shared_handle;
    explicit SharedArray(std::shared_ptr<detail::array_block<T>> block)
        : block_(std::move(block)), lock_(std::shared_ptr<detail::robust_mutex>(block_, &block_->mutex)) {}

    std::shared_ptr<detail::array_block<T>> block_;
    Lock lock_;
};

/// @cond
namespace detail {
template <class T>
struct shared_handle<SharedValue<T>> : std::true_type {
    static void save(const SharedValue<T>& v, handle_writer& w) { w.state(v.block_); }
    static SharedValue<T> load(handle_reader& r) { return SharedValue<T>(r.state<value_block<T>>()); }
};
template <class T>
struct shared_handle<SharedArray<T>> : std::true_type {
    static void save(const SharedArray<T>& a, handle_writer& w) { w.state(a.block_); }
    static SharedArray<T> load(handle_reader& r) {
        auto block = r.state<array_block<T>>();
        // The elements follow the header: the file must hold as many as the header says.
        const std::size_t room = handle_reader::room(block);
        if (room < array_block<T>::offset || (room - array_block<T>::offset) / sizeof(T) < block->size)
            throw DecodeError("mproc::SharedArray: the handle's memory does not hold its elements");
        return SharedArray<T>(std::move(block));
    }
};
}  // namespace detail
/// @endcond

MPROC_NAMESPACE_END

#include <mproc/detail/shared_memory.hpp>

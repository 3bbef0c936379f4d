// mproc::Future: the result of a task submitted to a Pool, and mproc::as_completed.
#pragma once

#include <mproc/detail/pool_results.hpp>
#include <mproc/error.hpp>

#include <chrono>
#include <exception>
#include <functional>
#include <iterator>
#include <memory>
#include <vector>

MPROC_NAMESPACE_BEGIN

class Pool;

/// The result of Pool::submit, to be taken once it is ready.
/// @code
/// mproc::Future<int> f = pool.submit(square, 7);
/// int r = f.get();   // 49; or RemoteError / ProcessCrashed
/// @endcode
template <class R>
class Future {
public:
    /// An empty Future (valid() is false), to be assigned one from Pool::submit.
    Future() = default;

    /// Waits, then returns the task's result.
    /// @throws RemoteError when the task threw; ProcessCrashed when its worker died;
    ///         StateError when the pool was terminated first, or on an empty Future.
    R get() {
        wait();
        if (state_->error) std::rethrow_exception(state_->error);
        if (!state_->settled) {
            if (core_->broken()) std::rethrow_exception(core_->broken());
            throw StateError("mproc::Future: the pool was terminated before the task ended");
        }
        return detail::decode_outcome<R>(state_->outcome);
    }
    /// Waits until the task has ended (or the pool was terminated).
    void wait() { (void)wait_until(detail::Deadline::never()); }
    /// Waits at most `timeout`; true when ready.
    template <class Rep, class Period>
    bool wait_for(std::chrono::duration<Rep, Period> timeout) {
        return wait_until(detail::Deadline::after(timeout));
    }
    /// True when get() will not block.
    [[nodiscard]] bool ready() {
        check_valid();
        if (state_->settled || state_->error) return true;
        if (!core_->running()) return true;  // terminated: get() says so
        if (!core_->settled(seq_)) return false;
        core_->retire(seq_);  // harvests the outcome into state_
        return true;
    }
    /// False for a default-constructed Future: get(), wait() and ready() then throw StateError.
    [[nodiscard]] bool valid() const noexcept { return state_ != nullptr; }

private:
    friend class Pool;
    template <class T>
    friend class AsCompleted;

    struct shared_state {
        bool settled = false;
        std::vector<std::byte> outcome;
        std::exception_ptr error;
    };

    Future(std::shared_ptr<detail::pool_core> core, std::uint64_t seq)
        : core_(std::move(core)), state_(std::make_shared<shared_state>()), seq_(seq) {
        // The job slot is reused once settled, so the outcome is copied out at that moment.
        core_->record(seq).on_settled = [core = core_.get(), state = state_, seq] {
            if (core->failed(seq)) {
                state->error = core->error(seq);
            } else {
                auto span = core->arena().at<detail::arena_span>(core->job(seq).output)[0];
                auto bytes = detail::arena_bytes(core->arena(), span);
                state->outcome.assign(bytes.begin(), bytes.end());
            }
            state->settled = true;
        };
    }

    void check_valid() const {
        if (!state_) throw StateError("mproc::Future: an empty Future");
    }
    bool wait_until(const detail::Deadline& deadline) {
        check_valid();
        return ready() || core_->wait([&] { return ready(); }, deadline);
    }

    std::shared_ptr<detail::pool_core> core_;
    std::shared_ptr<shared_state> state_;
    std::uint64_t seq_ = 0;
};

/// The range as_completed returns: yields each Future as it becomes ready.
template <class R>
class AsCompleted {
public:
    /// Watches `futures`, which must outlive the range; see as_completed.
    explicit AsCompleted(std::vector<Future<R>>& futures) {
        for (auto& f : futures) pending_.push_back(&f);
    }

    /// @cond
    // A single-pass input iterator; users only see it through range-for.
    class iterator {
    public:
        using value_type = Future<R>;
        using difference_type = std::ptrdiff_t;
        iterator() = default;
        explicit iterator(AsCompleted* owner) : owner_(owner) { owner_->advance(); }
        Future<R>& operator*() const { return *owner_->current_; }
        iterator& operator++() {
            owner_->advance();
            return *this;
        }
        void operator++(int) { ++*this; }
        friend bool operator==(const iterator& it, std::default_sentinel_t) { return it.owner_->done(); }

    private:
        AsCompleted* owner_ = nullptr;
    };
    /// @endcond

    /// Waits for the first Future to be ready; the iteration yields each one once, as a Future<R>&.
    iterator begin() { return iterator(this); }
    /// The end of the iteration: every Future has been yielded.
    std::default_sentinel_t end() { return {}; }
    /// True once every Future has been yielded.
    [[nodiscard]] bool done() const noexcept { return current_ == nullptr; }

private:
    void advance() {
        current_ = nullptr;
        if (pending_.empty()) return;
        auto take_ready = [&] {
            for (std::size_t i = 0; i < pending_.size(); ++i)
                if (!pending_[i]->valid() || pending_[i]->ready()) {
                    current_ = pending_[i];
                    pending_.erase(pending_.begin() + static_cast<std::ptrdiff_t>(i));
                    return true;
                }
            return false;
        };
        if (take_ready()) return;
        // Futures of one pool wake it together; those of several pools are polled in slices.
        auto& core = *pending_.front()->core_;
        while (!core.wait(take_ready, detail::Deadline::after(std::chrono::milliseconds(10)))) {
        }
    }

    std::vector<Future<R>*> pending_;
    Future<R>* current_ = nullptr;
};

/// Each Future of `futures` as soon as it is ready, in the order they complete.
/// @code
/// for (mproc::Future<int>& done : mproc::as_completed(futures)) use(done.get());
/// @endcode
template <class R>
[[nodiscard]] AsCompleted<R> as_completed(std::vector<Future<R>>& futures) {
    return AsCompleted<R>(futures);
}

MPROC_NAMESPACE_END

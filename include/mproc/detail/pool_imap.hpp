// mproc::ImapRange: the lazy results of Pool::imap (in order) and Pool::imap_unordered.
#pragma once

#include <mproc/detail/pool_results.hpp>

#include <iterator>
#include <optional>
#include <vector>

MPROC_NAMESPACE_BEGIN

/// A single-pass range over a map's results as they complete. In order (`Unordered` false): each
/// result as soon as it and every one before it is done; an error is thrown when iteration
/// reaches the failed item, after every result before it. Unordered: chunk by chunk in the order
/// the workers finish them. Dropping the range early cancels the tasks not yet started.
template <class R, bool Unordered = false>
class ImapRange {
public:
    ImapRange() = default;
    explicit ImapRange(detail::job_ticket<R> ticket) : ticket_(std::move(ticket)) {}
    ImapRange(ImapRange&& other) noexcept
        : ticket_(std::move(other.ticket_)), buffer_(std::move(other.buffer_)), at_(other.at_),
          next_chunk_(other.next_chunk_), finished_(other.finished_) {
        other.ticket_.core.reset();
    }
    ImapRange& operator=(ImapRange&&) = delete;
    ~ImapRange() {
        if (ticket_.core) ticket_.core->retire(ticket_.seq);  // cancels what has not started
    }

    class iterator {
    public:
        using value_type = R;
        using difference_type = std::ptrdiff_t;
        iterator() = default;
        explicit iterator(ImapRange* owner) : owner_(owner) { owner_->load_next(); }
        const R& operator*() const { return owner_->buffer_[owner_->at_]; }
        iterator& operator++() {
            if (++owner_->at_ == owner_->buffer_.size()) owner_->load_next();
            return *this;
        }
        void operator++(int) { ++*this; }
        friend bool operator==(const iterator& it, std::default_sentinel_t) {
            return it.owner_ == nullptr || it.owner_->finished();
        }

    private:
        ImapRange* owner_ = nullptr;
    };

    iterator begin() { return iterator(this); }
    [[nodiscard]] bool finished() const noexcept { return finished_; }
    std::default_sentinel_t end() { return {}; }

private:
    /// Fills the buffer with the next chunk's results; sets finished_ at the end.
    void load_next() {
        buffer_.clear();
        at_ = 0;
        while (buffer_.empty()) {
            if (!ticket_.core || next_chunk_ == ticket_.chunks()) {
                finished_ = true;
                if (ticket_.core) ticket_.core->retire(ticket_.seq);
                ticket_.core.reset();
                return;
            }
            const std::uint64_t chunk = Unordered ? wait_for_logged_chunk() : wait_for_chunk(next_chunk_);
            std::uint64_t end = ticket_.end_item(chunk);
            if (ticket_.core->failed(ticket_.seq)) {
                const std::uint64_t bad = ticket_.job().error_item;
                if (bad >= ticket_.first_item(chunk) && bad < end) end = bad;  // the failed chunk's good part
                if (end <= ticket_.first_item(chunk)) ticket_.throw_if_failed_or_gone();
            }
            ticket_.read_chunk(chunk, end, buffer_);
            ++next_chunk_;
        }
    }

    std::uint64_t wait_for_chunk(std::uint64_t chunk) {
        auto& core = *ticket_.core;
        (void)core.wait([&] { return ticket_.chunk_done(chunk) || core.failed(ticket_.seq) || !core.running(); },
                        detail::Deadline::never(), /*every_chunk=*/true);
        if (!ticket_.chunk_done(chunk)) ticket_.throw_if_failed_or_gone();
        return chunk;
    }

    std::uint64_t wait_for_logged_chunk() {
        auto& core = *ticket_.core;
        auto& entry = core.arena().template at<std::atomic<std::uint32_t>>(ticket_.job().log)[next_chunk_];
        (void)core.wait([&] { return entry.load(std::memory_order_acquire) != 0 || core.failed(ticket_.seq) || !core.running(); },
                        detail::Deadline::never(), /*every_chunk=*/true);
        const std::uint32_t logged = entry.load(std::memory_order_acquire);
        if (logged == 0) ticket_.throw_if_failed_or_gone();
        return logged - 1;
    }

    detail::job_ticket<R> ticket_;
    std::vector<R> buffer_;
    std::size_t at_ = 0;
    std::uint64_t next_chunk_ = 0;
    bool finished_ = false;
};

MPROC_NAMESPACE_END

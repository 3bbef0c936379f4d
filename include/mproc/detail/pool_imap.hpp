// mproc::ImapRange: the lazy results of Pool::imap (in order) and Pool::imap_unordered.
#pragma once

#include <mproc/detail/pool_results.hpp>

#include <deque>
#include <functional>
#include <iterator>
#include <optional>
#include <type_traits>
#include <vector>

MPROC_NAMESPACE_BEGIN

namespace detail {
/// Items imap takes from its input and posts at a time (one job each).
[[nodiscard]] inline std::uint64_t imap_batch_items(std::uint64_t asked, std::uint64_t chunksize, unsigned workers) {
    if (asked != 0) return asked;
    return std::clamp<std::uint64_t>(std::max<std::uint64_t>(chunksize, 1) * workers * 8, 256, 65536);
}
}  // namespace detail

/// A single-pass range over a map's results as they complete. The inputs are taken from their
/// range a batch at a time (MapOptions::lookahead items), at most two batches ahead of the
/// reader, so an endless or huge input is never laid out whole. In order (`Unordered` false):
/// each result as soon as it and every one before it is done; an error is thrown when iteration
/// reaches the failed item, after every result before it. Unordered: chunk by chunk in the order
/// the workers finish them, batch after batch. Dropping the range early cancels the tasks not
/// yet started.
/// @headerfile pool.hpp <mproc/pool.hpp>
template <class R, bool Unordered = false>
class ImapRange {
public:
    /// What the iteration yields: a const reference into the buffered results, or a bool by
    /// value (the buffer is a std::vector<bool>, whose bits cannot be referred to).
    using reference = std::conditional_t<std::is_same_v<R, bool>, bool, const R&>;
    /// @cond
    /// Posts the batch whose first item has index `base`, or says the input is exhausted.
    using Feeder = std::function<std::optional<detail::job_ticket<R>>(std::uint64_t base)>;
    /// @endcond

    /// An empty range (already finished).
    ImapRange() = default;
    /// @cond
    /// Posts the first two batches; Pool::imap and imap_unordered make these.
    explicit ImapRange(Feeder feeder) : feeder_(std::move(feeder)) {
        try {
            top_up();
        } catch (...) {
            release_batches();  // no destructor runs for a constructor that throws
            throw;
        }
    }
    /// @endcond
    /// Takes over `other`'s tasks; `other` is left empty.
    ImapRange(ImapRange&& other) noexcept
        : feeder_(std::move(other.feeder_)), batches_(std::move(other.batches_)), buffer_(std::move(other.buffer_)),
          at_(other.at_), posted_items_(other.posted_items_), failed_here_(other.failed_here_),
          finished_(other.finished_) {
        other.batches_.clear();
        other.feeder_ = nullptr;
    }
    ImapRange& operator=(ImapRange&&) = delete;
    ~ImapRange() { release_batches(); }

    /// @cond
    // A single-pass input iterator; users only see it through range-for.
    class iterator {
    public:
        using value_type = R;
        using difference_type = std::ptrdiff_t;
        using reference = ImapRange::reference;
        iterator() = default;
        explicit iterator(ImapRange* owner) : owner_(owner) { owner_->load_next(); }
        reference operator*() const { return owner_->buffer_[owner_->at_]; }
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
    /// @endcond

    /// Waits for the first result; the iteration yields each result as a const R& (a bool by
    /// value when R is bool). Single pass:
    /// call it once.
    /// @throws RemoteError, ProcessCrashed or TimeoutError, like Pool::map, when iteration reaches
    ///         a failed task (so does advancing the iterator).
    iterator begin() { return iterator(this); }
    /// True once every result has been read, or an error was thrown.
    [[nodiscard]] bool finished() const noexcept { return finished_; }
    /// The end of the results.
    std::default_sentinel_t end() { return {}; }

private:
    /// One posted batch and how far the reader got in it.
    struct batch {
        detail::job_ticket<R> ticket;
        std::uint64_t next_chunk = 0;
    };

    /// Lets every posted batch go: what has not started is cancelled.
    void release_batches() noexcept {
        for (auto& b : batches_) b.ticket.core->retire(b.ticket.seq);
        batches_.clear();
    }

    /// Keeps two batches posted while the input lasts.
    void top_up() {
        while (feeder_ && batches_.size() < 2) {
            std::optional<detail::job_ticket<R>> ticket = feeder_(posted_items_);
            if (!ticket) {
                feeder_ = nullptr;
                break;
            }
            posted_items_ += ticket->job().items;
            batches_.push_back(batch{std::move(*ticket)});
        }
    }

    /// Fills the buffer with the next chunk's results; sets finished_ at the end.
    void load_next() {
        buffer_.clear();
        at_ = 0;
        if (failed_here_) fail();  // the reader has reached the failed item
        while (buffer_.empty()) {
            if (!batches_.empty() && batches_.front().next_chunk == batches_.front().ticket.chunks()) {
                batches_.front().ticket.core->retire(batches_.front().ticket.seq);
                batches_.pop_front();
                top_up();
            }
            if (batches_.empty()) {
                finished_ = true;
                return;
            }
            batch& b = batches_.front();
            const std::uint64_t chunk = Unordered ? wait_for_logged_chunk(b) : wait_for_chunk(b);
            std::uint64_t end = b.ticket.end_item(chunk);
            if (b.ticket.core->failed(b.ticket.seq)) {
                const std::uint64_t bad = b.ticket.job().error_item;
                if (bad >= b.ticket.first_item(chunk) && bad < end) {
                    // The failed chunk: its good part, then the error. Chunks after it may be
                    // done too (claimed before the job was cancelled): never read past it.
                    end = bad;
                    failed_here_ = true;
                    if (end <= b.ticket.first_item(chunk)) fail();
                }
            }
            b.ticket.read_chunk(chunk, end, buffer_);
            ++b.next_chunk;
        }
    }

    /// Throws the front batch's error; the range is finished and lets every batch go.
    [[noreturn]] void fail() {
        finished_ = true;
        feeder_ = nullptr;
        detail::job_ticket<R> failed = std::move(batches_.front().ticket);
        batches_.pop_front();
        release_batches();
        failed.throw_if_failed_or_gone();
        throw StateError("mproc::Pool: an imap batch failed without an error");  // not reached
    }

    // In order, a failed job still owes the reader every result before its failed item: chunks
    // are claimed in order, so each one before the failed chunk was claimed before the failure
    // and ends (done, or lost with its worker). Wait for the chunk, or for the failed job to
    // settle (every claimed chunk ended), not just for the failure.
    std::uint64_t wait_for_chunk(const batch& b) {
        auto& core = *b.ticket.core;
        (void)core.wait([&] {
            return b.ticket.chunk_done(b.next_chunk) || (core.failed(b.ticket.seq) && core.settled(b.ticket.seq)) ||
                   !core.running();
        }, detail::Deadline::never(), /*every_chunk=*/true);
        if (!b.ticket.chunk_done(b.next_chunk)) fail();
        return b.next_chunk;
    }

    std::uint64_t wait_for_logged_chunk(const batch& b) {
        auto& core = *b.ticket.core;
        auto& entry = core.arena().template at<std::atomic<std::uint32_t>>(b.ticket.job().log)[b.next_chunk];
        (void)core.wait([&] { return entry.load(std::memory_order_acquire) != 0 || core.failed(b.ticket.seq) || !core.running(); },
                        detail::Deadline::never(), /*every_chunk=*/true);
        const std::uint32_t logged = entry.load(std::memory_order_acquire);
        if (logged == 0) fail();
        return logged - 1;
    }

    Feeder feeder_;
    std::deque<batch> batches_;
    std::vector<R> buffer_;
    std::size_t at_ = 0;
    std::uint64_t posted_items_ = 0;
    bool failed_here_ = false;  // the buffer ends just before the failed item
    bool finished_ = false;
};

MPROC_NAMESPACE_END

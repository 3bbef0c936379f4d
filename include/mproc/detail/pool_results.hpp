// Moving a map's data through the Pool's arena: laying out inputs and result space before a job
// is published, and reading results back (all at once for map, chunk by chunk for imap).
#pragma once

#include <mproc/detail/pool_core.hpp>
#include <mproc/detail/progress.hpp>

#include <algorithm>
#include <cstring>
#include <memory>
#include <ranges>
#include <vector>

MPROC_NAMESPACE_BEGIN
namespace detail {

/// Items per chunk: the one asked for, else about 64 chunks per worker. Chunks are claimed
/// one compare-and-swap each, so many small chunks cost little and keep uneven work balanced
/// (Python's default, n / (4 x workers), leaves a core idle when the last chunks cost more).
[[nodiscard]] inline std::uint64_t chunk_size_for(std::uint64_t items, unsigned workers, std::uint64_t asked) {
    const std::uint64_t chunks_wanted = std::uint64_t{workers} * 64;
    std::uint64_t size = asked != 0 ? asked : (items + chunks_wanted - 1) / chunks_wanted;
    // The claim word holds at most max_chunks chunks: raise the size if a job would need more.
    size = std::max(size, (items + max_chunks - 1) / max_chunks);
    return std::max<std::uint64_t>(size, 1);
}

template <class In, class Range>
void lay_out_inputs(pool_core& core, std::uint64_t seq, const Range& inputs) {
    job_slot& job = core.job(seq);
    shared_arena& arena = core.arena();
    if constexpr (input_layout_v<Range, In> == input_layout::iota) {
        job.input = static_cast<std::uint64_t>(*std::ranges::begin(inputs));
    } else if constexpr (input_layout_v<Range, In> == input_layout::bulk) {
        job.input = arena.allocate(job.items * sizeof(In));
        In* out = arena.at<In>(job.input);
        if constexpr (std::ranges::contiguous_range<Range> &&
                      std::is_same_v<std::ranges::range_value_t<Range>, In>) {
            std::memcpy(out, std::ranges::data(inputs), job.items * sizeof(In));
        } else {
            std::size_t i = 0;
            for (auto&& x : inputs) {
                const In value = static_cast<In>(x);
                std::memcpy(out + i++, &value, sizeof(In));
            }
        }
    } else {
        const std::uint64_t chunks = core.record(seq).chunks;
        std::vector<arena_span> spans(chunks);
        std::vector<std::byte> bytes;
        Encoder encoder(bytes);
        std::uint64_t i = 0;
        for (auto&& x : inputs) {
            if (i % job.chunk_size == 0) spans[i / job.chunk_size].offset = bytes.size();
            encoder(static_cast<const In&>(x));
            ++i;
            if (i % job.chunk_size == 0 || i == job.items)
                spans[(i - 1) / job.chunk_size].length = bytes.size() - spans[(i - 1) / job.chunk_size].offset;
        }
        const arena_span all = store_in_arena(arena, bytes);
        for (auto& s : spans) s.offset += all.offset;
        job.input = arena.allocate(chunks * sizeof(arena_span));
        std::memcpy(arena.at<arena_span>(job.input), spans.data(), chunks * sizeof(arena_span));
    }
}

template <class R>
void lay_out_outputs(pool_core& core, std::uint64_t seq) {
    job_slot& job = core.job(seq);
    if constexpr (pool_bulk_v<R>) {
        job.output = core.arena().allocate(job.items * sizeof(R));
    } else {
        const std::uint64_t bytes = core.record(seq).chunks * sizeof(arena_span);
        job.output = core.arena().allocate(bytes);
        std::memset(core.arena().base() + job.output, 0, bytes);
    }
}

/// The parent's handle on one posted map job: waits for it and reads its results.
template <class R>
struct job_ticket {
    std::shared_ptr<pool_core> core;
    std::uint64_t seq = 0;

    [[nodiscard]] job_slot& job() const { return core->job(seq); }
    [[nodiscard]] std::uint64_t chunks() const { return core->record(seq).chunks; }
    [[nodiscard]] std::uint64_t first_item(std::uint64_t chunk) const { return chunk * job().chunk_size; }
    [[nodiscard]] std::uint64_t end_item(std::uint64_t chunk) const {
        return std::min(job().items, first_item(chunk) + job().chunk_size);
    }
    [[nodiscard]] bool chunk_done(std::uint64_t chunk) const {
        return chunk_state_of(core->arena(), job(), chunk).load(std::memory_order_acquire) ==
               detail::chunk_done;
    }

    /// Throws the job's error (and lets the job go) when it failed; StateError when the pool
    /// was terminated under it.
    void throw_if_failed_or_gone() const {
        if (core->broken()) std::rethrow_exception(core->broken());
        if (core->failed(seq)) {
            std::exception_ptr e = core->error(seq);
            core->retire(seq);
            std::rethrow_exception(e);
        }
        if (!core->running()) throw StateError("mproc::Pool: the pool was terminated during a map");
    }

    /// Appends the results of items [first, end) of a done chunk to `out`.
    template <class Out>
    void read_chunk(std::uint64_t chunk, std::uint64_t end, Out& out) const {
        const std::uint64_t first = first_item(chunk);
        if constexpr (pool_bulk_v<R>) {
            const R* src = core->arena().template at<const R>(job().output);
            if constexpr (std::is_same_v<R, bool>) {
                for (std::uint64_t i = first; i < end; ++i) out.push_back(src[i]);
            } else {
                const std::size_t at = out.size();
                out.resize(at + (end - first));
                std::memcpy(out.data() + at, src + first, (end - first) * sizeof(R));
            }
        } else {
            Decoder decoder(arena_bytes(core->arena(), core->arena().template at<arena_span>(job().output)[chunk]));
            for (std::uint64_t i = first; i < end; ++i) out.push_back(decode<R>(decoder));
        }
    }

    /// Waits for the whole job and returns its results in order, reporting progress if asked.
    std::vector<R> collect_all() {
        auto finished = [&] { return core->complete(seq) || core->failed(seq) || !core->running(); };
        progress_reporter progress(core->options(), job().items);
        try {
            if (progress.active()) {
                while (!core->wait(finished, Deadline::after(std::chrono::milliseconds(100))))
                    progress.update(std::min<std::uint64_t>(core->done_chunks(seq) * job().chunk_size, job().items));
            } else {
                (void)core->wait(finished);
            }
        } catch (...) {
            core->abandon(seq);  // interrupted: nobody will read these results
            throw;
        }
        throw_if_failed_or_gone();
        progress.update(job().items, true);
        std::vector<R> results;
        if constexpr (pool_bulk_v<R>) {
            // One copy straight out of the arena, without zero-filling the vector first.
            const R* src = core->arena().template at<const R>(job().output);
            results.assign(src, src + job().items);
        } else {
            results.reserve(job().items);
            for (std::uint64_t c = 0; c < chunks(); ++c) read_chunk(c, end_item(c), results);
        }
        core->retire(seq);
        return results;
    }
};

}  // namespace detail
MPROC_NAMESPACE_END

// Moving a map's data through the Pool's arena: laying out inputs and result space before a job
// is published, and reading results back (all at once for map, chunk by chunk for imap).
#pragma once

#include <mproc/detail/bool_bits.hpp>
#include <mproc/detail/pool_core.hpp>
#include <mproc/detail/progress.hpp>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <memory>
#include <ranges>
#include <vector>

MPROC_NAMESPACE_BEGIN
namespace detail {

template <class In, class Range>
void lay_out_inputs(pool_core& core, std::uint64_t seq, const Range& inputs) {
    job_slot& job = core.job(seq);
    shared_arena& arena = core.arena();
    if constexpr (input_layout_v<Range, In> == input_layout::iota) {
        job.input = static_cast<std::uint64_t>(*std::ranges::begin(inputs));
    } else if constexpr (input_layout_v<Range, In> == input_layout::bulk) {
        job.input = allocate_to_write(arena, job.items * sizeof(In));
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
        // Encodes every input in order, noting where each chunk's bytes begin and end.
        auto encode_all = [&](Encoder& encoder) {
            std::uint64_t i = 0, chunk = 0, chunk_end = chunk_items(arena, job, 0).end;
            for (auto&& x : inputs) {
                encoder(static_cast<const In&>(x));
                if (++i == chunk_end) {  // close this chunk's span, open the next one's
                    spans[chunk].length = encoder.size() - spans[chunk].offset;
                    if (++chunk < chunks) {
                        spans[chunk].offset = encoder.size();
                        chunk_end = chunk_items(arena, job, chunk).end;
                    }
                }
            }
        };
        std::uint64_t base = 0;
        if constexpr (std::ranges::forward_range<const Range>) {
            // Count first, then encode straight into the arena: one copy, no second buffer.
            Encoder counter = Encoder::counter();
            encode_all(counter);
            base = allocate_to_write(arena, counter.size());
            Encoder writer(std::span<std::byte>(arena.base() + base, counter.size()));
            encode_all(writer);
        } else {
            std::vector<std::byte> bytes;
            Encoder encoder(bytes);
            encode_all(encoder);
            base = store_in_arena(arena, bytes).offset;
        }
        for (auto& s : spans) s.offset += base;
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
    [[nodiscard]] std::uint64_t first_item(std::uint64_t chunk) const { return chunk_items(core->arena(), job(), chunk).first; }
    [[nodiscard]] std::uint64_t end_item(std::uint64_t chunk) const { return chunk_items(core->arena(), job(), chunk).end; }
    [[nodiscard]] bool chunk_done(std::uint64_t chunk) const {
        return chunk_state_of(core->arena(), job(), chunk).load(std::memory_order_acquire) ==
               detail::chunk_done;
    }

    /// About how many items `done` finished chunks hold (as many as the first `done` chunks).
    [[nodiscard]] std::uint64_t items_in_chunks(std::uint64_t done) const { return done == 0 ? 0 : end_item(done - 1); }

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

    /// Appends the results of items [first, end), all in done chunks, to `out`: one copy, since
    /// results kept as they are lie one after another in the arena.
    template <class Out>
    void read_bulk_items(std::uint64_t first, std::uint64_t end, Out& out) const
        requires pool_bulk_v<R>
    {
        const R* src = core->arena().template at<const R>(job().output);
        core->arena().prefault(job().output + first * sizeof(R), (end - first) * sizeof(R), prefault_use::read);
        if constexpr (std::is_same_v<R, bool>) append_bools(out, src + first, end - first);
        else out.insert(out.end(), src + first, src + end);  // no zero-fill first
    }

    /// Appends the results of items [first, end) of a done chunk to `out`.
    template <class Out>
    void read_chunk(std::uint64_t chunk, std::uint64_t end, Out& out) const {
        const std::uint64_t first = first_item(chunk);
        if constexpr (pool_bulk_v<R>) {
            read_bulk_items(first, end, out);
        } else {
            Decoder decoder(arena_bytes(core->arena(), core->arena().template at<arena_span>(job().output)[chunk]));
            for (std::uint64_t i = first; i < end; ++i) out.push_back(decode<R>(decoder));
        }
    }

    /// Waits for the whole job and returns its results in order, reporting progress if asked.
    /// Chunks already done are copied out while the rest still run (the parent wakes every
    /// result_copy_slice for that), so that only the last few are copied after the last worker
    /// finishes: the copy is serial, and at many cores it would otherwise add its whole length
    /// (about 3 ms for 10,000,000 bools) to a map of a hundred milliseconds.
    std::vector<R> collect_all() {
        auto finished = [&] { return core->complete(seq) || core->failed(seq) || !core->running(); };
        progress_reporter progress(core->options(), job().items);
        std::vector<R> results;
        results.reserve(job().items);
        std::uint64_t copied = 0;  // chunks 0..copied-1 are in `results`
        auto copy_done_chunks = [&](bool all_done) {
            std::uint64_t upto = all_done ? chunks() : copied;
            while (upto < chunks() && chunk_done(upto)) ++upto;
            if (upto == copied) return;
            if constexpr (pool_bulk_v<R>) {
                read_bulk_items(first_item(copied), end_item(upto - 1), results);
            } else {
                for (std::uint64_t c = copied; c < upto; ++c) read_chunk(c, end_item(c), results);
            }
            copied = upto;
        };
        try {
            auto slice = result_copy_slice;
            while (!core->wait(finished, Deadline::after(slice))) {
                const std::uint64_t before = copied;
                copy_done_chunks(false);
                // Nothing new to copy (a long first chunk, a task that hangs): wake less often.
                slice = copied != before ? result_copy_slice : std::min(2 * slice, result_copy_slice_max);
                if (progress.active()) progress.update(items_in_chunks(core->done_chunks(seq)));
            }
        } catch (...) {
            core->abandon(seq);  // interrupted: nobody will read these results
            throw;
        }
        throw_if_failed_or_gone();
        progress.update(job().items, true);
        copy_done_chunks(true);
        core->retire(seq);
        return results;
    }

    /// How often a waiting map wakes to copy done chunks: a 250th of a second costs the parent
    /// well under 1% of a core, and leaves at most the chunks of the last 4 ms to copy at the end.
    /// Wakes that find nothing new double it, up to a tenth of a second (as often as progress is
    /// reported), so a map stuck on one task wakes its parent ten times a second, not 250.
    static constexpr std::chrono::milliseconds result_copy_slice{4};
    static constexpr std::chrono::milliseconds result_copy_slice_max{100};
};

}  // namespace detail
MPROC_NAMESPACE_END

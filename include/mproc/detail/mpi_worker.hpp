// The worker side of mproc::mpi: the message layouts, the chunk runners (one instantiated per
// function, input and result type, named to the worker by function_id) and the loop a worker rank
// runs until rank 0 says stop.
#pragma once

#include <mproc/codec.hpp>
#include <mproc/detail/function_id.hpp>
#include <mproc/detail/mpi_comm.hpp>
#include <mproc/detail/outcome.hpp>
#include <mproc/error.hpp>
#include <mproc/pool.hpp>

#include <cstdint>
#include <deque>
#include <functional>
#include <ranges>
#include <span>
#include <string>
#include <tuple>
#include <type_traits>
#include <variant>
#include <vector>

MPROC_NAMESPACE_BEGIN
namespace detail::mpi {

// A task (rank 0 to a worker), after the length prefix:
//   u8 kind, u64 job, u64 chunk, u64 first item, function_id runner, function_id fn, payload
// where the payload is the chunk's inputs (a vector) or a call's arguments (a tuple).
// A result (worker to rank 0): u8 kind, u64 job, u64 chunk, then what the runner wrote:
//   u8 status_ok, the results (a vector, or a call's value)
//   u8 status_raised, u64 item, type name, message, [the chunk's results before the item]
//   u8 status_crashed, u64 item, i32 pid, i32 exit status, [results before]  (hybrid: a local
//   worker died)
// The results before a failed item let imap yield every result before the error.
enum class kind : std::uint8_t { task = 1, stop = 2, result = 3 };
enum class status : std::uint8_t { ok = 0, raised = 1, crashed = 2 };

/// Where the first item index sits in a task message, so the producer can write it afterwards.
inline constexpr std::size_t first_offset = prefix_bytes + 1 + 8 + 8;

/// What a chunk runs with on its rank: in hybrid mode, the rank's local Pool.
struct run_context {
    mproc::Pool* local = nullptr;
};

using runner_fn = void (*)(const function_id& fn, std::span<const std::byte> payload,
                           std::uint64_t first, run_context& ctx, std::vector<std::byte>& out);

/// A callable that can run on another rank as it is: a function pointer (sent by identity) or an
/// object with no state (default-constructed there, as C++20 captureless lambdas are).
template <class F>
inline constexpr bool sendable_callable_v = (std::is_pointer_v<F> &&
                                             std::is_function_v<std::remove_pointer_t<F>>) ||
                                            (std::is_class_v<F> && std::is_empty_v<F> &&
                                             std::is_default_constructible_v<F>);

template <class F>
[[nodiscard]] function_id identity_of(const F& f) {
    if constexpr (std::is_pointer_v<F>)
        return identify(f);
    else
        return function_id{};
}
template <class F>
[[nodiscard]] F callable_from(const function_id& id) {
    if constexpr (std::is_pointer_v<F>)
        return resolve<F>(id);
    else
        return F{};
}

/// A void result travels as an empty value.
template <class R>
using stored_t = std::conditional_t<std::is_void_v<R>, std::monostate, R>;

inline void write_raised(std::vector<std::byte>& out, std::uint64_t item, const std::string& type,
                         const std::string& message) {
    Encoder e(out);
    e(status::raised, item, type, message);
}

/// Writes the outcome of what `body` throws: a task error, or a local worker's crash.
inline void write_current_exception(std::vector<std::byte>& out, std::size_t mark,
                                    std::uint64_t first, std::uint64_t at) {
    out.resize(mark);
    try {
        throw;
    } catch (const ProcessCrashed& e) {
        Encoder enc(out);
        enc(status::crashed, first + e.task_index().value_or(0), static_cast<std::int32_t>(e.pid()),
            static_cast<std::int32_t>(e.exitcode()));
    } catch (const mproc::RemoteError& e) {
        write_raised(out, first + e.task_index().value_or(0), e.type_name(), e.message());
    } catch (...) {
        auto [type, message] = describe_current_exception();
        write_raised(out, at, type, message);
    }
}

/// The inputs of a chunk: a vector of them, or (`Iota`) an integer range sent as its first
/// value and its length, so neither rank 0 nor this rank lays the numbers out.
template <class In, bool Iota>
[[nodiscard]] auto decode_chunk_inputs(std::span<const std::byte> payload) {
    if constexpr (Iota) {
        Decoder d(payload);
        In start{};
        std::uint64_t count = 0;
        d(start, count);
        if (d.remaining() != 0)
            throw DecodeError("mproc::mpi: trailing bytes after a chunk's range");
        return std::views::iota(start, static_cast<In>(start + static_cast<In>(count)));
    } else {
        return decode<std::vector<In>>(payload);
    }
}

template <class Fn, class In, class R, bool Star, bool Iota = false>
void run_map_chunk(const function_id& fn_id, std::span<const std::byte> payload,
                   std::uint64_t first, run_context& ctx, std::vector<std::byte>& out) {
    const std::size_t mark = out.size();
    std::uint64_t at = first;
    std::vector<R> results;
    try {
        Fn f = callable_from<Fn>(fn_id);
        const auto inputs = decode_chunk_inputs<In, Iota>(payload);
        if (ctx.local != nullptr) {
            // Hybrid: the chunk is spread over the rank's local processes.
            if constexpr (Star) {
                results = ctx.local->starmap(f, inputs);
            } else {
                // Through the local imap, in order, not map: when a task fails, map keeps none of
                // the chunk's results, while imap yields every one before the failed item, which
                // rank 0's imap owes its reader. One batch, cut in guided chunks as map cuts it.
                MapOptions whole;
                whole.lookahead = static_cast<std::size_t>(std::ranges::size(inputs));
                results.reserve(whole.lookahead);
                for (auto&& r : ctx.local->imap(f, inputs, whole)) results.push_back(r);
            }
        } else {
            results.reserve(static_cast<std::size_t>(std::ranges::size(inputs)));
            for (const In& x : inputs) {
                if constexpr (Star)
                    results.push_back(std::apply(f, x));
                else
                    results.push_back(f(x));
                ++at;
            }
        }
        Encoder e(out);
        e(status::ok);
        encode_into(out, results);
    } catch (...) {
        write_current_exception(out, mark, first, at);
        // (A hybrid rank's local starmap gives none: `results` stays empty.)
        try {
            encode_into(out, results);
        } catch (...) {
            encode_into(
                out, std::vector<R>{});  // a result that cannot be encoded: report the error alone
        }
    }
}

template <class Fn, class R, class ArgsTuple>
void run_call(const function_id& fn_id, std::span<const std::byte> payload, std::uint64_t first,
              run_context& ctx, std::vector<std::byte>& out) {
    const std::size_t mark = out.size();
    try {
        Fn f = callable_from<Fn>(fn_id);
        auto args = decode<ArgsTuple>(payload);
        stored_t<R> value{};
        if (ctx.local != nullptr) {
            auto future = std::apply([&](auto&... a) { return ctx.local->submit(f, a...); }, args);
            if constexpr (std::is_void_v<R>)
                future.get();
            else
                value = future.get();
        } else {
            if constexpr (std::is_void_v<R>)
                std::apply(f, args);
            else
                value = std::apply(f, args);
        }
        Encoder e(out);
        e(status::ok);
        encode_into(out, value);
    } catch (...) {
        write_current_exception(out, mark, first, first);
    }
}

/// Runs one task message and returns the result message.
[[nodiscard]] inline std::vector<std::byte> run_task(std::span<const std::byte> body,
                                                     run_context& ctx) {
    Decoder d(body);
    kind k{};
    std::uint64_t job = 0, chunk = 0, first = 0;
    function_id runner, fn;
    d(k, job, chunk, first, runner, fn);
    const auto payload = d.take(d.remaining());
    std::vector<std::byte> reply = new_message();
    {
        Encoder e(reply);
        e(kind::result, job, chunk);
    }
    const std::size_t mark = reply.size();
    try {
        resolve<runner_fn>(runner)(fn, payload, first, ctx, reply);
    } catch (...) {
        // Only resolving the runner can throw here (the runners report their own errors).
        write_current_exception(reply, mark, first, first);
    }
    return reply;
}

/// A worker rank's loop: runs the tasks rank 0 sends, in order, keeping the ones that arrive
/// meanwhile (rank 0 keeps several in flight, so the next one is here when this one ends), and
/// sleeps in `backoff` when there is none. Returns when rank 0 says stop.
inline void serve(run_context& ctx, std::size_t max_piece) {
    sender out(max_piece);
    std::deque<received> tasks;
    backoff idle;
    for (;;) {
        received message;
        bool stop = false;
        while (try_receive(0, message)) {
            if (message.body().empty()) throw DecodeError("mproc::mpi: an empty message");
            if (static_cast<kind>(message.body()[0]) == kind::stop)
                stop = true;
            else
                tasks.push_back(std::move(message));
        }
        out.test();
        if (stop) break;
        if (!tasks.empty()) {
            out.send(0, run_task(tasks.front().body(), ctx));
            tasks.pop_front();
            idle.reset();
            continue;
        }
        idle.pause();
    }
    out.drain();
}

}  // namespace detail::mpi
MPROC_NAMESPACE_END

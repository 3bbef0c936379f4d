// mproc::fork_map: a parallel map whose workers are forked for the one call, so any callable
// works and the inputs are never encoded.
#pragma once

#include <mproc/detail/pool_options.hpp>
#include <mproc/detail/pool_results.hpp>
#include <mproc/process.hpp>

#include <functional>
#include <memory>
#include <ranges>
#include <type_traits>
#include <vector>

MPROC_NAMESPACE_BEGIN

namespace detail {
template <class F, class Range>
struct fork_map_context {
    const F& fn;
    const Range& inputs;
};
}  // namespace detail

/// f(x) for every x of `inputs`, in order, on worker processes forked for this call.
///
/// Unlike Pool::map, f may capture anything: the workers are forked when the call starts, so
/// they see the caller's data as it is then, through copy-on-write, and nothing is encoded on the
/// way in (a 1 GiB read-only input costs nothing to share). Trivially copyable results are
/// written straight into shared memory; others go through the codec. Chunks are pulled by idle
/// workers; an exception is a RemoteError and a dead worker a ProcessCrashed, each naming the
/// task's index, as in the Pool. The workers are gone when it returns (or throws).
/// Options: processes, initializer, task_timeout, progress and on_progress apply.
/// @return a std::vector of f's results, one per input.
/// @code
/// std::vector<double> big = load();                  // stays in the parent, shared by COW
/// auto sums = mproc::fork_map([&big](std::size_t block) { return sum(big, block); },
///                             std::views::iota(std::size_t{0}, blocks));
/// @endcode
template <class F, std::ranges::random_access_range Range>
    requires std::ranges::sized_range<Range>
[[nodiscard]] auto fork_map(F&& f, const Range& inputs, const PoolOptions& options = {},
                            const MapOptions& call = {}) {
    using R = std::remove_cvref_t<std::invoke_result_t<F&, std::ranges::range_reference_t<const Range>>>;
    static_assert(!std::is_void_v<R>, "mproc::fork_map: the function must return a value");
    using Context = detail::fork_map_context<std::remove_reference_t<F>, Range>;
    const std::uint64_t n = std::ranges::size(inputs);
    if (n == 0) return std::vector<R>{};
    PoolOptions settings = options;
    if (settings.processes == 0) settings.processes = cpu_count();
    settings.start_method = StartMethod::fork;  // its workers read the caller's memory in place
    if (call.task_timeout.count() != 0) settings.task_timeout = call.task_timeout;
    auto core = std::make_shared<detail::pool_core>(settings, /*start=*/false);
    Context context{f, inputs};
    const std::uint64_t seq = core->begin_job(detail::identify(&detail::run_fork_chunk<Context, R>), {}, n, call.chunksize);
    core->job(seq).context = reinterpret_cast<std::uint64_t>(&context);
    core->job(seq).unbatched = call.batch_quick_tasks ? 0 : 1;
    detail::lay_out_outputs<R>(*core, seq);
    core->publish(seq);
    core->start_workers();  // forked now: they see `context` and everything it refers to
    std::vector<R> results = detail::job_ticket<R>{core, seq}.collect_all();
    core->close();
    core->join();
    return results;
}

MPROC_NAMESPACE_END

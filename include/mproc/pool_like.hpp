// mproc::PoolLike: what code that takes "a pool" may rely on, so the same function runs on a
// local mproc::Pool and on an mproc::mpi::Pool spread over a cluster.
#pragma once

#include <mproc/version.hpp>

#include <concepts>
#include <vector>

MPROC_NAMESPACE_BEGIN

/// A pool with the multiprocessing.Pool shapes: map and starmap returning a vector in input order,
/// imap and imap_unordered returning ranges, submit returning a future with get(), apply.
/// @code
/// std::uint64_t count_primes(mproc::PoolLike auto& pool, const std::vector<std::uint64_t>& n) {
///     auto flags = pool.map(is_prime, n);
///     return std::count(flags.begin(), flags.end(), true);
/// }
/// @endcode
template <class P>
concept PoolLike = requires(P& pool, int (*f)(int), const std::vector<int>& inputs) {
    { pool.map(f, inputs) } -> std::same_as<std::vector<int>>;
    { pool.map(f, inputs, std::size_t{1}) } -> std::same_as<std::vector<int>>;
    pool.imap(f, inputs).begin();
    pool.imap_unordered(f, inputs).begin();
    { pool.submit(f, 1).get() } -> std::same_as<int>;
    { pool.apply(f, 1) } -> std::same_as<int>;
};

MPROC_NAMESPACE_END

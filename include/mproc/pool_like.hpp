// mproc::PoolLike: what code that takes "a pool" may rely on, so the same function runs on a
// local mproc::Pool and on an mproc::mpi::Pool spread over a cluster.
#pragma once

#include <mproc/version.hpp>

#include <concepts>
#include <vector>

MPROC_NAMESPACE_BEGIN

/// A pool with the multiprocessing.Pool shapes: map and starmap returning a vector in input order,
/// imap and imap_unordered returning ranges, submit returning a future with get(), apply. A
/// function returning bool is held to the same shapes: map gives a std::vector<bool>, and imap's
/// results read as bools (by value: a vector<bool> has no bool to refer to).
/// @code
/// std::uint64_t count_primes(mproc::PoolLike auto& pool, const std::vector<std::uint64_t>& n) {
///     std::uint64_t count = 0;
///     for (bool f : pool.imap(is_prime, n)) count += f;
///     return count;
/// }
/// @endcode
template <class P>
concept PoolLike = requires(P& pool, int (*f)(int), bool (*test)(int),
                            const std::vector<int>& inputs) {
    { pool.map(f, inputs) } -> std::same_as<std::vector<int>>;
    { pool.map(f, inputs, std::size_t{1}) } -> std::same_as<std::vector<int>>;
    { *pool.imap(f, inputs).begin() } -> std::convertible_to<int>;
    { *pool.imap_unordered(f, inputs).begin() } -> std::convertible_to<int>;
    { pool.submit(f, 1).get() } -> std::same_as<int>;
    { pool.apply(f, 1) } -> std::same_as<int>;
    { pool.map(test, inputs) } -> std::same_as<std::vector<bool>>;
    { *pool.imap(test, inputs).begin() } -> std::same_as<bool>;
    { *pool.imap_unordered(test, inputs).begin() } -> std::same_as<bool>;
    { pool.submit(test, 1).get() } -> std::same_as<bool>;
};

MPROC_NAMESPACE_END

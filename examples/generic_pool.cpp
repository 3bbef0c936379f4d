// One function written against mproc::PoolLike runs on a local mproc::Pool and on an
// mproc::mpi::Pool spread over MPI ranks alike:
//   ./generic_pool                  local Pool, then mproc::mpi as a singleton (a local Pool too)
//   mpirun -np 3 ./generic_pool     rank 0 also runs it over the 2 worker ranks
#include "example_util.hpp"

#include <mproc/mpi.hpp>
#include <mproc/pool.hpp>
#include <mproc/pool_like.hpp>

#include <fmt/core.h>

#include <algorithm>
#include <cstdint>
#include <numeric>
#include <vector>

/// How many numbers of `numbers` are prime, on whatever pool it is given.
std::int64_t count_primes(mproc::PoolLike auto& pool, const std::vector<std::uint64_t>& numbers) {
    const std::vector<bool> flags = pool.map(example::is_prime, numbers);
    return std::count(flags.begin(), flags.end(), true);
}

int main(int argc, char** argv) {
    std::vector<std::uint64_t> numbers(example::is_short(argc, argv) ? 100'000 : 2'000'000);
    std::iota(numbers.begin(), numbers.end(), std::uint64_t{0});
    return mproc::mpi::run(argc, argv, [&numbers](mproc::mpi::Pool& cluster) {
        mproc::Pool local(2);
        const auto here = count_primes(local, numbers);
        const auto there = count_primes(cluster, numbers);
        fmt::print("local Pool: {} primes; mproc::mpi::Pool over {} rank(s): {} primes\n", here,
                   cluster.ranks(), there);
        return here == there ? 0 : 1;
    });
}

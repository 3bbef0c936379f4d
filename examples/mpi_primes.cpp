// Count the primes below N (10,000,000 by default) over the ranks of an MPI job:
//   mpirun -np 4 ./mpi_primes            1 root + 3 worker ranks (also under srun)
//   ./mpi_primes                         no mpirun: the same map on a local mproc::Pool
//   mpirun --map-by ppr:1:node --bind-to none ./mpi_primes --hybrid 8
//                                        one rank per node, each feeding 8 local processes
// Rank 0 runs the lambda; every other rank serves its chunks until it returns.
#include "example_util.hpp"

#include <mproc/mpi.hpp>

#include <fmt/core.h>

#include <algorithm>
#include <charconv>
#include <cstdint>
#include <ranges>
#include <string_view>
#include <vector>

int main(int argc, char** argv) {
    std::uint64_t limit = 10'000'000;
    mproc::mpi::Options options;
    for (int i = 1; i < argc; ++i) {
        const std::string_view arg = argv[i];
        if (arg == "--short")
            limit = 1'000'000;
        else if (arg == "--hybrid" && i + 1 < argc)
            options.local_processes = static_cast<unsigned>(std::atoi(argv[++i]));
        else
            std::from_chars(arg.data(), arg.data() + arg.size(), limit);
    }
    return mproc::mpi::run(argc, argv, options, [limit](mproc::mpi::Pool& pool) {
        example::Stopwatch clock;
        const std::vector<bool> flags =
            pool.map(example::is_prime, std::views::iota(std::uint64_t{0}, limit));
        const auto count = std::count(flags.begin(), flags.end(), true);
        fmt::print("primes below {}: {} in {:.3f} s on {} rank(s), {} worker process(es)\n", limit,
                   count, clock.seconds(), pool.ranks(), pool.processes());
        // One call, and results as they come, the local Pool's way.
        fmt::print("is 97 prime? {}\n", pool.submit(example::is_prime, std::uint64_t{97}).get());
        std::uint64_t below_100 = 0;
        for (bool f : pool.imap(example::is_prime,
                                std::views::iota(std::uint64_t{0}, std::uint64_t{100}), 10))
            below_100 += f;
        fmt::print("primes below 100: {}\n", below_100);
        return below_100 == 25 ? 0 : 1;
    });
}

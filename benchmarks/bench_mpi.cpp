// mproc::mpi measured under mpirun (run by benchmarks/mpi_compare.sh beside mpi4py.futures on the
// same launch). Rank 0 prints one line per case: the median of --repeat runs, and every run.
//   mpirun -np 3 bench_mpi --tiny 100000 --primes 10000000 --repeat 5
//   mpirun -np 2 --bind-to none bench_mpi --hybrid 2 --primes 10000000 --repeat 5
// Cases:
//   tiny_map       map of x+1 over --tiny numbers (guided chunks; an integer range, so each chunk
//                  travels as its first value and count)
//   tiny_map_vec   the same over a std::vector of those numbers (each chunk carries its numbers)
//   tiny_imap_c1   imap with 1 item per message (Python's default chunk size), same numbers
//   primes_serial  the prime count below --primes on rank 0 alone (the speedup's base)
//   primes_map     the same count with Pool::map over the ranks
//   local_pool     (--hybrid N) the same count on a local mproc::Pool of N processes on rank 0,
//                  interleaved with primes_map run by 1 worker rank x N local processes
#include "../examples/workloads.hpp"

#include <mproc/mpi.hpp>
#include <mproc/pool.hpp>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <map>
#include <numeric>
#include <ranges>
#include <string>
#include <vector>

namespace {
std::uint64_t plus_one(std::uint64_t x) { return x + 1; }

double seconds(const std::function<void()>& body) {
    const auto start = std::chrono::steady_clock::now();
    body();
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}
double median(std::vector<double> v) {
    std::sort(v.begin(), v.end());
    return v.size() % 2 ? v[v.size() / 2] : (v[v.size() / 2 - 1] + v[v.size() / 2]) / 2;
}
}  // namespace

int main(int argc, char** argv) {
    std::uint64_t tiny = 100'000, primes = 10'000'000;
    int repeat = 5;
    mproc::mpi::Options options;
    for (int i = 1; i + 1 < argc; i += 2) {
        const std::string arg = argv[i];
        const auto value = std::strtoull(argv[i + 1], nullptr, 10);
        if (arg == "--tiny")
            tiny = value;
        else if (arg == "--primes")
            primes = value;
        else if (arg == "--repeat")
            repeat = static_cast<int>(value);
        else if (arg == "--hybrid")
            options.local_processes = static_cast<unsigned>(value);
    }
    return mproc::mpi::run(argc, argv, options, [&](mproc::mpi::Pool& pool) {
        std::map<std::string, std::vector<double>> runs;
        const auto numbers = std::views::iota(std::uint64_t{0}, tiny);
        std::vector<std::uint64_t> number_vector(tiny);
        std::iota(number_vector.begin(), number_vector.end(), std::uint64_t{0});
        const auto candidates = std::views::iota(std::uint64_t{0}, primes);
        std::uint64_t expected_primes = 0;
        std::unique_ptr<mproc::Pool> local;
        if (options.local_processes != 0)
            local = std::make_unique<mproc::Pool>(options.local_processes);
        bool ok = true;
        for (int r = 0; r < repeat; ++r) {
            if (tiny != 0) {
                runs["tiny_map"].push_back(
                    seconds([&] { ok &= pool.map(plus_one, numbers).back() == tiny; }));
                runs["tiny_map_vec"].push_back(
                    seconds([&] { ok &= pool.map(plus_one, number_vector).back() == tiny; }));
                runs["tiny_imap_c1"].push_back(seconds([&] {
                    std::uint64_t last = 0;
                    for (auto x : pool.imap(plus_one, numbers)) last = x;
                    ok &= last == tiny;
                }));
            }
            if (primes != 0) {
                if (!local)
                    runs["primes_serial"].push_back(seconds([&] {
                        std::uint64_t count = 0;
                        for (auto n : candidates) count += example::is_prime(n);
                        expected_primes = count;
                    }));
                else
                    runs["local_pool"].push_back(seconds([&] {
                        auto flags = local->map(example::is_prime, candidates);
                        expected_primes = static_cast<std::uint64_t>(
                            std::count(flags.begin(), flags.end(), true));
                    }));
                runs["primes_map"].push_back(seconds([&] {
                    auto flags = pool.map(example::is_prime, candidates);
                    ok &= static_cast<std::uint64_t>(
                              std::count(flags.begin(), flags.end(), true)) == expected_primes;
                }));
            }
        }
        std::printf("# mproc::mpi, %d rank(s), %u worker process(es), %d runs each\n", pool.ranks(),
                    pool.processes(), repeat);
        for (auto& [name, times] : runs) {
            std::printf("%-14s median %.4f s   runs:", name.c_str(), median(times));
            for (double t : times) std::printf(" %.4f", t);
            std::printf("\n");
        }
        return ok ? 0 : 1;
    });
}

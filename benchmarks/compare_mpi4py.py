"""mpi4py.futures on the same launch as bench_mpi (benchmarks/mpi_compare.sh runs both):
    PYTHONPATH=benchmarks/compare mpirun -x PYTHONPATH -np 3 /usr/bin/python3 -m mpi4py.futures \
        benchmarks/compare_mpi4py.py --tiny 100000 --primes 10000000
Rank 0 runs this file; the others serve MPIPoolExecutor's tasks. Prints one line per case, the
median of --repeat runs and every run, in bench_mpi's format:
    tiny_map_c1   executor.map(x + 1) with its default chunksize=1 (what most code uses)
    tiny_map      the same with chunksize = ceil(n / (4 x workers)) (Python's Pool default)
    primes_map    the prime count below --primes, chunksize as above
"""
import argparse
import math
import statistics
import time

from mpi4py import MPI
from mpi4py.futures import MPIPoolExecutor

# The trial division of examples/workloads.hpp, as benchmarks/compare/compare.py writes it; the
# worker ranks import it from there too (PYTHONPATH), since tasks travel by module and name.
from compare import is_prime


def plus_one(x):
    return x + 1


def timed(body):
    start = time.perf_counter()
    body()
    return time.perf_counter() - start


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--tiny", type=int, default=100_000)
    parser.add_argument("--primes", type=int, default=10_000_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--no-c1", action="store_true",
                        help="skip tiny_map_c1 (about 15 s a run on 2 cores)")
    args = parser.parse_args()
    workers = MPI.COMM_WORLD.Get_size() - 1
    runs = {}
    with MPIPoolExecutor() as executor:
        executor.bootup()
        for _ in range(args.repeat):
            if args.tiny:
                chunk = max(1, math.ceil(args.tiny / (4 * workers)))
                if not args.no_c1:
                    runs.setdefault("tiny_map_c1", []).append(
                        timed(lambda: list(executor.map(plus_one, range(args.tiny)))))
                runs.setdefault("tiny_map", []).append(
                    timed(lambda: list(executor.map(plus_one, range(args.tiny), chunksize=chunk))))
            if args.primes:
                chunk = max(1, math.ceil(args.primes / (4 * workers)))
                runs.setdefault("primes_map", []).append(
                    timed(lambda: sum(executor.map(is_prime, range(args.primes), chunksize=chunk))))
    print(f"# mpi4py.futures, {workers} worker rank(s), {args.repeat} runs each")
    for name, times in sorted(runs.items()):
        print(f"{name:<14} median {statistics.median(times):.4f} s   runs: " + " ".join(f"{t:.4f}" for t in times))


if __name__ == "__main__":
    main()

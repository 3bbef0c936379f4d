#!/usr/bin/env python3
"""Python's side of benchmarks/scaling.sh: the same prime search with multiprocessing.Pool (one
worker per usable core, the pool started and stopped inside the timing) and, with --serial, a
plain loop. Prints CSV lines `metric,workers,median,min,max,unit` like the C++ side."""
import argparse
import multiprocessing as mp
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "compare"))
from compare import is_prime  # noqa: E402  (the comparison's own task, module level)


def timed(run, reps):
    samples = []
    for _ in range(reps):
        t0 = time.perf_counter()
        run()
        samples.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(samples), min(samples), max(samples)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--primes", type=int, default=2_000_000)
    ap.add_argument("--serial", action="store_true")
    a = ap.parse_args()
    workers = len(os.sched_getaffinity(0))
    want = None
    if a.serial:
        def serial():
            nonlocal want
            want = sum(map(is_prime, range(a.primes)))
        med, lo, hi = timed(serial, a.reps)
        print(f"python_primes_serial_ms,1,{med:.4g},{lo:.4g},{hi:.4g},ms")

    def pool():
        with mp.Pool(workers) as p:
            got = sum(p.map(is_prime, range(a.primes)))
        if want is not None and got != want:
            sys.exit(f"Pool counted {got} primes, the loop {want}")
    med, lo, hi = timed(pool, a.reps)
    print(f"python_primes_pool_ms,{workers},{med:.4g},{lo:.4g},{hi:.4g},ms", flush=True)


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Python's figure for bench_sync's locked counter: multiprocessing.Value + its lock,
4 processes x 100,000 increments. Prints microseconds per increment (wall time / 400,000).

    python3 benchmarks/python_locked_counter.py [processes] [increments]
"""
import multiprocessing as mp
import sys
import time


def work(counter, n):
    for _ in range(n):
        with counter.get_lock():
            counter.value += 1


def main():
    procs = int(sys.argv[1]) if len(sys.argv) > 1 else 4
    n = int(sys.argv[2]) if len(sys.argv) > 2 else 100_000
    counter = mp.Value("l", 0)
    workers = [mp.Process(target=work, args=(counter, n)) for _ in range(procs)]
    start = time.perf_counter()
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    elapsed = time.perf_counter() - start
    assert counter.value == procs * n, counter.value
    print(f"python multiprocessing Value+Lock: {procs} x {n} increments in {elapsed:.3f} s, "
          f"{elapsed / (procs * n) * 1e6:.3f} us per increment")


if __name__ == "__main__":
    main()

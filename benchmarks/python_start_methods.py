"""Python's three start methods, Process start+join of a function that does nothing: the peer
of bench_process's Process_start_join{,_forkserver,_spawn}. Prints the median of each method.
    python3 benchmarks/python_start_methods.py [--n 50]
"""
import argparse
import multiprocessing as mp
import statistics
import time


def nothing():
    pass


def measure(method, n):
    ctx = mp.get_context(method)
    warm = ctx.Process(target=nothing)  # the forkserver's own start is paid once
    warm.start()
    warm.join()
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        p = ctx.Process(target=nothing)
        p.start()
        p.join()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=50)
    args = parser.parse_args()
    for method in ("fork", "forkserver", "spawn"):
        print(f"python_{method}_start_join_us {measure(method, args.n) * 1e6:.0f}")

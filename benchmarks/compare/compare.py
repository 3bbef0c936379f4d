#!/usr/bin/env python3
"""The same workloads in Python's multiprocessing and in mproc, on this machine, in one run.

    python3 benchmarks/compare/compare.py --mproc build/release/benchmarks/compare/mproc_side

Runs each workload here with multiprocessing (stdlib only), then runs the mproc program with the
same sizes, and prints one table: workload, Python time, mproc time, and how many times faster
mproc was. Every time is wall-clock, the best of --repeat runs, and includes starting and
stopping the pool or processes the workload uses. Both sides use one worker per usable CPU.
"""
import argparse
import math
import multiprocessing as mp
import os
import subprocess
import sys
import time


# ---- the tasks (module level, as multiprocessing needs) ---------------------------------------

def is_prime(n):
    if n < 2:
        return False
    if n % 2 == 0:
        return n == 2
    if n % 3 == 0:
        return n == 3
    d = 5
    while d * d <= n:
        if n % d == 0 or n % (d + 2) == 0:
            return False
        d += 6
    return True


def factorial_bits(n):
    return math.factorial(n).bit_length()


def sum_of_squares(n):
    return sum(i * i for i in range(n)) % 2**64


def tiny(x):
    return x * x


def produce(q, n):
    for i in range(n):
        q.put(i)


def echo(conn, n):
    for _ in range(n):
        conn.send(conn.recv())


def add_locked(counter, n):
    for _ in range(n):
        with counter.get_lock():
            counter.value += 1


def nothing():
    pass


# ---- the workloads: each returns a value the mproc side must match -----------------------------

def primes(workers, s):
    with mp.Pool(workers) as pool:
        return sum(pool.map(is_prime, range(s.primes)))


def factorials(workers, s):
    with mp.Pool(workers) as pool:
        return sum(pool.map(factorial_bits, range(s.factorials)))


def sum_squares(workers, s):
    with mp.Pool(workers) as pool:
        return sum(pool.map(sum_of_squares, [s.squares + j for j in range(4)])) % 2**64


def tiny_map(workers, s):
    with mp.Pool(workers) as pool:
        return sum(pool.map(tiny, range(s.tiny))) % 2**64


def queue(workers, s):
    q = mp.Queue()
    p = mp.Process(target=produce, args=(q, s.messages))
    p.start()
    total = sum(q.get() for _ in range(s.messages))
    p.join()
    return total


def pipe(workers, s):
    a, b = mp.Pipe()
    p = mp.Process(target=echo, args=(b, s.round_trips))
    p.start()
    total = 0
    for i in range(s.round_trips):
        a.send(i)
        total += a.recv()
    p.join()
    return total


def counter(workers, s):
    value = mp.Value("q", 0)
    procs = [mp.Process(target=add_locked, args=(value, s.increments)) for _ in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join()
    return value.value


def start_join(workers, s):
    for _ in range(s.processes):
        p = mp.Process(target=nothing)
        p.start()
        p.join()
    return s.processes


def workloads(s):
    """(key, label, function) in the order of the table; mproc_side uses the same keys."""
    return [
        ("primes", f"prime search below {s.primes:,}", primes),
        ("factorials", f"factorial bit lengths, n < {s.factorials:,}", factorials),
        ("sum_squares", f"sum of squares below {s.squares:,}, 4 jobs", sum_squares),
        ("tiny_map", f"map of {s.tiny:,} tiny items", tiny_map),
        ("queue", f"Queue: {s.messages:,} 8-byte messages", queue),
        ("pipe", f"Pipe: {s.round_trips:,} round trips", pipe),
        ("counter", f"locked counter, 4 x {s.increments:,}", counter),
        ("start_join", f"Process start+join, {s.processes:,} times", start_join),
    ]


def best_of(repeat, fn, *args):
    best, value = math.inf, None
    for _ in range(repeat):
        t0 = time.perf_counter()
        value = fn(*args)
        best = min(best, time.perf_counter() - t0)
    return best, value


def run_mproc(binary, s, workers):
    args = [binary, f"workers={workers}", f"repeat={s.repeat}"] + [
        f"{k}={getattr(s, k)}" for k in
        ("primes", "factorials", "squares", "tiny", "messages", "round_trips", "increments", "processes")]
    out = subprocess.run(args, check=True, capture_output=True, text=True).stdout
    results = {}
    for line in out.splitlines():  # "key seconds value", or "key n/a"
        key, *rest = line.split()
        results[key] = (float(rest[0]), int(rest[1])) if rest[0] != "n/a" else None
    return results


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mproc", required=True, help="path of the mproc_side program")
    ap.add_argument("--repeat", type=int, default=3, help="runs of each workload; the best counts")
    ap.add_argument("--primes", type=int, default=2_000_000)
    ap.add_argument("--factorials", type=int, default=12_000)
    ap.add_argument("--squares", type=int, default=10_000_000)
    ap.add_argument("--tiny", type=int, default=1_000_000)
    ap.add_argument("--messages", type=int, default=100_000)
    ap.add_argument("--round-trips", dest="round_trips", type=int, default=10_000)
    ap.add_argument("--increments", type=int, default=100_000)
    ap.add_argument("--processes", type=int, default=100)
    ap.add_argument("--only", help="comma-separated workload keys to run")
    s = ap.parse_args()

    mp.set_start_method("fork")  # Linux's default before Python 3.14, and what mproc does
    workers = len(os.sched_getaffinity(0))
    chosen = workloads(s)
    if s.only:
        keep = s.only.split(",")
        chosen = [w for w in chosen if w[0] in keep]

    print(f"{workers} workers; Python {sys.version.split()[0]}; best of {s.repeat}", flush=True)
    python = {}
    for key, label, fn in chosen:
        python[key] = best_of(s.repeat, fn, workers, s)
        print(f"  python: {label}: {python[key][0]:.3f} s", file=sys.stderr, flush=True)
    mproc = run_mproc(s.mproc, s, workers)

    rows = []
    for key, label, _ in chosen:
        py_s, py_value = python[key]
        got = mproc.get(key)
        if got is None:
            rows.append((label, f"{py_s:.3f}", "n/a", ""))
            continue
        mp_s, mp_value = got
        if mp_value != py_value:
            sys.exit(f"{key}: Python computed {py_value}, mproc {mp_value}")
        rows.append((label, f"{py_s:.3f}", f"{mp_s:.4f}", f"{py_s / mp_s:.1f}x"))

    head = ("workload", "Python s", "mproc s", "mproc faster")
    widths = [max(len(r[i]) for r in rows + [head]) for i in range(4)]
    line = lambda r: "| " + " | ".join(c.ljust(w) if i == 0 else c.rjust(w)
                                        for i, (c, w) in enumerate(zip(r, widths))) + " |"
    print(line(head))
    print("|" + "|".join("-" * (w + 2) if i == 0 else "-" * (w + 1) + ":" for i, w in enumerate(widths)) + "|")
    for r in rows:
        print(line(r))


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Python's multiprocessing.Queue on bench_queue's workloads, for the side-by-side table.

One producer process puts, the parent gets; each run times delivery of every message:
  - 8-byte messages (bytes objects of 8 bytes): messages per second
  - 1 MiB messages (bytes objects): bytes per second
Prints one JSON object with the median of --repetitions runs of each.

    python3 benchmarks/python_queue.py --repetitions 5
"""
import argparse
import json
import multiprocessing as mp
import statistics
import time


def produce(q, count, size):
    message = bytes(size)
    for _ in range(count):
        q.put(message)


def run(count, size):
    q = mp.Queue()
    producer = mp.Process(target=produce, args=(q, count, size))
    start = time.perf_counter()
    producer.start()
    for _ in range(count):
        q.get()
    elapsed = time.perf_counter() - start
    producer.join()
    return elapsed


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repetitions", type=int, default=5)
    parser.add_argument("--small-count", type=int, default=200_000)
    parser.add_argument("--big-count", type=int, default=2_000)
    args = parser.parse_args()
    mp.set_start_method("fork")
    small = [args.small_count / run(args.small_count, 8) for _ in range(args.repetitions)]
    big = [args.big_count * (1 << 20) / run(args.big_count, 1 << 20) for _ in range(args.repetitions)]
    print(json.dumps({
        "spsc_8B_items_per_second": statistics.median(small),
        "spsc_1MiB_bytes_per_second": statistics.median(big),
        "repetitions": args.repetitions,
    }))


if __name__ == "__main__":
    main()

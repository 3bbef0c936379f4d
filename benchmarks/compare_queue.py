#!/usr/bin/env python3
"""Runs bench_queue and python_queue.py and prints the side-by-side table with the ratios.

    python3 benchmarks/compare_queue.py build/release/benchmarks/bench_queue [--repetitions 5]

Medians of the repetitions. The goals (issue 5): SPSC 8-byte >= 3x Boost; 1 MiB >= 1.2x Boost
and >= 0.3x a 1 MiB memcpy; 4x4 MPMC beside Boost.
"""
import argparse
import json
import os
import subprocess
import sys


def bench_medians(binary, repetitions):
    out = subprocess.run(
        [binary, f"--benchmark_repetitions={repetitions}", "--benchmark_report_aggregates_only=true",
         "--benchmark_format=json"],
        check=True, capture_output=True, text=True).stdout
    medians = {}
    for b in json.loads(out)["benchmarks"]:
        if b.get("aggregate_name") == "median":
            name = b["run_name"].replace("/real_time", "")
            medians[name] = b
    return medians


def fmt(value, unit):
    if value is None:
        return "-"
    if unit == "msg/s":
        return f"{value / 1e6:.2f} M/s"
    return f"{value / 1e9:.2f} GB/s"


def ratio(a, b):
    return f"{a / b:.2f}x" if a and b else "-"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bench_queue")
    parser.add_argument("--repetitions", type=int, default=5)
    args = parser.parse_args()
    m = bench_medians(args.bench_queue, args.repetitions)
    here = os.path.dirname(os.path.abspath(__file__))
    py = json.loads(subprocess.run([sys.executable, os.path.join(here, "python_queue.py"),
                                    "--repetitions", str(args.repetitions)],
                                   check=True, capture_output=True, text=True).stdout)

    def items(name):
        return m[name]["items_per_second"] if name in m else None

    def bytes_(name):
        return m[name]["bytes_per_second"] if name in m else None

    rows = [
        ("SPSC 8 B", "msg/s", items("Mproc_queue_spsc_8B"), items("Boost_message_queue_spsc_8B"),
         ("raw SPSC ring", items("Raw_spsc_ring_8B")), py["spsc_8B_items_per_second"]),
        ("SPSC 1 MiB", "B/s", bytes_("Mproc_queue_spsc_1MiB/ring:4194304"),
         bytes_("Boost_message_queue_spsc_1MiB"), ("1 MiB memcpy", bytes_("Memcpy_1MiB")),
         py["spsc_1MiB_bytes_per_second"]),
        ("MPMC 4x4 8 B", "msg/s", items("Mproc_queue_mpmc_4x4_8B"),
         items("Boost_message_queue_mpmc_4x4_8B"), ("-", None), None),
    ]
    header = ["workload", "mproc", "Boost mq", "baseline", "", "Python mp.Queue",
              "mproc/Boost", "mproc/baseline", "mproc/Python"]
    table = [header]
    for name, unit, ours, boost, (base_name, base), python in rows:
        table.append([name, fmt(ours, unit), fmt(boost, unit), base_name, fmt(base, unit),
                      fmt(python, unit), ratio(ours, boost), ratio(ours, base), ratio(ours, python)])
    widths = [max(len(r[i]) for r in table) for i in range(len(header))]
    for r in table:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)))
    print(f"\nmedians of {args.repetitions} repetitions; 1 MiB mproc row uses the default 4 MiB ring")


if __name__ == "__main__":
    main()

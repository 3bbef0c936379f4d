#!/usr/bin/env python3
"""The 4 producer x 4 consumer rows of a device run side by side: millions of 8-byte messages a
second for the queue, each bare claim protocol and Boost, on every core count the run has
(bench_queue_4cores.json, bench_queue_8cores.json, and bench_queue.json for all the machine's
cores), and each row over Boost's in the same file. Medians, as device_run.sh wrote them.

    python3 benchmarks/queue_report.py OUT
"""
import glob
import json
import os
import re
import sys


def medians(path):
    """(cores, {row name: items per second}) of one bench_queue JSON file."""
    with open(path) as f:
        data = json.load(f)
    found = re.search(r"_(\d+)cores\.json$", path)
    cores = int(found.group(1)) if found else int(data["context"]["num_cpus"])
    rows = {}
    for b in data["benchmarks"]:
        if b.get("aggregate_name") == "median" and "mpmc_4x4_8B" in b["name"]:
            rows[b["name"].split("/")[0]] = b["items_per_second"]
    return cores, rows


def main():
    if len(sys.argv) != 2:
        sys.exit("usage: queue_report.py OUT (a device_run.sh output folder)")
    runs = {}
    for path in glob.glob(os.path.join(sys.argv[1], "bench_queue*.json")):
        cores, rows = medians(path)
        if rows:
            runs[cores] = rows
    if not runs:
        sys.exit("queue_report: no 4x4 rows in %s/bench_queue*.json" % sys.argv[1])
    counts = sorted(runs)
    names = sorted({n for rows in runs.values() for n in rows}, key=lambda n: (not n.startswith("Mproc"), n))
    print("| 4x4, 8-byte messages, M msg/s (x Boost) | " + " | ".join("%d cores" % c for c in counts) + " |")
    print("|---|" + "---:|" * len(counts))
    for name in names:
        cells = []
        for c in counts:
            value = runs[c].get(name)
            boost = runs[c].get("Boost_message_queue_mpmc_4x4_8B")
            if value is None:
                cells.append("")
            elif boost and not name.startswith("Boost"):
                cells.append("%.1f (%.1fx)" % (value / 1e6, value / boost))
            else:
                cells.append("%.1f" % (value / 1e6))
        print("| %s | %s |" % (name, " | ".join(cells)))


if __name__ == "__main__":
    main()

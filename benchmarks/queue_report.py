#!/usr/bin/env python3
"""The 4 producer x 4 consumer rows of a device run side by side: millions of 8-byte messages a
second for the queue, each bare claim protocol and Boost, on every core count the run has
(bench_queue_4cores.json, bench_queue_8cores.json, and bench_queue.json for all the machine's
cores), and each row over Boost's in the same file. Medians, as device_run.sh wrote them. Rows
from bench_queue_tickets*.json (the ticket rewrite of the Queue at 8e00ca7, when the bundle had
it) are named "Tickets_8e00ca7 ..."; a second table puts the SPSC rows of both queues side by
side. Last, the reading: on the most cores measured, every single put/get row against issue 14's
goal (>= 15 M msg/s and >= 10x Boost) and how far it grew from the fewest cores measured.

    python3 benchmarks/queue_report.py OUT
"""
import glob
import json
import os
import re
import sys


def medians(path, kind):
    """(cores, {row name: items per second}) of the `kind` rows of one bench_queue JSON file."""
    with open(path) as f:
        data = json.load(f)
    found = re.search(r"_(\d+)cores\.json$", path)
    cores = int(found.group(1)) if found else int(data["context"]["num_cpus"])
    label = "Tickets_8e00ca7 " if os.path.basename(path).startswith("bench_queue_tickets") else ""
    rows = {}
    for b in data["benchmarks"]:
        if b.get("aggregate_name") == "median" and kind in b["name"]:
            # The run's name without "/real_time": a row's argument (lanes:4) stays.
            rows[label + b["run_name"].replace("/real_time", "")] = b["items_per_second"]
    return cores, rows


def gather(folder, kind):
    """{cores: {row name: items per second}} over every bench_queue*.json in `folder`."""
    runs = {}
    for path in glob.glob(os.path.join(folder, "bench_queue*.json")):
        cores, rows = medians(path, kind)
        runs.setdefault(cores, {}).update(rows)
    return {c: rows for c, rows in runs.items() if rows}


def table(title, runs, baseline):
    """Markdown: a row per name, a column per core count, each cell also over `baseline`."""
    counts = sorted(runs)
    names = sorted({n for rows in runs.values() for n in rows},
                   key=lambda n: (n.startswith("Boost"), n.startswith("Bare"), n))
    print("| %s | " % title + " | ".join("%d cores" % c for c in counts) + " |")
    print("|---|" + "---:|" * len(counts))
    for name in names:
        cells = []
        for c in counts:
            value = runs[c].get(name)
            base = runs[c].get(baseline)
            if value is None:
                cells.append("")
            elif base and name != baseline:
                cells.append("%.1f (%.1fx)" % (value / 1e6, value / base))
            else:
                cells.append("%.1f" % (value / 1e6))
        print("| %s | %s |" % (name, " | ".join(cells)))


def main():
    if len(sys.argv) != 2:
        sys.exit("usage: queue_report.py OUT (a device_run.sh output folder)")
    mpmc = gather(sys.argv[1], "mpmc_4x4_8B")
    if not mpmc:
        sys.exit("queue_report: no 4x4 rows in %s/bench_queue*.json" % sys.argv[1])
    table("4x4, 8-byte messages, M msg/s (x Boost)", mpmc, "Boost_message_queue_mpmc_4x4_8B")
    spsc = gather(sys.argv[1], "queue_spsc_8B")
    if spsc:
        print()
        table("SPSC, 8-byte messages, M msg/s (x today's queue)", spsc, "Mproc_queue_spsc_8B")
    print()
    reading(mpmc)


def reading(mpmc):
    """Issue 14's 4x4 goal (>= 15 M msg/s and >= 10x Boost) on the most cores measured: which
    rows meet it, and how each scaled from the fewest cores measured."""
    most, fewest = max(mpmc), min(mpmc)
    rows = mpmc[most]
    boost = rows.get("Boost_message_queue_mpmc_4x4_8B")
    print("Issue 14's goal on %d cores: 4x4 >= 15 M msg/s and >= 10x Boost (single puts and gets)." % most)
    for name in sorted(rows, key=lambda n: -rows[n]):
        if name.startswith("Boost") or "batch" in name:
            continue
        value = rows[name]
        meets = value >= 15e6 and (not boost or value >= 10 * boost)
        grew = ""
        if fewest != most and name in mpmc[fewest]:
            grew = ", x%.2f from %d cores" % (value / mpmc[fewest][name], fewest)
        print("- %s: %.1f M/s%s%s" % (name, value / 1e6, grew, " (meets it)" if meets else ""))


if __name__ == "__main__":
    main()

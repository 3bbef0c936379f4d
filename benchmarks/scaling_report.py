#!/usr/bin/env python3
"""Turns benchmarks/scaling.sh's CSV into a table on stdout and an SVG plot (written here, no
plotting package needed): prime-search speedup vs cores, and submit+get latency vs cores and vs
workers.

    python3 benchmarks/scaling_report.py build/scaling/scaling.csv --svg build/scaling/scaling.svg
"""
import argparse
import csv
import sys
from collections import defaultdict

SPEEDUP_LINES = [  # (metric, label, colour, serial metric it is compared with)
    ("primes_pool_cold_ms", "Pool, cold (start + map + stop)", "#d62728", "primes_serial_ms"),
    ("primes_pool_warm_ms", "Pool, warm", "#ff7f0e", "primes_serial_ms"),
    ("primes_fork_map_ms", "fork_map", "#2ca02c", "primes_serial_ms"),
    ("primes_openmp_ms", "OpenMP dynamic (warm)", "#1f77b4", "primes_serial_ms"),
    ("primes_openmp_first_ms", "OpenMP, first region", "#9467bd", "primes_serial_ms"),
    ("python_primes_pool_ms", "Python multiprocessing.Pool", "#7f7f7f", "python_primes_serial_ms"),
]


def load(path):
    rows = defaultdict(dict)  # metric -> {(cores, workers): median}
    with open(path) as f:
        for r in csv.DictReader(f):
            rows[r["metric"]][(int(r["cores"]), int(r["workers"]))] = float(r["median"])
    return rows


def by_cores(rows, metric):
    return {c: v for (c, _w), v in rows.get(metric, {}).items()}


def table(rows):
    cores = sorted({c for m in rows.values() for (c, _w) in m})
    head = f"{'metric':<28}" + "".join(f"{c:>10}" for c in cores)
    print(head + "\n" + "-" * len(head))
    for metric in sorted(rows):
        if metric == "submit_get_us_by_workers":
            continue
        vals = by_cores(rows, metric)
        print(f"{metric:<28}" + "".join(f"{vals[c]:>10.4g}" if c in vals else f"{'':>10}" for c in cores))
    for metric, label, _colour, serial_metric in SPEEDUP_LINES:
        serial = by_cores(rows, serial_metric).get(1)
        vals = by_cores(rows, metric)
        if serial and vals:
            print(f"{'speedup ' + metric[:-3]:<28}" +
                  "".join(f"{serial / vals[c]:>9.2f}x" if c in vals else f"{'':>10}" for c in cores))
    sweep = rows.get("submit_get_us_by_workers", {})
    if sweep:
        c = max(c for (c, _w) in sweep)
        print(f"\nsubmit+get on {c} core(s) by pool size: " +
              ", ".join(f"Pool({w}) {v:.3g} us" for (cc, w), v in sorted(sweep.items()) if cc == c))


class Panel:
    """One chart: x and y from 0 to their maxima, a linear grid, lines with markers, a legend."""

    def __init__(self, x0, y0, w, h, title, xlabel, ylabel, xmax, ymax):
        self.x0, self.y0, self.w, self.h = x0, y0, w, h
        self.xmax, self.ymax = max(xmax, 1), max(ymax, 1e-9)
        self.parts = [f'<text x="{x0 + w / 2}" y="{y0 - 12}" text-anchor="middle" font-size="15">{title}</text>',
                      f'<rect x="{x0}" y="{y0}" width="{w}" height="{h}" fill="none" stroke="#444"/>',
                      f'<text x="{x0 + w / 2}" y="{y0 + h + 38}" text-anchor="middle">{xlabel}</text>',
                      f'<text x="{x0 - 45}" y="{y0 + h / 2}" text-anchor="middle" '
                      f'transform="rotate(-90 {x0 - 45} {y0 + h / 2})">{ylabel}</text>']
        for i in range(6):
            gy = self.ymax * i / 5
            y = self.py(gy)
            self.parts.append(f'<line x1="{x0}" y1="{y}" x2="{x0 + w}" y2="{y}" stroke="#ddd"/>')
            self.parts.append(f'<text x="{x0 - 6}" y="{y + 4}" text-anchor="end" font-size="11">{gy:.3g}</text>')
        self.legend_y = y0 + 14

    def px(self, x):
        return self.x0 + self.w * x / self.xmax

    def py(self, y):
        return self.y0 + self.h - self.h * y / self.ymax

    def xticks(self, ticks):
        for t in ticks:
            self.parts.append(f'<text x="{self.px(t)}" y="{self.y0 + self.h + 16}" text-anchor="middle" '
                              f'font-size="11">{t}</text>')

    def line(self, points, label, colour, dashed=False):
        if not points:
            return
        pts = " ".join(f"{self.px(x):.1f},{self.py(y):.1f}" for x, y in points)
        dash = ' stroke-dasharray="5,4"' if dashed else ""
        self.parts.append(f'<polyline points="{pts}" fill="none" stroke="{colour}" stroke-width="2"{dash}/>')
        for x, y in points:
            self.parts.append(f'<circle cx="{self.px(x):.1f}" cy="{self.py(y):.1f}" r="3" fill="{colour}"/>')
        lx = self.x0 + 10
        self.parts.append(f'<line x1="{lx}" y1="{self.legend_y - 4}" x2="{lx + 20}" y2="{self.legend_y - 4}" '
                          f'stroke="{colour}" stroke-width="2"{dash}/>')
        self.parts.append(f'<text x="{lx + 26}" y="{self.legend_y}" font-size="11">{label}</text>')
        self.legend_y += 15


def svg(rows, machine, path):
    cores = sorted({c for m in rows.values() for (c, _w) in m})
    top = max(cores)
    lines = []
    for metric, label, colour, serial_metric in SPEEDUP_LINES:
        serial = by_cores(rows, serial_metric).get(1)
        vals = by_cores(rows, metric)
        if serial and vals:
            lines.append(([(c, serial / vals[c]) for c in sorted(vals)], label, colour))
    ymax = max([top] + [y for pts, _l, _c in lines for _x, y in pts]) * 1.05
    speed = Panel(80, 60, 420, 320, "Prime search: speedup over one core", "cores", "speedup", top, ymax)
    speed.xticks(cores)
    speed.line([(c, c) for c in cores], "ideal", "#bbb", dashed=True)
    for pts, label, colour in lines:
        speed.line(pts, label, colour)

    sweep = rows.get("submit_get_us_by_workers", {})
    sweep_cores = max((c for (c, _w) in sweep), default=None)
    sweep_pts = sorted((w, v) for (c, w), v in sweep.items() if c == sweep_cores)
    per_core = sorted(by_cores(rows, "submit_get_us").items())
    xmax = max([x for x, _ in sweep_pts + per_core] + [1])
    ymax = max([y for _, y in sweep_pts + per_core] + [1]) * 1.1
    lat = Panel(600, 60, 420, 320, "submit(f, x).get() round trip", "workers (= cores, or pool size)",
                "microseconds", xmax, ymax)
    lat.xticks(sorted({x for x, _ in sweep_pts + per_core}))
    lat.line(per_core, "Pool(k) on k cores", "#d62728")
    if sweep_pts:
        lat.line(sweep_pts, f"Pool(N) on {sweep_cores} cores", "#1f77b4")

    body = "\n".join(speed.parts + lat.parts)
    with open(path, "w") as f:
        f.write(f'<svg xmlns="http://www.w3.org/2000/svg" width="1080" height="460" font-family="sans-serif" '
                f'font-size="12">\n<rect width="100%" height="100%" fill="white"/>\n'
                f'<text x="540" y="22" text-anchor="middle" font-size="16">mproc scaling: {machine}</text>\n'
                f"{body}\n</svg>\n")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("csv")
    ap.add_argument("--machine", default="this machine")
    ap.add_argument("--svg")
    a = ap.parse_args()
    rows = load(a.csv)
    if not rows:
        sys.exit("scaling_report: no rows in " + a.csv)
    table(rows)
    if a.svg:
        svg(rows, a.machine, a.svg)
        print(f"\nwrote {a.svg}")


if __name__ == "__main__":
    main()

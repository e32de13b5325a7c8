#!/usr/bin/env python3
"""Sums an `ncu --csv --metrics gpu__time_duration.sum` log per kernel name (stdin), printing the
kernels by total time: where one decode step's GPU time goes, without launch gaps."""
import csv, collections, sys

rows = [r for r in csv.reader(l for l in sys.stdin if l.startswith('"'))]
head, body = rows[0], rows[1:]
name_i, val_i, unit_i = head.index("Kernel Name"), head.index("Metric Value"), head.index("Metric Unit")
total, count = collections.Counter(), collections.Counter()
for r in body:
    v = float(r[val_i].replace(",", ""))
    v = v / 1e3 if r[unit_i] == "ns" else v * 1e3 if r[unit_i] == "ms" else v  # -> us
    k = r[name_i].split("(")[0][:60]
    total[k] += v
    count[k] += 1
s = sum(total.values())
print(f"{len(body)} kernels, {s:.1f} us")
for k, v in total.most_common(25):
    print(f"{v:9.1f} us {100*v/s:5.1f}%  x{count[k]:<4d} {k}")

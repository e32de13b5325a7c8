#!/usr/bin/env python3
"""Where a CUDA graph's time goes, from a tools/kernel_trace CSV (CUPTI records, one per kernel).

For every captured graph: how often it was launched and its median span (first kernel's start to
last kernel's end), busy time (the union of its kernels' intervals) and idle time (span - busy:
launch gaps and drains between kernels). Then, for the graphs asked for (default: the most
launched one), each kernel name's share of one launch: median time per launch, count per launch,
the median gap before it (negative: it overlapped the previous kernel, as PDL allows) and the median
step it adds to the chain (its end minus the previous kernel's end: with PDL on, what it costs the
critical path of a chain of dependent kernels).
Usage: scripts/kernel_trace.py trace.csv [--graph ID ...] [--top N] [--skip K]
"""
import argparse, collections, csv, re, shutil, statistics, subprocess


def short_names(names):
    """Readable kernel names: demangled (c++filt, where installed), namespaces and arguments
    dropped, template arguments kept (they tell a kernel's variants apart)."""
    names = sorted(set(names))
    plain = names
    if shutil.which("c++filt"):
        out = subprocess.run(["c++filt"], input="\n".join(names), capture_output=True, text=True)
        if out.returncode == 0 and len(out.stdout.splitlines()) == len(names):
            plain = out.stdout.splitlines()
    short = {}
    for raw, p in zip(names, plain):
        p = re.sub(r"\(anonymous namespace\)::|mind4::cuda::|void ", "", p)
        depth, cut = 0, len(p)
        for i, ch in enumerate(p):  # the argument list: the first "(" outside template brackets
            depth += ch == "<"
            depth -= ch == ">"
            if ch == "(" and depth == 0:
                cut = i
                break
        short[raw] = p[:cut][:72]
    return short


def load(path):
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    for r in rows:
        for k in ("start_ns", "end_ns", "graph", "node", "correlation", "grid", "block"):
            r[k] = int(r[k])
    return rows


def busy_ns(kernels):
    """The union of the kernels' [start, end) intervals."""
    total, reach = 0, None
    for k in sorted(kernels, key=lambda k: k["start_ns"]):
        s, e = k["start_ns"], k["end_ns"]
        if reach is None or s >= reach:
            total += e - s
            reach = e
        elif e > reach:
            total += e - reach
            reach = e
    return total


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("trace")
    ap.add_argument("--graph", type=int, nargs="*", help="graph ids to break down (default: most launched)")
    ap.add_argument("--top", type=int, default=30, help="kernel names shown per graph (default 30)")
    ap.add_argument("--skip", type=int, default=3, help="warm-up launches left out per graph (default 3)")
    a = ap.parse_args()
    rows = load(a.trace)
    launches = collections.defaultdict(lambda: collections.defaultdict(list))  # graph -> corr -> kernels
    for r in rows:
        if r["graph"]:
            launches[r["graph"]][r["correlation"]].append(r)
    print(f"{len(rows)} kernels, {sum(1 for r in rows if not r['graph'])} outside graphs")
    print(f"{'graph':>6} {'launches':>8} {'kernels':>7} {'span us':>9} {'busy us':>9} {'idle us':>8}")
    for g, by_corr in sorted(launches.items()):
        steps = [v for _, v in sorted(by_corr.items())][a.skip:] or list(by_corr.values())
        span = statistics.median(max(k["end_ns"] for k in s) - min(k["start_ns"] for k in s) for s in steps)
        busy = statistics.median(busy_ns(s) for s in steps)
        n = statistics.median(len(s) for s in steps)
        print(f"{g:>6} {len(by_corr):>8} {n:>7.0f} {span/1e3:>9.1f} {busy/1e3:>9.1f} {(span-busy)/1e3:>8.1f}")
    if not launches:
        return
    chosen = a.graph or [max(launches, key=lambda g: len(launches[g]))]
    short = short_names(k["name"] for g in chosen for st in launches[g].values() for k in st)
    for g in chosen:
        steps = [v for _, v in sorted(launches[g].items())][a.skip:] or list(launches[g].values())
        per_name = collections.defaultdict(lambda: {"t": [], "n": [], "gap": [], "step": []})
        for s in steps:
            s = sorted(s, key=lambda k: k["start_ns"])
            t, n = collections.Counter(), collections.Counter()
            for prev, k in zip([None] + s[:-1], s):
                name = short[k["name"]]
                t[name] += k["end_ns"] - k["start_ns"]
                n[name] += 1
                if prev is not None:
                    per_name[name]["gap"].append(k["start_ns"] - prev["end_ns"])
                    per_name[name]["step"].append(k["end_ns"] - prev["end_ns"])
            for name in t:
                per_name[name]["t"].append(t[name])
                per_name[name]["n"].append(n[name])
        span = statistics.median(max(k["end_ns"] for k in s) - min(k["start_ns"] for k in s) for s in steps)
        print(f"\ngraph {g}: {len(steps)} launches after {a.skip} left out, median span {span/1e3:.1f} us")
        print(f"{'us/launch':>9} {'share':>6} {'count':>5} {'us each':>8} {'gap us':>7} {'step us':>7}  kernel")
        ranked = sorted(per_name.items(), key=lambda kv: -statistics.median(kv[1]["t"]))
        for name, v in ranked[: a.top]:
            t, n = statistics.median(v["t"]), statistics.median(v["n"])
            gap = statistics.median(v["gap"]) / 1e3 if v["gap"] else float("nan")
            step = statistics.median(v["step"]) / 1e3 if v["step"] else float("nan")
            print(f"{t/1e3:>9.1f} {100*t/span:>5.1f}% {n:>5.0f} {t/1e3/max(n,1):>8.2f} {gap:>7.2f} {step:>7.2f}  {name}")


if __name__ == "__main__":
    main()

"""Plots of `.ci/bench`'s results: throughput and p99 latency against connections,
one figure per workload and value size, one line per target.

Usage: bench_plot.py RESULTS.jsonl OUT_DIR  (writes OUT_DIR/<workload>-<size>.png)
"""

import collections
import json
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

TARGETS = ["bare-hyper", "ringkv-1", "ringkv-3", "ringkv-3-secure", "etcd-3"]
LABELS = {
    "bare-hyper": "bare hyper (HTTP ceiling)",
    "ringkv-1": "ringkv, 1 node (N=1)",
    "ringkv-3": "ringkv, 3 nodes (N=3 R=2 W=2)",
    "ringkv-3-secure": "ringkv, 3 nodes, keyed + TLS + token",
    "etcd-3": "etcd 3.4, 3 members",
}
WORKLOADS = {"a": "50% read / 50% update", "b": "95% read / 5% update",
             "c": "read only", "w": "inserts"}


def main(results_path, out_dir):
    rows = [json.loads(line) for line in open(results_path) if line.strip()]
    # (workload, size) -> target -> [(connections, ops/s, p99 ms)]
    series = collections.defaultdict(lambda: collections.defaultdict(list))
    for r in rows:
        series[(r["workload"], r["value_size"])][r["target"]].append(
            (r["concurrency"], r["throughput_ops_s"], r["p99_ms"]))
    for (workload, size), by_target in sorted(series.items()):
        if set(by_target) == {"bare-hyper"}:
            continue
        fig, (ax_tp, ax_p99) = plt.subplots(1, 2, figsize=(11, 4.2))
        for target in TARGETS:
            # The bare server answers reads only; it is the ceiling on every figure.
            points = by_target.get(target) or (
                series[("c", 100)].get(target) if target == "bare-hyper" else None)
            if not points:
                continue
            points.sort()
            conns = [p[0] for p in points]
            style = "--" if target == "bare-hyper" else "-"
            ax_tp.plot(conns, [p[1] for p in points], style, marker="o", label=LABELS[target])
            ax_p99.plot(conns, [p[2] for p in points], style, marker="o", label=LABELS[target])
        for ax, title, unit in ((ax_tp, "throughput", "ops/s"), (ax_p99, "p99 latency", "ms")):
            ax.set_xscale("log", base=2)
            ax.set_xlabel("connections")
            ax.set_ylabel(unit)
            ax.set_title(f"{title}, workload {workload} ({WORKLOADS[workload]}), {size} B")
            ax.grid(True, alpha=0.3)
        ax_p99.set_yscale("log")
        ax_tp.legend(fontsize=8)
        fig.tight_layout()
        path = f"{out_dir}/{workload}-{size}.png"
        fig.savefig(path, dpi=90)
        plt.close(fig)
        print(f"wrote {path}", file=sys.stderr)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])

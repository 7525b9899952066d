#!/usr/bin/env python3
"""Plot `locus bench fabric` JSON: failure detection time and gossip
bandwidth against cluster size, at 0% and 10% loss.

usage: python3 benches/plot_fabric.py benches/results/fabric.json benches/results/fabric.png
(needs matplotlib: python3 -m pip install matplotlib)
"""
import json
import statistics
import sys
from collections import defaultdict

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def main(src: str, dst: str) -> None:
    with open(src) as f:
        report = json.load(f)
    by = defaultdict(list)
    for run in report["runs"]:
        by[(run["loss"], run["nodes"])].append(run)
    losses = sorted({k[0] for k in by})
    fig, (ax1, ax2, ax3) = plt.subplots(1, 3, figsize=(15, 4.5))
    for loss in losses:
        sizes = sorted(n for (l, n) in by if l == loss)
        label = f"{loss * 100:.0f}% loss"

        def series(key):
            return [statistics.median(r[key] for r in by[(loss, n)] if r[key] is not None) for n in sizes]

        ax1.plot(sizes, series("dead_99_ms"), marker="o", label=label)
        ax2.plot(sizes, series("join_ms"), marker="o", label=label)
        ax3.plot(sizes, series("kbit_per_node_per_sec"), marker="o", label=label)
    for ax, title, unit in [
        (ax1, "crash known dead by 99% of nodes", "ms (median of runs)"),
        (ax2, "join: newcomer and 99% of nodes see each other", "ms (median of runs)"),
        (ax3, "gossip sent per node", "kbit/s"),
    ]:
        ax.set_xscale("log")
        ax.set_xlabel("nodes (simulated, 5 sites)")
        ax.set_ylabel(unit)
        ax.set_title(title, fontsize=10)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
    ax1.axhline(2000, color="grey", linestyle="--", linewidth=0.8)
    ax3.axhline(20, color="grey", linestyle="--", linewidth=0.8)
    fv = report["false_verdicts"]
    fig.suptitle(
        f"locus fabric (foca SWIM), probe {report['tuning']['probe_period_ms']} ms; "
        f"false dead verdicts in {fv['virtual_secs']} s at {fv['loss'] * 100:.0f}% loss, "
        f"N={fv['nodes']}: {fv['false_dead_transitions']}",
        fontsize=11,
    )
    fig.tight_layout()
    fig.savefig(dst, dpi=110)


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2])

"""``<machine>.png``: throughput per workload and single-text latency, one bar group per system."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.report import SPEED_COLUMNS


def chart(doc: dict[str, Any], path: Path) -> Path:
    """Draw and save the chart (matplotlib, no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    measured = [(name, s["best"]) for name, s in doc["systems"].items() if s.get("best")]
    names = [name for name, _ in measured]
    y = np.arange(len(names))
    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 1.2 + 0.55 * max(len(names), 1)), sharey=True)
    height = 0.8 / len(SPEED_COLUMNS)
    for i, key in enumerate(SPEED_COLUMNS):
        values = [best["throughput"].get(key, 0.0) for _, best in measured]
        left.barh(y + (i - 1.5) * height, values, height, label=key.replace("@", " batch "))
    left.set_xscale("log")
    left.set_xlabel("texts / s (log scale, higher is better)")
    left.set_title("Throughput")
    left.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.1), ncol=len(SPEED_COLUMNS), frameon=False)
    for i, key in enumerate(("p50", "p99")):
        values = [best["latency_ms"][key] for _, best in measured]
        right.barh(y + (i - 0.5) * 0.4, values, 0.4, label=key)
    right.set_xlabel("ms per single text (lower is better)")
    right.set_title("Latency")
    right.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.1), ncol=2, frameon=False)
    left.set_yticks(y, names)
    left.invert_yaxis()
    fig.suptitle(f"{doc['machine']['name']}: {doc['machine']['cpu_model']}, {doc['threads']} threads per system")
    fig.tight_layout()
    fig.savefig(path, dpi=110, format="png", bbox_inches="tight")
    plt.close(fig)
    return path

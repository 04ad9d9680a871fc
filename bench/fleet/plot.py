"""The wait CDF of each policy, one line each, as a PNG (matplotlib, headless)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path


def wait_cdf_png(waits: Mapping[str, Sequence[float]], path: Path, title: str) -> None:
    """Write the empirical CDF of each policy's queue waits (trace seconds, log x axis;
    waits of 0 are drawn at the axis' left end)."""
    import matplotlib

    matplotlib.use("Agg")  # no display: before pyplot is imported
    from matplotlib import pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5), dpi=110)
    floor = 0.1
    for name, samples in waits.items():
        ordered = sorted(max(s, floor) for s in samples)
        if not ordered:
            continue
        fractions = [(i + 1) / len(ordered) for i in range(len(ordered))]
        ax.step(ordered, fractions, where="post", label=name)
    ax.set_xscale("log")
    ax.set_xlabel(f"queue wait, trace seconds (log; waits under {floor:g} s at {floor:g})")
    ax.set_ylabel("fraction of jobs")
    ax.set_ylim(0, 1.0)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="lower right")
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)

"""Bar chart of a loss comparison: one group per metric, one bar per loss, error bars = std over seeds."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def metric_label(key: str) -> str:
    """Short column label of a metric key: ``nmi`` -> NMI, ``recall@4`` -> R@4, ``map@r`` -> MAP@R; few-shot
    (metrics/fewshot.py): ``oneshot`` -> 1-shot runs, ``20way1shot`` -> 20-way 1-shot (``_ncm``: + NCM)."""
    if key == "oneshot":
        return "1-shot runs"
    if "way" in key and "shot" in key and key.split("way")[0].isdigit():
        ways, rest = key.split("way", 1)
        shots, _, rule = rest.partition("shot")
        return f"{ways}-way {shots}-shot" + (f" {rule.strip('_').upper()}" if rule else "")
    return key.replace("recall@", "R@").upper()


def plot_comparison(summary: dict[str, dict[str, tuple[float, float]]], out: str | Path,
                    metrics: Sequence[str] = ("nmi", "recall@1", "map@r"), title: str = "") -> Path:
    """``summary[loss][metric] = (mean, std)`` with values in [0, 1]; writes a PNG at ``out``.

    Metrics absent from every loss are left out; a loss missing one metric gets no bar there.
    """
    if not summary:
        raise ValueError("plot_comparison needs at least one loss in the summary")
    metrics = [m for m in metrics if any(m in values for values in summary.values())]
    losses = list(summary)
    width = 0.8 / len(losses)
    positions = np.arange(len(metrics))
    fig, ax = plt.subplots(figsize=(max(6.0, 1.6 * len(metrics) + 0.4 * len(losses)), 4.6), dpi=120)
    colours = plt.get_cmap("tab10")
    for i, loss in enumerate(losses):
        means = [100 * summary[loss].get(m, (np.nan, 0.0))[0] for m in metrics]
        stds = [100 * summary[loss].get(m, (np.nan, 0.0))[1] for m in metrics]
        bars = ax.bar(positions + (i - (len(losses) - 1) / 2) * width, means, width, yerr=stds, capsize=2,
                      label=loss, color=colours(i % 10), edgecolor="white", linewidth=0.5)
        ax.bar_label(bars, fmt="%.1f", fontsize=6, padding=1)
    ax.set_xticks(positions, [metric_label(m) for m in metrics])
    ax.set_ylabel("score (%)")
    ax.set_ylim(0, 105)
    ax.grid(axis="y", alpha=0.3)
    ax.set_axisbelow(True)
    ax.spines[["top", "right"]].set_visible(False)
    # Below the axes: inside, it would cover the bars of the first metric.
    ax.legend(fontsize=8, ncols=min(len(losses), 5), loc="upper center", bbox_to_anchor=(0.5, -0.1),
              frameon=False)
    if title:
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    plt.close(fig)
    return out

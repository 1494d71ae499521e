"""Training curves from a run's ``metrics.jsonl``: loss, learning rate, NMI and Recall@1 over epochs.

``metrics.jsonl`` rows carry ``epoch``, ``step``, ``split`` ("train" / "eval") and values. Train rows are
logged during epoch ``epoch`` (0-based) and eval rows after ``epoch`` epochs are complete, so train rows are
placed at the fractional epoch ``step / steps_per_epoch`` (steps per epoch read off the eval rows) and eval
rows at ``epoch``. Without eval rows to calibrate, train rows are placed at ``epoch``.

Evaluation metrics are drawn in percent (the units the terminal prints). With fewer than three evaluations
they are drawn as points, not joined by a line (two points make no curve). The star marks the checkpoint the
report shows (``shown=("last.pt", 10)``), so the figure and the report's header name the same epoch; without
``shown`` it marks the best evaluation.
"""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

__all__ = ["read_metrics", "plot_curves", "curves"]

PANELS = (  # (split, key, title)
    ("train", "loss", "training loss"),
    ("train", "lr", "learning rate"),
    ("eval", "nmi", "NMI (eval, %)"),
    ("eval", "recall@1", "Recall@1 (eval, %)"),
)
MIN_POINTS_FOR_A_LINE = 3


def read_metrics(path) -> list[dict]:
    """Rows of a ``metrics.jsonl`` file (blank and truncated last lines are skipped)."""
    rows = []
    for line in Path(path).read_text().splitlines():
        line = line.strip()
        if not line:
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:  # a run killed mid-write leaves a partial last line
            continue
    return rows


def _steps_per_epoch(rows: list[dict]) -> float | None:
    evals = [r for r in rows if r.get("split") == "eval" and r.get("epoch", 0) > 0 and "step" in r]
    if not evals:
        return None
    last = evals[-1]
    return last["step"] / last["epoch"]


def plot_curves(rows: list[dict], *, title: str | None = None,
                shown: tuple[str, int | None] | None = None) -> plt.Figure:
    """2 x 2 figure of loss, lr, NMI and Recall@1 (%) against epochs; panels without data say so.

    ``shown``: (checkpoint name, its epoch) to star on the evaluation panels; default: the best evaluation.
    """
    spe = _steps_per_epoch(rows)
    fig, axes = plt.subplots(2, 2, figsize=(12, 7.5), layout="constrained")
    colors = {"train": "#3366cc", "eval": "#dc6b19"}
    for ax, (split, key, name) in zip(axes.flat, PANELS, strict=True):
        pts = [r for r in rows if r.get("split") == split and isinstance(r.get(key), (int, float))]
        if split == "train" and spe:
            xs = [r["step"] / spe for r in pts]
        else:
            xs = [r.get("epoch", i) for i, r in enumerate(pts)]
        ys = [100 * r[key] if split == "eval" else r[key] for r in pts]
        if pts:
            as_points = split == "eval" and len(pts) < MIN_POINTS_FOR_A_LINE
            ax.plot(xs, ys, color=colors[split], lw=0 if as_points else 1.8, ls="none" if as_points else "-",
                    marker="o" if len(pts) <= 30 else None, ms=6 if as_points else 4)
            if split == "eval":
                star = _starred(xs, ys, shown)
                if star is not None:
                    i, label = star
                    right = xs[i] >= (min(xs) + max(xs)) / 2
                    ax.plot([xs[i]], [ys[i]], marker="*", ms=13, color="#b8860b", zorder=3)
                    ax.annotate(f"{label} {ys[i]:.2f} @ epoch {xs[i]:g}", (xs[i], ys[i]),
                                textcoords="offset points", xytext=(-8 if right else 8, -16),
                                ha="right" if right else "left", fontsize=9)
                if as_points:
                    ax.set_xlim(min(xs) - 1, max(xs) + 1)
            if key == "loss" and min(ys) > 0 and max(ys) / min(ys) > 30:
                ax.set_yscale("log")
        else:
            ax.text(0.5, 0.5, f"no '{key}' in {split} rows", ha="center", va="center", color="0.5",
                    transform=ax.transAxes)
        ax.set_title(name, fontsize=12, loc="left")
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        for side in ("top", "right"):
            ax.spines[side].set_visible(False)
    fig.suptitle(title or "Training curves", fontsize=14)
    return fig


def _starred(xs: list, ys: list, shown: tuple[str, int | None] | None) -> tuple[int, str] | None:
    """Which evaluation to star and how to label it: the shown checkpoint's epoch, else the best one."""
    if shown is None:
        return max(range(len(ys)), key=ys.__getitem__), "best"
    name, epoch = shown
    at = [i for i, x in enumerate(xs) if epoch is not None and x == epoch]
    return (at[-1], name) if at else None  # a checkpoint saved without an evaluation has no point to star


def curves(metrics_jsonl, out, *, title: str | None = None,
           shown: tuple[str, int | None] | None = None) -> Path:
    """Read ``metrics_jsonl``, draw :func:`plot_curves` and save the PNG at ``out``; returns the path."""
    path = Path(metrics_jsonl)
    if not path.exists():
        raise ValueError(f"{path} not found: curves need a run's metrics.jsonl (from `clusterloss train`)")
    fig = plot_curves(read_metrics(path), title=title, shown=shown)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out

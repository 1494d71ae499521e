"""Training curves from a run's ``metrics.jsonl``: loss, learning rate, NMI and Recall@1 over epochs.

``metrics.jsonl`` rows carry ``epoch``, ``step``, ``split`` ("train" / "eval") and values. Train rows are
logged during epoch ``epoch`` (0-based) and eval rows after ``epoch`` epochs are complete, so train rows are
placed at the fractional epoch ``step / steps_per_epoch`` (steps per epoch read off the eval rows) and eval
rows at ``epoch``. Without eval rows to calibrate, train rows are placed at ``epoch``.
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
    ("eval", "nmi", "NMI (eval)"),
    ("eval", "recall@1", "Recall@1 (eval)"),
)


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


def plot_curves(rows: list[dict], *, title: str | None = None) -> plt.Figure:
    """2 x 2 figure of loss, lr, NMI and Recall@1 against epochs; panels without data say so."""
    spe = _steps_per_epoch(rows)
    fig, axes = plt.subplots(2, 2, figsize=(12, 7.5), layout="constrained")
    colors = {"train": "#3366cc", "eval": "#dc6b19"}
    for ax, (split, key, name) in zip(axes.flat, PANELS, strict=True):
        pts = [r for r in rows if r.get("split") == split and isinstance(r.get(key), (int, float))]
        if split == "train" and spe:
            xs = [r["step"] / spe for r in pts]
        else:
            xs = [r.get("epoch", i) for i, r in enumerate(pts)]
        ys = [r[key] for r in pts]
        if pts:
            ax.plot(xs, ys, color=colors[split], lw=1.8, marker="o" if len(pts) <= 30 else None, ms=4)
            if split == "eval":
                best = max(range(len(ys)), key=ys.__getitem__)
                right = xs[best] >= (min(xs) + max(xs)) / 2
                ax.plot([xs[best]], [ys[best]], marker="*", ms=13, color="#b8860b", zorder=3)
                ax.annotate(f"best {ys[best]:.4f} @ epoch {xs[best]:g}", (xs[best], ys[best]),
                            textcoords="offset points", xytext=(-8 if right else 8, -16),
                            ha="right" if right else "left", fontsize=9)
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


def curves(metrics_jsonl, out, *, title: str | None = None) -> Path:
    """Read ``metrics_jsonl``, draw :func:`plot_curves` and save the PNG at ``out``; returns the path."""
    path = Path(metrics_jsonl)
    if not path.exists():
        raise ValueError(f"{path} not found: curves need a run's metrics.jsonl (from `clusterloss train`)")
    fig = plot_curves(read_metrics(path), title=title)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out

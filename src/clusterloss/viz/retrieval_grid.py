"""Retrieval examples: each row a query followed by its top-k neighbours, framed green (same class) or red."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from clusterloss.metrics.retrieval import nearest_neighbors  # noqa: E402

__all__ = ["pick_queries", "plot_retrieval_grid", "retrieval_grid"]

SAME = "#1a9850"
OTHER = "#d73027"
QUERY = "#2b2b2b"


def _numpy(a) -> np.ndarray:
    return a.detach().cpu().numpy() if torch.is_tensor(a) else np.asarray(a)


def pick_queries(labels, n: int, *, seed: int = 0) -> np.ndarray:
    """``n`` query indices from distinct classes where possible (random, reproducible), sorted by class."""
    y = _numpy(labels).reshape(-1)
    rng = np.random.default_rng(seed)
    classes = rng.permutation(np.unique(y))
    picked = [int(rng.choice(np.flatnonzero(y == c))) for c in classes[:n]]
    if len(picked) < n:  # fewer classes than queries: fill with other samples
        rest = np.setdiff1d(np.arange(len(y)), picked)
        picked += rng.choice(rest, min(n - len(picked), len(rest)), replace=False).tolist()
    picked = np.array(picked, dtype=np.int64)
    return picked[np.argsort(y[picked], kind="stable")]


def _show(ax, image: np.ndarray, frame: str, caption: str | None, caption_color: str) -> None:
    if image.shape[0] == 1:
        ax.imshow(image[0], cmap="gray", vmin=0, vmax=255, interpolation="nearest")
    else:
        ax.imshow(image.transpose(1, 2, 0), interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_edgecolor(frame)
        spine.set_linewidth(4)
    if caption:
        ax.set_xlabel(caption, fontsize=8, color=caption_color, labelpad=2)


def plot_retrieval_grid(images, labels, queries, neighbors, *, class_names=None,
                        title: str | None = None) -> plt.Figure:
    """Figure with one row per query: the query, then its neighbours framed by label agreement.

    Args:
        images: [N, C, H, W] uint8, C = 1 (grayscale) or 3 (RGB).
        labels: [N] class ids.
        queries: [Q] indices into the N samples.
        neighbors: [Q, k] indices of each query's neighbours, nearest first.
    """
    imgs, y = _numpy(images), _numpy(labels).reshape(-1)
    q, nb = _numpy(queries).reshape(-1), _numpy(neighbors)
    if imgs.ndim != 4 or imgs.shape[1] not in (1, 3) or len(imgs) != len(y):
        raise ValueError(f"images must be [N, 1 or 3, H, W], one label each; got {imgs.shape} / {y.shape}")
    if nb.ndim != 2 or nb.shape[0] != len(q):
        raise ValueError(f"neighbors must be [Q, k] with Q = {len(q)} queries, got shape {nb.shape}")

    def name(c) -> str:
        return str(class_names[c]) if class_names is not None and 0 <= c < len(class_names) else str(c)

    rows, cols = len(q), nb.shape[1] + 1
    fig, axes = plt.subplots(rows, cols, figsize=(1.25 * cols + 0.6, 1.45 * rows + 0.9), squeeze=False,
                             layout="constrained")
    for r in range(rows):
        _show(axes[r, 0], imgs[q[r]], QUERY, f"query: {name(y[q[r]])}", QUERY)
        for c in range(1, cols):
            j = nb[r, c - 1]
            same = y[j] == y[q[r]]
            _show(axes[r, c], imgs[j], SAME if same else OTHER, name(y[j]), SAME if same else OTHER)
    for c in range(1, cols):
        axes[0, c].set_title(f"#{c}", fontsize=9)
    axes[0, 0].set_title("query", fontsize=9)
    hits = (y[nb] == y[q][:, None]).mean()
    fig.suptitle(f"{title or 'Nearest neighbours'}\ngreen frame: same class as the query, red: other class "
                 f"({hits:.0%} of shown neighbours correct)", fontsize=11)
    return fig


def retrieval_grid(embeddings, labels, images, out, *, n_queries: int = 8, k: int = 8, class_names=None,
                   title: str | None = None, seed: int = 0, queries=None) -> Path:
    """Pick queries (or use ``queries``), find their ``k`` nearest neighbours in ``embeddings`` [N, D]
    (self excluded, Euclidean), draw the grid and save it as a PNG at ``out``; returns the path."""
    y = _numpy(labels).reshape(-1)
    q = pick_queries(y, n_queries, seed=seed) if queries is None else np.asarray(queries, dtype=np.int64)
    k = min(k, len(y) - 1)
    _, nb = nearest_neighbors(embeddings, k, query_indices=q)
    fig = plot_retrieval_grid(images, y, q, nb, class_names=class_names, title=title)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out

"""2-D t-SNE maps of an embedding: points coloured by class, or each sample's own thumbnail at its point.

The map is computed with openTSNE (FFT-accelerated, ~20 s for 10,000 x 64 on 2 cores) or scikit-learn's
``TSNE`` when openTSNE is missing. Plotting never reorders samples: point i, colour i and thumbnail i all come
from row i of the inputs (the original project's picture mixed them up).
"""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from clusterloss.utils.threads import idle_cores  # noqa: E402

__all__ = ["embed_2d", "class_colors", "plot_tsne", "tsne_map"]

LEGEND_MAX_CLASSES = 100  # beyond this a legend is unreadable; the title says how many classes there are


def _numpy(a) -> np.ndarray:
    return a.detach().cpu().numpy() if torch.is_tensor(a) else np.asarray(a)


def embed_2d(embeddings, *, seed: int = 0, perplexity: float = 30.0, backend: str = "auto",
             n_jobs: int | None = None) -> np.ndarray:
    """t-SNE of ``embeddings`` [N, D] -> [N, 2] float32 (row i is sample i); PCA init, fixed seed.

    ``n_jobs`` defaults to the idle cores (:func:`clusterloss.utils.threads.idle_cores`) from 5,000
    points up and to 1 below, where thread start-up and spinning cost far more than they save (60 points:
    0.3 s vs 6 s on 2 loaded cores; 10,000 points at load 4.7 on 2 cores: 51 s with 1 thread, 65 s with 2).
    """
    x = np.ascontiguousarray(_numpy(embeddings), dtype=np.float32)
    if n_jobs is None:
        n_jobs = idle_cores() if x.shape[0] >= 5000 else 1
    from threadpoolctl import threadpool_limits  # a scikit-learn dependency

    with threadpool_limits(limits=None if n_jobs == -1 else n_jobs):
        return _embed_2d(x, seed, perplexity, backend, n_jobs)


def _embed_2d(x: np.ndarray, seed: int, perplexity: float, backend: str, n_jobs: int) -> np.ndarray:
    if x.ndim != 2 or x.shape[0] < 4:
        raise ValueError(f"t-SNE needs a 2-D [N, D] array with N >= 4, got shape {x.shape}")
    if backend not in ("auto", "opentsne", "sklearn"):
        raise ValueError(f"backend must be 'auto', 'opentsne' or 'sklearn', got {backend!r}")
    # Both libraries require perplexity < N / 3 (3 * perplexity nearest neighbours per point).
    perplexity = float(min(perplexity, max(1.0, (x.shape[0] - 1) / 3.0 - 1e-3)))
    if backend in ("auto", "opentsne"):
        try:
            from openTSNE import TSNE
        except ImportError:
            if backend == "opentsne":
                raise ValueError("backend='opentsne' needs openTSNE (pip install openTSNE)") from None
        else:
            emb = TSNE(n_components=2, perplexity=perplexity, n_jobs=n_jobs, random_state=seed,
                       initialization="pca", verbose=False).fit(x)
            return np.asarray(emb, dtype=np.float32)
    from sklearn.manifold import TSNE as SkTSNE

    return SkTSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed,
                  n_jobs=n_jobs).fit_transform(x).astype(np.float32)


def class_colors(num_classes: int) -> np.ndarray:
    """[C, 4] RGBA colours: tab10 / tab20 for few classes, evenly spaced hues (shuffled) for many."""
    if num_classes <= 10:
        return plt.get_cmap("tab10")(np.arange(num_classes))
    if num_classes <= 20:
        return plt.get_cmap("tab20")(np.arange(num_classes))
    # Neighbouring class ids get distant hues so adjacent clusters stay distinguishable.
    order = np.random.default_rng(0).permutation(num_classes)
    return plt.get_cmap("turbo")(0.05 + 0.9 * order / max(1, num_classes - 1))


def _thumbnail_canvas(xy: np.ndarray, images: np.ndarray, colors: np.ndarray, canvas_px: int,
                      thumb_px: int) -> np.ndarray:
    """Paste each image [N, C, H, W] uint8 at its own point on a white canvas, framed in its colour."""
    imgs = torch.as_tensor(images).float()
    if imgs.shape[1] == 1:
        imgs = imgs.expand(-1, 3, -1, -1)
    inner = max(2, thumb_px - 2)
    imgs = torch.nn.functional.interpolate(imgs, size=(inner, inner), mode="bilinear", antialias=True,
                                           align_corners=False)
    tiles = np.empty((len(imgs), thumb_px, thumb_px, 3), dtype=np.uint8)
    tiles[:] = (colors[:, None, None, :3] * 255).astype(np.uint8)  # 1-px frame in the class colour
    tiles[:, 1 : 1 + inner, 1 : 1 + inner] = imgs.clamp(0, 255).round().byte().permute(0, 2, 3, 1).numpy()
    canvas = np.full((canvas_px, canvas_px, 3), 255, dtype=np.uint8)
    lo, hi = xy.min(axis=0), xy.max(axis=0)
    span = np.maximum(hi - lo, 1e-9)
    free = canvas_px - thumb_px
    cols = np.round((xy[:, 0] - lo[0]) / span[0] * free).astype(int)
    rows = np.round((hi[1] - xy[:, 1]) / span[1] * free).astype(int)  # image rows grow downwards
    for i in range(len(tiles)):
        canvas[rows[i] : rows[i] + thumb_px, cols[i] : cols[i] + thumb_px] = tiles[i]
    return canvas


def plot_tsne(
    xy,
    labels,
    *,
    class_names=None,
    images=None,
    title: str | None = None,
    thumb_px: int | None = None,
) -> plt.Figure:
    """Figure of a 2-D map ``xy`` [N, 2]: dots coloured by ``labels`` [N] with a legend, or, with ``images``
    [N, C, H, W] uint8, each sample's thumbnail drawn at its own point (framed in its class colour)."""
    xy = _numpy(xy).astype(np.float32)
    y = _numpy(labels).reshape(-1)
    if xy.ndim != 2 or xy.shape[1] != 2 or len(xy) != len(y):
        raise ValueError(f"xy must be [N, 2] with one label per row, got {xy.shape} and {y.shape}")
    classes, ids = np.unique(y, return_inverse=True)
    names = [str(class_names[c]) if class_names is not None and 0 <= c < len(class_names) else str(c)
             for c in classes]
    palette = class_colors(len(classes))
    colors = palette[ids]
    show_legend = len(classes) <= LEGEND_MAX_CLASSES
    legend_cols = max(1, math.ceil(len(classes) / 25))
    width = 10 + (1.6 * legend_cols if show_legend else 0)
    fig, ax = plt.subplots(figsize=(width, 10), dpi=100, layout="constrained")
    if images is not None:
        imgs = _numpy(images)
        if imgs.ndim != 4 or len(imgs) != len(xy):
            raise ValueError(f"images must be [N, C, H, W] with N = {len(xy)}, got shape {imgs.shape}")
        px = thumb_px or int(np.clip(1200 / math.sqrt(len(xy)), 16, 48))
        canvas = _thumbnail_canvas(xy, imgs, colors, canvas_px=1400, thumb_px=px)
        ax.imshow(canvas, interpolation="antialiased")
        handles = [plt.Line2D([], [], ls="", marker="s", ms=8, mfc="none", mec=palette[i], mew=2)
                   for i in range(len(classes))]
    else:
        size = float(np.clip(12000 / len(xy), 3, 40))
        order = np.random.default_rng(0).permutation(len(xy))  # no class is painted last over all others
        ax.scatter(xy[order, 0], xy[order, 1], c=colors[order], s=size, linewidths=0, alpha=0.85)
        handles = [plt.Line2D([], [], ls="", marker="o", ms=7, color=palette[i]) for i in range(len(classes))]
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_visible(False)
    if show_legend:
        ax.legend(handles, names, loc="upper left", bbox_to_anchor=(1.01, 1.0), ncol=legend_cols,
                  fontsize=10 if len(classes) <= 25 else 7, frameon=False, handletextpad=0.3,
                  columnspacing=0.8, title=f"{len(classes)} classes", title_fontsize=11)
    full_title = title or "t-SNE of the embedding"
    if not show_legend:
        full_title += f" ({len(classes)} classes, legend omitted)"
    ax.set_title(full_title, fontsize=15, loc="left", pad=12)
    return fig


def tsne_map(
    embeddings,
    labels,
    out,
    *,
    class_names=None,
    images=None,
    title: str | None = None,
    seed: int = 0,
    max_points: int | None = 10_000,
    xy=None,
) -> Path:
    """Compute (or reuse ``xy``) the t-SNE map and save it as a PNG at ``out``; returns the path.

    ``labels`` may be fine or coarse ids (pass the matching ``class_names``): colouring CIFAR-100 by its 20
    superclasses is ``tsne_map(emb, coarse_labels, out, class_names=coarse_class_names)``. With more than
    ``max_points`` samples a fixed random subset (seed ``seed``) is drawn, keeping rows aligned.
    """
    emb = _numpy(embeddings)
    y = _numpy(labels).reshape(-1)
    if len(emb) != len(y):
        raise ValueError(f"embeddings ({len(emb)}) and labels ({len(y)}) must have the same length")
    keep = np.arange(len(y))
    if max_points is not None and len(y) > max_points:
        keep = np.sort(np.random.default_rng(seed).choice(len(y), max_points, replace=False))
    imgs = None if images is None else _numpy(images)[keep]
    points = embed_2d(emb[keep], seed=seed) if xy is None else _numpy(xy)[keep]
    fig = plot_tsne(points, y[keep], class_names=class_names, images=imgs, title=title)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100 if imgs is None else 150)  # thumbnails need the extra resolution
    plt.close(fig)
    return out

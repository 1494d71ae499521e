"""t-SNE maps: row alignment of points, colours and thumbnails; legends; both t-SNE backends."""

import numpy as np
import pytest
from matplotlib.collections import PathCollection
from PIL import Image

from clusterloss.viz.tsne import _thumbnail_canvas, class_colors, embed_2d, plot_tsne, tsne_map


def blobs(n_per=20, classes=3, seed=0):
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(classes), n_per)
    return (rng.normal(size=(len(y), 6)) + 8 * np.eye(6)[y]).astype(np.float32), y


@pytest.mark.parametrize("backend", ["opentsne", "sklearn"])
def test_embed_2d_shape_determinism_and_separation(backend):
    x, y = blobs()
    a = embed_2d(x, seed=1, backend=backend)
    assert a.shape == (60, 2) and a.dtype == np.float32
    np.testing.assert_allclose(a, embed_2d(x, seed=1, backend=backend), rtol=1e-4, atol=1e-4)
    centres = np.stack([a[y == c].mean(0) for c in range(3)])
    spread = max(np.linalg.norm(a[y == c] - centres[c], axis=1).mean() for c in range(3))
    gaps = min(np.linalg.norm(centres[i] - centres[j]) for i in range(3) for j in range(i + 1, 3))
    assert gaps > 2 * spread  # well-separated blobs stay separated


def test_scatter_keeps_each_point_with_its_own_colour_and_legend_names():
    rng = np.random.default_rng(0)
    xy = rng.normal(size=(50, 2)).astype(np.float32)
    y = rng.integers(0, 4, 50) * 10 + 3  # ids 3, 13, 23, 33
    names = {3: "three", 13: "thirteen", 23: "twenty-three", 33: "thirty-three"}
    class_names = [names.get(i, "?") for i in range(40)]
    fig = plot_tsne(xy, y, class_names=class_names, title="run · t-SNE")
    ax = fig.axes[0]
    scatter = next(c for c in ax.collections if isinstance(c, PathCollection))
    offsets, colours = scatter.get_offsets(), scatter.get_facecolors()
    palette = class_colors(4)
    for (px, py), colour in zip(offsets, colours, strict=True):
        i = int(np.flatnonzero((xy[:, 0] == px) & (xy[:, 1] == py))[0])
        np.testing.assert_allclose(colour[:3], palette[[3, 13, 23, 33].index(y[i])][:3])
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["three", "thirteen", "twenty-three",
                                                                   "thirty-three"]
    assert ax.get_title(loc="left") == "run · t-SNE"


def test_many_classes_drop_the_legend_and_say_so():
    xy = np.random.default_rng(0).normal(size=(300, 2))
    fig = plot_tsne(xy, np.arange(300) % 150)
    assert fig.axes[0].get_legend() is None and "150 classes" in fig.axes[0].get_title(loc="left")


def test_thumbnails_are_drawn_at_their_own_points():
    # Three solid-colour images at three corners: each canvas corner must show that image's colour.
    xy = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]], dtype=np.float32)
    images = np.zeros((3, 3, 8, 8), dtype=np.uint8)
    images[0, 0], images[1, 1], images[2, 2] = 255, 255, 255  # red, green, blue
    canvas = _thumbnail_canvas(xy, images, np.zeros((3, 4)), canvas_px=100, thumb_px=10)
    assert tuple(canvas[95, 5]) == (255, 0, 0)  # x=0, y=0: bottom left
    assert tuple(canvas[95, 95]) == (0, 255, 0)  # x=1, y=0: bottom right
    assert tuple(canvas[5, 5]) == (0, 0, 255)  # x=0, y=1: top left
    assert tuple(canvas[50, 50]) == (255, 255, 255)  # background
    gray = _thumbnail_canvas(xy, images[:, :1], np.zeros((3, 4)), canvas_px=100, thumb_px=10)
    assert tuple(gray[95, 5]) == (255, 255, 255) and tuple(gray[5, 5]) == (0, 0, 0)


@pytest.mark.slow
def test_tsne_map_writes_a_png_in_both_modes(tmp_path):
    x, y = blobs(n_per=15)
    imgs = np.random.default_rng(0).integers(0, 255, (45, 3, 16, 16)).astype(np.uint8)
    out = tsne_map(x, y, tmp_path / "sub" / "t.png", class_names=["a", "b", "c"], title="demo")
    assert Image.open(out).size == (1160, 1000)
    xy = np.random.default_rng(0).normal(size=(45, 2))
    out2 = tsne_map(x, y, tmp_path / "ti.png", images=imgs, max_points=30, xy=xy)
    assert len(np.unique(np.asarray(Image.open(out2).convert("RGB")).reshape(-1, 3), axis=0)) > 1000


def test_bad_input():
    with pytest.raises(ValueError, match="N >= 4"):
        embed_2d(np.zeros((3, 2)))
    with pytest.raises(ValueError, match="one label per row"):
        plot_tsne(np.zeros((5, 2)), np.zeros(4))
    with pytest.raises(ValueError, match="images"):
        plot_tsne(np.zeros((5, 2)), np.zeros(5), images=np.zeros((4, 1, 8, 8), np.uint8))
    with pytest.raises(ValueError, match="same length"):
        tsne_map(np.zeros((5, 2)), np.zeros(4), "x.png")

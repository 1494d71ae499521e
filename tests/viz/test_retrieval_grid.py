"""Retrieval grid: query choice, frames by label agreement, grayscale and RGB images."""

import numpy as np
import pytest
from PIL import Image

from clusterloss.viz.retrieval_grid import OTHER, SAME, pick_queries, plot_retrieval_grid, retrieval_grid


def test_pick_queries_prefers_distinct_classes_and_is_reproducible():
    y = np.repeat(np.arange(5), 10)
    q = pick_queries(y, 5, seed=3)
    assert sorted(y[q].tolist()) == [0, 1, 2, 3, 4] and np.array_equal(q, pick_queries(y, 5, seed=3))
    more = pick_queries(y, 8)
    assert len(set(more.tolist())) == 8 and set(y[more].tolist()) == {0, 1, 2, 3, 4}


@pytest.mark.parametrize("channels", [1, 3])
def test_frames_are_green_for_same_class_and_red_otherwise(channels):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 255, (6, channels, 8, 8)).astype(np.uint8)
    labels = np.array([0, 0, 1, 1, 0, 2])
    queries = np.array([0, 2])
    neighbors = np.array([[1, 2, 4], [3, 5, 0]])
    fig = plot_retrieval_grid(images, labels, queries, neighbors, class_names=["zero", "one", "two"],
                              title="run · Recall@1 0.5")
    axes = np.array(fig.axes).reshape(2, 4)
    expect = [[SAME, OTHER, SAME], [SAME, OTHER, OTHER]]
    for r in range(2):
        for c in range(3):
            edge = axes[r, c + 1].spines["left"].get_edgecolor()
            want_rgb = np.array(Image.new("RGB", (1, 1), expect[r][c]).getpixel((0, 0))) / 255
            assert np.allclose(edge[:3], want_rgb)
        shown = axes[r, 0].get_images()[0].get_array()
        want = images[queries[r], 0] if channels == 1 else images[queries[r]].transpose(1, 2, 0)
        assert np.array_equal(np.asarray(shown), want)  # the query's own picture
    assert axes[1, 0].get_xlabel() == "query: one" and axes[1, 2].get_xlabel() == "two"
    assert "run · Recall@1 0.5" in fig._suptitle.get_text()


def test_retrieval_grid_from_embeddings_shows_the_true_neighbours_in_a_png(tmp_path, monkeypatch):
    from clusterloss.viz import retrieval_grid as module

    rng = np.random.default_rng(1)
    y = np.repeat(np.arange(4), 6)
    x = (np.eye(4)[y] * 10 + rng.normal(size=(24, 4))).astype(np.float32)
    images = rng.integers(0, 255, (24, 3, 12, 12)).astype(np.uint8)
    drawn = {}

    def spy(images, labels, queries, neighbors, **kwargs):
        drawn.update(queries=np.asarray(queries), neighbors=np.asarray(neighbors))
        return plot_retrieval_grid(images, labels, queries, neighbors, **kwargs)

    monkeypatch.setattr(module, "plot_retrieval_grid", spy)
    out = retrieval_grid(x, y, images, tmp_path / "r.png", n_queries=3, k=4)
    assert np.array_equal(drawn["queries"], pick_queries(y, 3))
    d = ((x[:, None, :] - x[None, :, :]) ** 2).sum(-1)
    for q, row in zip(drawn["queries"], drawn["neighbors"], strict=True):
        order = [int(i) for i in np.argsort(d[q], kind="stable") if i != q]
        assert row.tolist() == order[:4]  # the 4 nearest others, nearest first
        assert set(y[row].tolist()) == {y[q]}  # well separated classes: all same-class (green) frames
    png = np.asarray(Image.open(out).convert("RGB"))
    assert png.shape[:2] == (round((1.45 * 3 + 0.9) * 100), round((1.25 * 5 + 0.6) * 100))  # 3 x (1 + 4)
    green = np.array(Image.new("RGB", (1, 1), SAME).getpixel((0, 0)))
    red = np.array(Image.new("RGB", (1, 1), OTHER).getpixel((0, 0)))
    assert (png == green).all(-1).sum() > 100 and (png == red).all(-1).sum() == 0


def test_bad_input():
    with pytest.raises(ValueError, match="images"):
        plot_retrieval_grid(np.zeros((3, 2, 8, 8), np.uint8), np.zeros(3), [0], [[1]])
    with pytest.raises(ValueError, match="neighbors"):
        plot_retrieval_grid(np.zeros((3, 1, 8, 8), np.uint8), np.zeros(3), [0, 1], [[1]])

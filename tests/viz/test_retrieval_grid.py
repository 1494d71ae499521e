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


def test_retrieval_grid_from_embeddings_writes_a_png(tmp_path):
    rng = np.random.default_rng(1)
    y = np.repeat(np.arange(4), 6)
    x = (np.eye(4)[y] * 10 + rng.normal(size=(24, 4))).astype(np.float32)
    images = rng.integers(0, 255, (24, 3, 12, 12)).astype(np.uint8)
    out = retrieval_grid(x, y, images, tmp_path / "r.png", n_queries=3, k=4)
    w, h = Image.open(out).size
    assert w > h > 300


def test_bad_input():
    with pytest.raises(ValueError, match="images"):
        plot_retrieval_grid(np.zeros((3, 2, 8, 8), np.uint8), np.zeros(3), [0], [[1]])
    with pytest.raises(ValueError, match="neighbors"):
        plot_retrieval_grid(np.zeros((3, 1, 8, 8), np.uint8), np.zeros(3), [0, 1], [[1]])

"""Training curves from metrics.jsonl."""

import json

import numpy as np
import pytest
from PIL import Image

from clusterloss.viz.curves import curves, plot_curves, read_metrics


def rows(epochs=3, steps=4):
    out, step = [], 0
    for e in range(epochs):
        for _ in range(steps):
            step += 1
            out.append({"epoch": e, "step": step, "split": "train", "loss": 1.0 / step, "lr": 0.1})
        out.append({"epoch": e + 1, "step": step, "split": "eval", "nmi": 0.5 + 0.1 * e, "recall@1": 0.6})
    return out


def test_read_metrics_skips_blank_and_truncated_lines(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows()) + "\n\n{\"epoch\": 3, \"st")
    assert read_metrics(path) == rows()


def test_train_rows_sit_at_fractional_epochs_and_eval_rows_at_epochs():
    fig = plot_curves(rows(), title="demo")
    loss_ax, lr_ax, nmi_ax, r1_ax = fig.axes
    x, y = loss_ax.lines[0].get_data()
    np.testing.assert_allclose(x, np.arange(1, 13) / 4)
    np.testing.assert_allclose(y, 1.0 / np.arange(1, 13))
    x, y = nmi_ax.lines[0].get_data()
    np.testing.assert_allclose(x, [1, 2, 3])
    np.testing.assert_allclose(y, [50, 60, 70])  # percent, as the terminal prints them
    assert "best 70.00 @ epoch 3" in [t.get_text() for t in nmi_ax.texts]
    assert nmi_ax.lines[0].get_linestyle() == "-"  # three evaluations: a curve


def test_fewer_than_three_evaluations_are_points_not_a_line():
    two = [r for r in rows() if not (r["split"] == "eval" and r["epoch"] == 2)]
    nmi_ax = plot_curves(two).axes[2]
    assert nmi_ax.lines[0].get_linestyle() == "None" and nmi_ax.lines[0].get_marker() == "o"
    np.testing.assert_allclose(nmi_ax.lines[0].get_data()[1], [50, 70])


def test_the_star_marks_the_checkpoint_the_report_shows():
    nmi_ax = plot_curves(rows(), shown=("last.pt", 2)).axes[2]  # not the best epoch (3)
    assert "last.pt 60.00 @ epoch 2" in [t.get_text() for t in nmi_ax.texts]
    star = [line for line in nmi_ax.lines if line.get_marker() == "*"]
    assert len(star) == 1 and list(star[0].get_data()[0]) == [2]
    # a checkpoint whose epoch had no evaluation: no star rather than a star on another epoch
    nmi_ax = plot_curves(rows(), shown=("last.pt", 7)).axes[2]
    assert not [line for line in nmi_ax.lines if line.get_marker() == "*"] and not nmi_ax.texts


def test_missing_series_are_reported_in_the_panel(tmp_path):
    train_only = [r for r in rows() if r["split"] == "train"]
    fig = plot_curves(train_only)
    assert "no 'nmi' in eval rows" in [t.get_text() for t in fig.axes[2].texts]
    (tmp_path / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in train_only))
    out = curves(tmp_path / "metrics.jsonl", tmp_path / "c.png")
    assert Image.open(out).size == (1200, 750)
    with pytest.raises(ValueError, match="metrics.jsonl"):
        curves(tmp_path / "nope.jsonl", tmp_path / "c.png")

import pytest
import torch

from clusterloss.data.omniglot import load_oneshot_runs
from clusterloss.viz.episodes import episodes_figure, pick_rows


def test_pick_rows_shows_an_error_when_there_is_one():
    answers = torch.arange(4).repeat(3, 1)
    predictions = answers.clone()
    assert pick_rows(predictions, answers, rows=3) == [(0, 0), (1, 0), (2, 0)]
    predictions[2, 3] = 0  # the only mistake
    assert pick_rows(predictions, answers, rows=3)[-1] == (2, 3)


def test_episodes_figure_writes_a_png(tmp_path):
    runs = load_oneshot_runs()
    predictions = runs.answers.clone()
    predictions[0, 0] = (predictions[0, 0] + 1) % 20
    out = episodes_figure(runs.train, runs.test, runs.answers, predictions, tmp_path / "e.png", rows=3,
                          title="test")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError, match="runs, ways"):
        episodes_figure(runs.train, runs.test, runs.answers[:, :5], predictions[:, :5], tmp_path / "x.png")

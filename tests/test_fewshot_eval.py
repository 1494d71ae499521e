import json

import numpy as np
import pytest
import torch

from clusterloss.cli import main
from clusterloss.config import load_config
from clusterloss.config_files import find_config
from clusterloss.data.augment import normalize
from clusterloss.data.omniglot import load_oneshot_runs
from clusterloss.metrics.fewshot_eval import fewshot_metrics, oneshot_enabled

TINY = ["train.epochs=1", "train.steps_per_epoch=2", "train.progress=false", "eval.kmeans_seeds=[0]",
        "eval.episodes=20", "train.batch_classes=8"]


def test_raw_pixels_on_the_official_runs_match_a_numpy_nearest_neighbour():
    config = load_config(find_config("omniglot_conv4"), ["data.root="])
    assert oneshot_enabled(config)
    mean, std = torch.tensor([0.08]), torch.tensor([0.2])

    def pixels(images):
        return normalize(images, mean, std).flatten(1)

    metrics, details = fewshot_metrics(config, None, None, pixels)
    runs = load_oneshot_runs()
    train = runs.train.flatten(2).double().numpy()  # normalization is affine: the same nearest neighbours
    test = runs.test.flatten(2).double().numpy()
    right = 0
    for r in range(20):
        for j in range(20):
            d = ((train[r] - test[r, j]) ** 2).sum(axis=1)
            right += int(np.argmin(d)) == int(runs.answers[r, j])
    assert metrics["oneshot"] == pytest.approx(right / 400)
    assert 0.15 < metrics["oneshot"] < 0.3  # raw pixels: ~20 % (chance 5 %)
    assert len(details["oneshot_per_run"]) == 20 and np.mean(details["oneshot_per_run"]) == pytest.approx(
        metrics["oneshot"])


def test_oneshot_is_off_for_other_datasets_unless_asked():
    assert not oneshot_enabled(load_config(None, ["data.name=digits"]))
    assert oneshot_enabled(load_config(None, ["data.name=digits", "eval.oneshot=true"]))
    assert not oneshot_enabled(load_config(find_config("omniglot_conv4"), ["eval.oneshot=false"]))


def test_config_accepts_fewshot_best_metrics_and_rejects_others():
    assert load_config(None, ["eval.best_metric=oneshot"]).eval.best_metric == "oneshot"
    assert load_config(None, ["eval.best_metric=20way1shot_ncm"]).eval.best_metric == "20way1shot_ncm"
    with pytest.raises(ValueError, match="eval.best_metric"):
        load_config(None, ["eval.best_metric=7way1shot"])
    with pytest.raises(ValueError, match="eval.episodes"):
        load_config(None, ["eval.episodes=-1"])


@pytest.mark.slow
def test_training_evaluates_fewshot_and_keeps_best_by_oneshot(tmp_path, capsys):
    run = tmp_path / "run"
    args = ["train", "--config", "omniglot_conv4", "--run-dir", str(run), "--set", "eval.best_metric=oneshot",
            "--set", "data.root="]
    for override in TINY:
        args += ["--set", override]
    assert main(args) == 0
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    evaluation = [r for r in records if r["split"] == "eval"][-1]
    for key in ("oneshot", "5way1shot", "5way1shot_ci95", "20way1shot", "20way1shot_ncm", "nmi"):
        assert 0 <= evaluation[key] <= 1, key
    assert (run / "best.pt").exists()
    capsys.readouterr()
    assert main(["evaluate", "--checkpoint", str(run / "best.pt"), "--out", str(tmp_path / "m.json")]) == 0
    written = json.loads((tmp_path / "m.json").read_text())
    assert written["oneshot"] == pytest.approx(evaluation["oneshot"], abs=0.02)  # bf16 training-time eval
    printed = dict(line.split("  ", 1) for line in capsys.readouterr().out.splitlines() if "  " in line)
    assert printed["oneshot (%)"].strip() == f"{100 * written['oneshot']:.2f}"  # percent, like NMI
    assert printed["5way1shot (%)"].strip() == (f"{100 * written['5way1shot']:.2f} ± "
                                                f"{100 * written['5way1shot_ci95']:.2f} (95 % CI)")


@pytest.mark.slow
def test_quickstart_on_omniglot_prints_the_fewshot_table(tmp_path, capsys):
    run = tmp_path / "qs"
    args = ["quickstart", "--run-dir", str(run)]
    for override in TINY:
        args += ["--set", override]
    assert main(args) == 0
    printed = capsys.readouterr().out
    for text in ("1-shot runs", "5-way 1-shot", "20-way 1-shot", "raw pixels", "untrained network",
                 "trained (facility location)", "Latin"):
        assert text in printed, text
    references = json.loads((run / "references.json").read_text())
    assert {"oneshot", "5way1shot", "20way1shot", "nmi"} <= set(references["raw pixels"])
    assert (run / "episodes.png").exists()
    report = (run / "report.html").read_text()
    assert "One-shot episodes" in report and "One-shot (20 official runs)" in report
    metrics = json.loads((run / "metrics.json").read_text())
    assert len(metrics["oneshot_per_run"]) == 20

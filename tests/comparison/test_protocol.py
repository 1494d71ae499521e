"""The fair protocol end to end on tiny digits runs: phases in order, no evaluation class before the final
runs, selection by the stated metric, statistics that match the runs, nothing redone."""

import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import yaml

from clusterloss.comparison import protocol as protocol_module
from clusterloss.comparison.protocol import run_protocol
from clusterloss.comparison.runs import check_no_leak, run_images
from clusterloss.comparison.stats import paired
from clusterloss.config import load_config
from clusterloss.config_files import find_config
from clusterloss.data.protocols import splits_from_config

TINY = ["train.epochs=1", "train.steps_per_epoch=2", "train.progress=false", "eval.kmeans_seeds=[0]",
        "eval.every_epochs=0", "train.num_threads=1"]


def _protocol(tmp_path, trainer="images", **extra):
    body = {"name": "tiny", "config": "digits_convnet", "trainer": trainer, "set": TINY,
            "reference": "facility_location", "metrics": ["nmi", "recall@1", "map@r"],
            "tune": {"trials": 2, "seeds": [0], "metric": "map@r", "set": ["train.batch_classes=3"]},
            "final": {"seeds": 2},
            "losses": {"facility_location": {"space": {"loss.margin_multiplier": [1.0, 3.0]}},
                       "triplet_semihard": {"space": {"loss.options.margin": [0.2, 0.05, 0.1]}}},
            "sweeps": {"gamma": {"losses": ["facility_location"], "seeds": [0],
                                 "values": {"loss.margin_multiplier": [0.3, 30.0]}}}, **extra}
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(body))
    return path


def _reuse_only(config, run_dir):
    done = run_dir / "final_metrics.json"
    if not done.exists():
        raise AssertionError(f"{run_dir} would be trained again")
    return json.loads(done.read_text())


def _names(dataset):
    return {dataset.class_names[int(c)] for c in torch.unique(dataset.labels)}


@pytest.mark.slow
def test_protocol_tunes_on_validation_only_then_runs_final_seeds(tmp_path):
    calls = []

    def recording_runner(config, run_dir):
        calls.append((config, run_dir))
        return run_images(config, run_dir)

    path = _protocol(tmp_path)
    result = run_protocol(path, tmp_path / "runs", tmp_path / "results", runner=recording_runner)
    validation = [c.data.validation for c, _ in calls]
    # 2 entries x 2 trials x 1 seed of tuning, then 2 x 2 final seeds, then the 2-point sweep (validation).
    assert validation == [True] * 4 + [False] * 4 + [True] * 2
    final_eval = _names(splits_from_config(calls[4][0].data).eval)
    for config, _ in calls:
        if config.data.validation:  # an independent look at every tuning run's data
            tuning = splits_from_config(config.data)
            assert not (_names(tuning.train) | _names(tuning.eval)) & final_eval
            assert tuning.eval.split != "test"
    # Selection = argmax of the stated validation metric over the trials.
    for name, sel in result["selection"].items():
        means = [np.mean([r["map@r"] for r in t["runs"]]) for t in sel["trials"]]
        assert sel["trial"] == int(np.argmax(means)) and sel["point"] == sel["trials"][sel["trial"]]["point"]
        finals = [c for c, d in calls[4:8] if name in str(d)]
        for config in finals:
            expected = load_config(None, [f"{k}={json.dumps(v)}" for k, v in sel["point"].items()])
            if "loss.margin_multiplier" in sel["point"]:
                assert config.loss.margin_multiplier == expected.loss.margin_multiplier
            else:
                assert config.loss.options == expected.loss.options
    # Statistics agree with the per-seed runs.
    for name, runs in result["final_runs"].items():
        values = [r["nmi"] for r in runs]
        assert result["summary"][name]["nmi"]["mean"] == pytest.approx(np.mean(values))
        assert result["summary"][name]["nmi"]["std"] == pytest.approx(np.std(values, ddof=1))
    ref = result["final_runs"]["facility_location"]
    other = result["final_runs"]["triplet_semihard"]
    assert result["paired_vs_reference"]["triplet_semihard"]["map@r"] == paired(
        [r["map@r"] for r in other], [r["map@r"] for r in ref])
    assert set(result["verdicts"]["triplet_semihard"]) == {"nmi", "recall@1", "map@r"}
    for name in ("compare.json", "compare.md", "compare.png", "selection.json"):
        assert (tmp_path / "results" / name).exists(), name
    md = (tmp_path / "results" / "compare.md").read_text()
    assert "Paired against facility_location" in md and "Sweep `gamma`" in md
    assert "ΔMAP@R vs facility_location" in md.split("## Tuning")[0], "the summary table comes first"
    assert len(result["sweeps"]["gamma"]) == 2

    again = run_protocol(path, tmp_path / "runs", tmp_path / "results", runner=_reuse_only)
    assert again["summary"] == result["summary"] and again["selection"] == result["selection"]


@pytest.mark.slow
def test_final_runs_wait_for_every_entry_and_phases_limit_the_work(tmp_path):
    path = _protocol(tmp_path)
    seen = []
    result = run_protocol(path, tmp_path / "runs", tmp_path / "results", phases=("tune",),
                          runner=lambda c, d: seen.append(c.data.validation) or run_images(c, d))
    assert seen == [True] * 4 and result["final_runs"] == {} and len(result["selection"]) == 2
    partial = run_protocol(path, tmp_path / "runs", tmp_path / "results", phases=("tune",),
                           only=["facility_location"], runner=_reuse_only)
    assert list(partial["selection"]) == ["facility_location"]


def test_leak_check_refuses_a_closed_protocol_and_test_split_tuning():
    closed = load_config(None, ["data.name=digits", "data.protocol=closed"])
    tuning = load_config(None, ["data.name=digits", "data.protocol=closed", "data.validation=true"])
    with pytest.raises(ValueError, match="class-disjoint"):
        check_no_leak(splits_from_config(tuning.data), splits_from_config(closed.data))
    zero = splits_from_config(load_config(None, ["data.name=digits"]).data)
    tuning = SimpleNamespace(train=zero.train.of_classes([0, 1]), eval=zero.eval.of_classes([5]))
    final = SimpleNamespace(train=zero.train, eval=zero.eval.of_classes([9]))
    with pytest.raises(ValueError, match="validation=true"):  # class-disjoint, but tuned on the test split
        check_no_leak(tuning, final)
    held_out = zero.train.of_classes([2], split="train-validation")
    check_no_leak(SimpleNamespace(train=tuning.train, eval=held_out), final)


def test_unknown_phase_and_entry(tmp_path):
    path = _protocol(tmp_path)
    with pytest.raises(ValueError, match="unknown phase"):
        run_protocol(path, tmp_path / "r", tmp_path / "s", phases=("train",), runner=lambda c, d: {})
    with pytest.raises(ValueError, match="unknown entry"):
        run_protocol(path, tmp_path / "r", tmp_path / "s", only=["npairs"], runner=lambda c, d: {})
    assert protocol_module.PHASES == ("tune", "final", "sweeps")


@pytest.mark.slow
def test_frozen_feature_protocol_builds_its_cache_once(tmp_path, monkeypatch):
    path = _protocol(tmp_path, trainer="features", features={"views": 3})
    result = run_protocol(path, tmp_path / "runs", tmp_path / "results")
    caches = list((tmp_path / "runs" / "features").glob("*/features.pt"))
    assert len(caches) == 1
    cache = torch.load(caches[0], weights_only=True)
    final = splits_from_config(load_config(None, ["data.name=digits"]).data)
    assert cache["train"].shape[:2] == (len(final.train), 3) and cache["eval"].shape[0] == len(final.eval)
    assert torch.equal(cache["eval_labels"], final.eval.labels)
    # The evaluation view of a digit is the image itself: view 0 differs from the augmented views.
    assert not torch.equal(cache["train"][:, 0], cache["train"][:, 1])
    assert set(result["summary"]) == {"facility_location", "triplet_semihard"}
    # The validation runs saw the training features of the validation classes only (digits 3-4).
    tune_dir = tmp_path / "runs" / "tune" / "facility_location" / "trial0" / "seed0"
    assert json.loads((tune_dir / "final_metrics.json").read_text())["num_classes"] == 2

    def no_rebuild(*args, **kwargs):
        raise AssertionError("the feature cache was computed again")

    monkeypatch.setattr("clusterloss.comparison.features.view_features", no_rebuild)
    again = run_protocol(path, tmp_path / "runs", tmp_path / "results")
    assert again["summary"] == result["summary"]


def test_image_protocol_writes_its_reference_rows_once_per_settings(tmp_path, monkeypatch):
    from clusterloss.data.augment import normalize
    from clusterloss.metrics.evaluate import evaluate_embeddings

    body = {"tune": {"trials": 1, "seeds": [0], "metric": "map@r", "set": ["train.batch_classes=3"]},
            "final": {"seeds": 1}, "sweeps": {},
            "losses": {"facility_location": {"space": {"loss.margin_multiplier": [1.0]}}}}
    path = _protocol(tmp_path, **body)
    run_protocol(path, tmp_path / "runs", tmp_path / "results")  # runner=None: real runs + references
    written = json.loads((tmp_path / "results" / "reference.json").read_text())
    assert set(written["final"]) == set(written["validation"]) == {"raw pixels", "untrained network"}
    for validation, rows in ((False, written["final"]), (True, written["validation"])):
        flag = f"data.validation={str(validation).lower()}"
        config = load_config(find_config("digits_convnet"), TINY + [flag])
        splits = splits_from_config(config.data)
        pixels = normalize(splits.eval.images, splits.mean, splits.std).flatten(1)  # independent of the rows
        expected = evaluate_embeddings(pixels, splits.eval.labels, kmeans_seeds=[0])
        assert rows["raw pixels"]["recall@1"] == pytest.approx(expected["recall@1"])
        assert rows["raw pixels"]["map@r"] == pytest.approx(expected["map@r"])
    assert written["final"]["raw pixels"]["map@r"] != written["validation"]["raw pixels"]["map@r"]

    calls = []
    monkeypatch.setattr(protocol_module, "reference_metrics", lambda c: calls.append(c) or {})
    run_protocol(path, tmp_path / "runs", tmp_path / "results")  # same settings: not recomputed
    assert calls == []
    body["set"] = TINY + ["eval.ks=[1,2]"]  # other evaluation settings: the runs and the rows are redone
    run_protocol(_protocol(tmp_path, **body), tmp_path / "runs2", tmp_path / "results")
    assert len(calls) == 2

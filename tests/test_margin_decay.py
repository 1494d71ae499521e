"""The facility-location margin multiplier's exponential decay (loss.margin_decay_*): the rule against
hand-worked values, the gamma a tiny training run logs and uses, exact resume, and bad values."""

import json
import math
import signal

import pytest

from clusterloss.cli import main
from clusterloss.config import load_config
from clusterloss.schedule import margin_multiplier_at
from clusterloss.train import Trainer, TrainingInterrupted, train

# Tiny digits run with the facility-location loss: 3 steps an epoch, 2 epochs, gamma 2 halved every epoch.
TINY = ["data.name=digits", "data.protocol=zero_shot", "data.padding=1", "model.name=convnet",
        "model.embedding_dim=8", "model.options={width: 4}", "train.batch_classes=4",
        "train.batch_samples=3", "train.steps_per_epoch=3", "train.epochs=2", "train.lr=0.05",
        "train.device=cpu", "train.progress=false", "train.num_threads=1", "train.log_every_steps=1",
        "eval.kmeans_seeds=[0]", "eval.ks=[1]", "eval.every_epochs=1", "loss.name=facility_location",
        "loss.pam_iterations=1", "loss.margin_multiplier=2.0", "loss.margin_decay_rate=0.5",
        "loss.margin_decay_epochs=1"]


def test_rule_against_hand_worked_values():
    # 10 * 0.5 ** (t / 2): 10, 10 / sqrt(2), 5, 5 / sqrt(2), 2.5
    smooth = [margin_multiplier_at(t, 10.0, 0.5, 2.0) for t in range(5)]
    expected = [10.0, 7.0710678118654755, 5.0, 3.5355339059327378, 2.5]
    assert all(math.isclose(a, b, rel_tol=1e-12) for a, b in zip(smooth, expected, strict=True))
    assert [margin_multiplier_at(t, 10.0, 0.5, 2.0, staircase=True) for t in range(5)] == [
        10.0, 10.0, 5.0, 5.0, 2.5]
    # the paper's rate: 0.94 per period of 100 steps; halfway through a period sqrt(0.94) = 0.96953597...
    assert math.isclose(margin_multiplier_at(50, 1.0, 0.94, 100.0), 0.9695359714832659, rel_tol=1e-12)
    assert math.isclose(margin_multiplier_at(250, 1.0, 0.94, 100.0, staircase=True), 0.94 * 0.94)
    # fractional period (1.5 steps): t = 3 is two whole periods
    assert math.isclose(margin_multiplier_at(3, 4.0, 0.5, 1.5), 1.0)
    assert [margin_multiplier_at(t, 3.0) for t in (0, 7, 10_000)] == [3.0, 3.0, 3.0]  # rate 1: constant


@pytest.mark.parametrize("args, needle", [((0, 1.0, 0.0, 1.0), "rate"), ((0, 1.0, 1.5, 1.0), "rate"),
                                          ((0, 1.0, 0.9, 0.0), "period"),
                                          ((0, 1.0, 0.9, math.inf), "period")])
def test_rule_rejects_bad_arguments(args, needle):
    with pytest.raises(ValueError, match=needle):
        margin_multiplier_at(*args)


def _train_records(run_dir):
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [r for r in records if r["split"] == "train"]


@pytest.fixture(scope="module")
def straight_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("decay")
    train(load_config(None, TINY), run_dir)
    return run_dir


def test_logged_gamma_follows_the_rule(straight_run):
    logged = {r["step"]: r["margin_multiplier"] for r in _train_records(straight_run)}
    assert sorted(logged) == [1, 2, 3, 4, 5, 6]
    # the record of step s holds the gamma its last iteration (0-based index s - 1) used
    for s, gamma in logged.items():
        assert math.isclose(gamma, 2.0 * 0.5 ** ((s - 1) / 3), rel_tol=1e-12), (s, gamma)


def test_each_step_uses_its_gamma(tmp_path, monkeypatch):
    trainer = Trainer(load_config(None, TINY + ["train.epochs=1"]), tmp_path)
    seen, original = [], trainer.loss_fn.forward

    def spy(embeddings, labels):
        seen.append(trainer.loss_fn.loss.margin_multiplier)
        return original(embeddings, labels)

    monkeypatch.setattr(trainer.loss_fn, "forward", spy)
    trainer.fit()
    assert seen == [margin_multiplier_at(t, 2.0, 0.5, 3.0) for t in range(3)]


def test_resume_continues_the_same_gamma(straight_run, tmp_path, monkeypatch):
    trainer = Trainer(load_config(None, TINY), tmp_path)
    original = trainer._run_epoch

    def run_epoch_then_request_stop():
        original()
        trainer._stop_signal = signal.SIGTERM

    monkeypatch.setattr(trainer, "_run_epoch", run_epoch_then_request_stop)
    with pytest.raises(TrainingInterrupted):
        trainer.fit()
    resumed = Trainer(load_config(None, TINY), tmp_path, resume=True)
    assert resumed.step == 3
    resumed.fit()
    gammas = {r["step"]: r["margin_multiplier"] for r in _train_records(tmp_path)}
    assert gammas == {r["step"]: r["margin_multiplier"] for r in _train_records(straight_run)}
    assert resumed.loss_fn.loss.margin_multiplier == margin_multiplier_at(5, 2.0, 0.5, 3.0)


def test_constant_gamma_by_default(tmp_path):
    config = load_config(None, [o for o in TINY if "margin_decay" not in o] + ["train.epochs=1"])
    assert (config.loss.margin_decay_rate, config.loss.margin_decay_staircase) == (1.0, False)
    train(config, tmp_path)
    assert [r["margin_multiplier"] for r in _train_records(tmp_path)] == [2.0, 2.0, 2.0]


@pytest.mark.parametrize("override, needle", [
    ("loss.margin_decay_rate=1.5", "loss.margin_decay_rate must be in (0, 1]"),
    ("loss.margin_decay_rate=0", "loss.margin_decay_rate must be in (0, 1]"),
    ("loss.margin_decay_epochs=0", "loss.margin_decay_epochs (the decay period) must be > 0"),
    ("loss.margin_decay_epoch=2", "did you mean 'loss.margin_decay_epochs'"),
])
def test_bad_value_is_one_error_line(tmp_path, capsys, override, needle):
    code = main(["train", "--config", "digits_convnet", "--set", override,
                 "--run-dir", str(tmp_path / "r")])
    assert code == 1
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and err[0].startswith("error: ") and needle in err[0], err
    assert not (tmp_path / "r").exists()


def test_decay_with_another_loss_is_an_error():
    with pytest.raises(ValueError, match="facility_location's margin multiplier; loss 'proxy_anchor'"):
        load_config(None, ["loss.name=proxy_anchor", "loss.margin_decay_rate=0.94"])

"""Trainer on tiny digits runs: exact resume, step checkpoints after a crash, SIGTERM, NaN, init-from."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from clusterloss.checkpoint import load_checkpoint
from clusterloss.config import load_config
from clusterloss.train import NonFiniteError, Trainer, TrainingInterrupted, train

TINY = ["data.name=digits", "data.protocol=zero_shot", "data.padding=1", "model.name=convnet",
        "model.embedding_dim=8", "model.options={width: 4, dropout: 0.1}", "train.batch_classes=5",
        "train.batch_samples=4", "train.steps_per_epoch=3", "train.epochs=2", "train.lr=0.05",
        "train.schedule=cosine", "train.warmup_epochs=0.5", "train.device=cpu", "train.progress=false",
        "train.log_every_steps=1", "eval.kmeans_seeds=[0]", "eval.ks=[1]", "eval.every_epochs=1",
        "loss.name=proxy_anchor", "loss.param_lr_multiplier=10"]


def tiny_config(*overrides: str):
    return load_config(None, TINY + list(overrides))


def final_weights(run_dir: Path) -> dict[str, torch.Tensor]:
    ckpt = load_checkpoint(run_dir / "last.pt")
    return {**{f"model.{k}": v for k, v in ckpt["model"].items()},
            **{f"loss.{k}": v for k, v in ckpt["loss"].items()}}


def assert_same_weights(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    different = [k for k in a if not torch.equal(a[k], b[k])]
    assert not different, f"differ after resume: {different[:5]}"


@pytest.fixture(scope="module")
def straight_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("straight")
    metrics = train(tiny_config("train.checkpoint_every_steps=2"), run_dir)
    return run_dir, metrics


def test_run_directory_layout_and_metrics(straight_run):
    run_dir, metrics = straight_run
    assert {"config.yaml", "metrics.jsonl", "last.pt", "best.pt", "tb"} <= {p.name for p in run_dir.iterdir()}
    assert any(p.name.startswith("events.out.tfevents") for p in (run_dir / "tb").iterdir())
    assert load_config(run_dir / "config.yaml") == tiny_config("train.checkpoint_every_steps=2")
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if r["split"] == "train"] == [1, 2, 3, 4, 5, 6]
    evals = [r for r in records if r["split"] == "eval"]
    assert [r["epoch"] for r in evals] == [1, 2]
    assert 0 <= metrics["nmi"] <= 1 and 0 <= metrics["recall@1"] <= 1 and metrics["step"] == 6
    ckpt = load_checkpoint(run_dir / "last.pt")
    required = {"model", "optimizer", "scheduler", "sampler", "rng", "loss", "config", "epoch", "step"}
    assert required <= set(ckpt)
    assert (ckpt["epoch"], ckpt["step"]) == (2, 6)
    assert ckpt["best"]["metric"] == "nmi"


def test_stop_after_one_epoch_then_resume_is_exact(straight_run, tmp_path, monkeypatch):
    trainer = Trainer(tiny_config("train.checkpoint_every_steps=2"), tmp_path)
    original = trainer._run_epoch

    def run_epoch_then_request_stop():
        original()
        trainer._stop_signal = signal.SIGTERM  # as the signal handler would

    monkeypatch.setattr(trainer, "_run_epoch", run_epoch_then_request_stop)
    with pytest.raises(TrainingInterrupted, match="resume"):
        trainer.fit()
    assert load_checkpoint(tmp_path / "last.pt")["epoch"] == 1
    train(None, tmp_path, resume=True)
    assert_same_weights(final_weights(straight_run[0]), final_weights(tmp_path))
    steps = [json.loads(line)["step"] for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert steps == sorted(steps) and steps.count(6) == 2  # one train + one eval record, no duplicates


def test_crash_mid_epoch_resumes_from_the_step_checkpoint_exactly(straight_run, tmp_path, monkeypatch):
    trainer = Trainer(tiny_config("train.checkpoint_every_steps=2"), tmp_path)
    original, calls = trainer.train_step, []

    def crash_on_fifth_step(images, labels):
        calls.append(1)
        if len(calls) == 5:
            raise KeyboardInterrupt  # an abrupt kill: nothing is saved
        return original(images, labels)

    monkeypatch.setattr(trainer, "train_step", crash_on_fifth_step)
    with pytest.raises(KeyboardInterrupt):
        trainer.fit()
    ckpt = load_checkpoint(tmp_path / "last.pt")
    assert (ckpt["step"], ckpt["epoch"], ckpt["sampler"]["position"]) == (4, 1, 1)  # mid-epoch
    train(None, tmp_path, resume=True)
    assert_same_weights(final_weights(straight_run[0]), final_weights(tmp_path))


@pytest.mark.parametrize("what", ["loss", "gradient"])
def test_non_finite_loss_or_gradient_stops_and_keeps_the_last_checkpoint(tmp_path, what):
    trainer = Trainer(tiny_config("train.checkpoint_every_steps=2"), tmp_path)
    real_loss, calls = trainer.loss_fn, []

    class Poisoned(torch.nn.Module):
        def forward(self, embeddings, labels):
            calls.append(1)
            value = real_loss(embeddings, labels)
            if len(calls) < 3:
                return value
            if what == "loss":
                return value * float("nan")
            return value + torch.sqrt(embeddings.sum() * 0)  # finite value, NaN gradient (0 * inf)

    trainer.loss_fn = Poisoned()
    expected = "loss is nan" if what == "loss" else "gradient is NaN/Inf"
    with pytest.raises(NonFiniteError, match=f"{expected} at step 3 .*last good checkpoint .* untouched"):
        trainer.fit()
    assert load_checkpoint(tmp_path / "last.pt")["step"] == 2  # the step-2 checkpoint, intact
    assert sorted(p.name for p in tmp_path.glob("*.pt*")) == ["last.pt"]


def test_init_from_loads_backbone_only(straight_run, tmp_path):
    source = load_checkpoint(straight_run[0] / "last.pt")["model"]
    trainer = Trainer(tiny_config(f"train.init_from={straight_run[0] / 'last.pt'}"), tmp_path)
    state = trainer.model.state_dict()
    assert all(torch.equal(state[k], v) for k, v in source.items() if k.startswith("backbone."))
    assert not torch.equal(state["head.linear.weight"], source["head.linear.weight"])


def test_new_run_refuses_an_existing_run_dir(straight_run):
    with pytest.raises(ValueError, match="--resume"):
        train(tiny_config(), straight_run[0])
    with pytest.raises(ValueError, match="cannot resume"):
        train(None, straight_run[0] / "nowhere", resume=True)


def _cli(*args: str, **kwargs) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "-m", "clusterloss", "train", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, **kwargs)


@pytest.mark.slow
def test_sigterm_saves_and_exits_cleanly_then_cli_resume_finishes(tmp_path):
    config = tmp_path / "tiny.yaml"
    extra = ["train.epochs=30", "train.steps_per_epoch=1", "eval.every_epochs=0", "train.log_every_steps=0"]
    sets = [f"--set={s}" for s in TINY + extra]
    config.write_text("{}\n")
    run_dir = tmp_path / "run"
    proc = _cli("--config", str(config), "--run-dir", str(run_dir), *sets)
    deadline = time.monotonic() + 60
    while not (run_dir / "last.pt").exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGTERM, stderr
    assert "SIGTERM received" in stderr and "--resume" in stderr and "Traceback" not in stderr
    stopped_at = load_checkpoint(run_dir / "last.pt")["step"]
    assert 0 < stopped_at < 30
    proc = _cli("--resume", str(run_dir))
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 0, stderr
    assert "finished" in stdout and load_checkpoint(run_dir / "last.pt")["step"] == 30


def test_truncate_metrics_drops_later_steps_and_a_line_cut_short(tmp_path):
    from clusterloss.train import _truncate_metrics

    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 5, "split": "train"}\n{"step": 10, "split": "eval"}\n'
                    '{"step": 15, "split": "train"}\n{"step": 20, "spl')  # killed mid-write
    _truncate_metrics(path, 10)
    assert path.read_text() == '{"step": 5, "split": "train"}\n{"step": 10, "split": "eval"}\n'


def test_sync_bn_on_cpu_is_a_clear_error(tmp_path):
    from clusterloss.config import load_config
    from clusterloss.train import train

    config = load_config(None, ["data.name=digits", "model.name=convnet", "train.device=cpu",
                                "train.sync_bn=true", "train.batch_classes=5"])
    with pytest.raises(ValueError, match="sync_bn needs CUDA"):
        train(config, tmp_path / "run")

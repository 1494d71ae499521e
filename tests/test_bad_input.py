"""The hostile-user probe of issue 15 as regression tests: every mistake is one ``error:`` line naming the
file or key and the fix; nothing is lost; nothing wrong is printed as a result.

Concurrency (two real processes on one run directory) is in tests/test_run_lock.py; the wheel outside the
checkout in tests/test_wheel.py.
"""

import contextlib
import errno
import io
import json
import math
import os
import pickle
import subprocess
import sys
import uuid
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from clusterloss import checkpoint as checkpoint_module
from clusterloss.checkpoint import CheckpointWriteError, load_checkpoint, load_resumable, save_checkpoint
from clusterloss.cli import main
from clusterloss.config import load_config
from clusterloss.data.safe_pickle import safe_load
from clusterloss.metrics import evaluate_embeddings
from clusterloss.train import train
from clusterloss.validation import check_embeddings, check_labels

TINY = ["data.name=digits", "data.protocol=zero_shot", "data.padding=1", "model.name=convnet",
        "model.embedding_dim=8", "model.options={width: 4}", "train.batch_classes=5", "train.batch_samples=4",
        "train.steps_per_epoch=2", "train.epochs=2", "train.lr=0.05", "train.device=cpu",
        "train.progress=false", "train.num_threads=1", "eval.kmeans_seeds=[0]", "eval.ks=[1]"]


def one_error_line(capsys, *needles: str) -> str:
    """Exactly one non-empty stderr line, starting with 'error:' and naming each needle."""
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and err[0].startswith("error: "), err
    for needle in needles:
        assert needle in err[0], (needle, err[0])
    assert "weights_only" not in err[0] and "Traceback" not in err[0]
    return err[0]


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    """A finished 2-epoch tiny digits run (last.pt, last.prev.pt, best.pt, config.yaml, metrics.jsonl)."""
    run = tmp_path_factory.mktemp("runs") / "run"
    train(load_config(None, TINY), run)
    return run


def copy_run(run: Path, dest: Path) -> Path:
    import shutil

    shutil.copytree(run, dest)
    return dest


# ---------------------------------------------------------------------------------- labels, embeddings
def npy_pair(tmp_path, x, y):
    np.save(tmp_path / "e.npy", np.asarray(x))
    np.save(tmp_path / "l.npy", np.asarray(y))
    return ["evaluate", "--embeddings", str(tmp_path / "e.npy"), "--labels", str(tmp_path / "l.npy"),
            "--out", str(tmp_path / "m.json"), "--seeds", "0"]


def test_fractional_float_labels_are_refused_not_merged_into_one_class(tmp_path, capsys):
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(10) / 10, 5)  # 0.0, 0.1, ..., 0.9: ten classes that a cast would merge
    assert main(npy_pair(tmp_path, rng.normal(size=(50, 4)).astype(np.float32), y)) == 1
    one_error_line(capsys, "l.npy", "integer class ids", "0.1")
    assert not (tmp_path / "m.json").exists()


def test_integral_float_labels_are_accepted_with_a_warning(tmp_path, capsys):
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(5), 6).astype(np.float64)
    x = rng.normal(size=(30, 4)).astype(np.float32)
    with pytest.warns(UserWarning, match="integral values"):
        assert main(npy_pair(tmp_path, x, y)) == 0
    want = evaluate_embeddings(x, y.astype(np.int64), kmeans_seeds=(0,))
    assert json.loads((tmp_path / "m.json").read_text()) == pytest.approx(want)


def test_one_class_is_an_error_not_perfect_scores(tmp_path, capsys):
    x = np.random.default_rng(0).normal(size=(20, 4)).astype(np.float32)
    assert main(npy_pair(tmp_path, x, np.zeros(20, np.int64))) == 1
    one_error_line(capsys, "1 distinct class", "at least 2")


def test_all_singletons_write_null_with_a_reason_never_nan(tmp_path, capsys):
    x = np.random.default_rng(0).normal(size=(12, 4)).astype(np.float32)
    assert main(npy_pair(tmp_path, x, np.arange(12))) == 0
    text = (tmp_path / "m.json").read_text()
    assert "NaN" not in text
    metrics = json.loads(text)  # strict JSON
    assert metrics["recall@1"] is None and metrics["map@r"] is None
    assert "one sample" in metrics["undefined"]["recall@1"]
    assert metrics["excluded_queries"] == 12
    assert "undefined (every class has one sample" in capsys.readouterr().out


def test_zero_dimensional_embeddings_are_an_error_not_sigfpe(tmp_path):
    # In a subprocess: before the fix this killed the interpreter with SIGFPE (exit 136).
    np.save(tmp_path / "e.npy", np.zeros((10, 0), np.float32))
    np.save(tmp_path / "l.npy", np.repeat(np.arange(2), 5))
    done = subprocess.run([sys.executable, "-m", "clusterloss", "evaluate", "--embeddings",
                           str(tmp_path / "e.npy"), "--labels", str(tmp_path / "l.npy")], capture_output=True,
                          text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 1
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "D = 0" in lines[0], done.stderr


@pytest.mark.parametrize("bad", ["nan", "inf", "huge"])
def test_non_finite_or_overflowing_embeddings_are_refused_everywhere(bad):
    x = torch.randn(8, 4)
    x = {"nan": x.index_fill(0, torch.tensor([2]), float("nan")), "inf": x.index_fill(0, torch.tensor([2]),
         float("inf")), "huge": x * 1e30}[bad]
    y = torch.arange(4).repeat_interleave(2)
    with pytest.raises(ValueError, match="NaN or Inf|too large"):
        evaluate_embeddings(x, y)
    with pytest.raises(ValueError, match="NaN or Inf|too large"):
        check_embeddings(x)
    from clusterloss.metrics import clustering_scores, retrieval_metrics

    for scorer in (retrieval_metrics, clustering_scores):
        with pytest.raises(ValueError, match="NaN or Inf|too large"):
            scorer(x, y)


def test_1e30_embeddings_do_not_give_loss_zero_and_a_nan_gradient():
    from clusterloss import facility_location_loss

    x = (torch.nn.functional.normalize(torch.randn(8, 4), dim=1) * 1e30).requires_grad_()
    y = torch.arange(4).repeat_interleave(2)
    with pytest.raises(ValueError, match="too large"):  # refused rather than loss 0 with a NaN gradient
        facility_location_loss(x, y)
    from clusterloss.losses import build_loss

    with pytest.raises(ValueError, match="too large"):
        build_loss("triplet_semihard", 4)(x, y)
    assert math.isfinite(float(facility_location_loss(x.detach() / 1e30, y)))  # the same batch, rescaled


def test_one_label_rule_for_every_entry_point():
    """The same labels are accepted or refused the same way by retrieval, clustering, evaluate, the partition
    scores and the loss (they all go through validation.check_labels)."""
    from clusterloss import facility_location_loss
    from clusterloss.metrics import clustering_scores, retrieval_metrics
    from clusterloss.metrics.partition_scores import normalized_mutual_info

    x = torch.nn.functional.normalize(torch.randn(8, 4), dim=1)
    good = torch.arange(4).repeat_interleave(2)
    entry_points = {
        "retrieval": lambda y: retrieval_metrics(x, y),
        "clustering": lambda y: clustering_scores(x, y, seeds=(0,)),
        "evaluate": lambda y: evaluate_embeddings(x, y, kmeans_seeds=(0,)),
        "partition_scores": lambda y: normalized_mutual_info(y, good),
        "loss": lambda y: facility_location_loss(x, y),
    }
    refused = {"fractional floats": good.double() / 10, "bool": good > 1, "2-D": good.view(2, 4),
               "NaN": good.double().index_fill(0, torch.tensor([0]), float("nan"))}
    for name, call in entry_points.items():
        call(good)
        for what, labels in refused.items():
            with pytest.raises(ValueError):
                call(labels)
                pytest.fail(f"{name} accepted {what} labels")
        with pytest.warns(UserWarning, match="integral"):
            call(good.double())
    with pytest.warns(UserWarning, match="integral"):
        assert torch.equal(check_labels(good.double().numpy().reshape(-1, 1)), good)


# ---------------------------------------------------------------------------------------------- configs
def test_yaml_syntax_error_names_the_file_and_line(tmp_path, capsys):
    bad = tmp_path / "broken.yaml"
    bad.write_text("train:\n  epochs: [1, 2\n")
    assert main(["train", "--config", str(bad), "--run-dir", str(tmp_path / "r")]) == 1
    line = one_error_line(capsys, str(bad), "line", "invalid YAML")
    assert "<unicode string>" not in line
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("content", [os.urandom(512), b"\x00\x01binary\x00"])
def test_binary_config_is_one_line(tmp_path, capsys, content):
    path = tmp_path / "c.yaml"
    path.write_bytes(content)
    assert main(["train", "--config", str(path), "--run-dir", str(tmp_path / "r")]) == 1
    one_error_line(capsys, str(path), "not a text file")


def test_config_that_is_a_folder_says_so(tmp_path, capsys):
    assert main(["train", "--config", str(tmp_path), "--run-dir", str(tmp_path / "r")]) == 1
    one_error_line(capsys, "is a folder", "digits_convnet")


def test_packaged_config_by_name_and_unknown_name(tmp_path, capsys):
    from clusterloss.config_files import PACKAGED_CONFIGS, find_config

    assert find_config("digits_convnet") in (Path("configs/digits_convnet.yaml"),
                                             PACKAGED_CONFIGS / "digits_convnet.yaml")
    assert main(["train", "--config", "no_such_config", "--run-dir", str(tmp_path / "r")]) == 1
    one_error_line(capsys, "no_such_config", "digits_convnet")


def test_version(capsys):
    with pytest.raises(SystemExit) as stop:
        main(["--version"])
    assert stop.value.code == 0
    assert capsys.readouterr().out.startswith("clusterloss ")


# -------------------------------------------------------------------------------------- checkpoints
def test_random_and_malicious_checkpoints_are_refused_in_one_line(tmp_path, capsys):
    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned > " + str(tmp_path / "pwned"),))

    evil = tmp_path / "evil.pt"
    torch.save({"model": Evil()}, evil)
    noise = tmp_path / "noise.pt"
    noise.write_bytes(os.urandom(4096))
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    for path, needle in ((evil, "asks for code to run"), (noise, "not"), (empty, "truncated")):
        assert main(["evaluate", "--checkpoint", str(path), "--device", "cpu"]) == 1
        one_error_line(capsys, str(path), needle)
    assert not (tmp_path / "pwned").exists()


def test_truncated_last_pt_falls_back_to_an_older_intact_checkpoint(finished_run, tmp_path, capsys):
    run = copy_run(finished_run, tmp_path / "run")
    good = load_checkpoint(run / "last.pt")
    (run / "last.pt").write_bytes((run / "last.pt").read_bytes()[:1000])
    ckpt, path = load_resumable(run)
    assert path.name in ("last.prev.pt", "best.pt") and ckpt["step"] <= good["step"]
    err = capsys.readouterr().err
    assert "warning:" in err and "last.pt" in err and path.name in err
    # an empty last.pt too, and a resume that trains on from there
    (run / "last.pt").write_bytes(b"")
    metrics = train(load_config(None, TINY + ["train.epochs=3"]), run, resume=True)
    assert metrics["epoch"] == 3 and load_checkpoint(run / "last.pt")["epoch"] == 3
    # nothing readable at all: one line naming each file
    for name in ("last.pt", "last.prev.pt", "best.pt"):
        (run / name).write_bytes(b"junk")
    with pytest.raises(ValueError, match="no readable checkpoint"):
        load_resumable(run)


def test_the_previous_checkpoint_is_kept_until_the_new_one_is_in_place(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    save_checkpoint({"step": 1}, path, keep_previous=True)
    save_checkpoint({"step": 2}, path, keep_previous=True)
    assert load_checkpoint(path)["step"] == 2 and load_checkpoint(tmp_path / "last.prev.pt")["step"] == 1

    def dies_while_writing(target, write):
        raise OSError(errno.EIO, "I/O error")

    monkeypatch.setattr(checkpoint_module, "atomic_write", dies_while_writing)
    with pytest.raises(CheckpointWriteError):
        save_checkpoint({"step": 3}, path, keep_previous=True)
    assert load_checkpoint(path)["step"] == 2  # untouched


@contextlib.contextmanager
def tiny_filesystem(tmp_path: Path, size: str = "96k"):
    """A real tiny tmpfs where mounting works (root on Linux), else None (callers inject an OSError)."""
    mount = tmp_path / f"fs-{uuid.uuid4().hex[:6]}"
    mount.mkdir()
    command = ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mount)]
    ok = os.geteuid() == 0 and subprocess.run(command, capture_output=True).returncode == 0
    try:
        yield mount if ok else None
    finally:
        if ok:
            subprocess.run(["umount", str(mount)], check=False)


def test_full_disk_while_saving_is_one_line_naming_path_and_space(tmp_path, monkeypatch):
    state = {"w": torch.zeros(200_000)}  # ~800 kB: does not fit in 96 kB
    with tiny_filesystem(tmp_path) as mount:
        if mount is None:  # no tmpfs: the same error injected where the bytes are written
            mount = tmp_path / "full"
            mount.mkdir()

            def no_space(target, write):
                raise OSError(errno.ENOSPC, "No space left on device", str(target))

            monkeypatch.setattr(checkpoint_module, "atomic_write", no_space)
        else:
            save_checkpoint({"step": 1}, mount / "last.pt", keep_previous=True)  # a small one fits
        with pytest.raises(CheckpointWriteError) as err:
            save_checkpoint(state, mount / "last.pt", keep_previous=True)
        message = str(err.value)
        assert str(mount / "last.pt") in message and "no space left" in message
        assert "needs" in message and "free at least" in message and "\n" not in message
        assert not [p for p in mount.iterdir() if p.name.endswith(".tmp")]  # no half-written temp file left
        if (mount / "last.pt").exists():
            assert load_checkpoint(mount / "last.pt")["step"] == 1  # the previous one is intact


def test_read_only_run_dir_is_one_line(tmp_path, capsys, monkeypatch):
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump({"data": {"name": "digits"}}))
    with tiny_filesystem(tmp_path) as mount:
        if mount is not None:
            subprocess.run(["mount", "-o", "remount,ro", str(mount)], check=True)
            run = mount / "run"
        else:
            import clusterloss.run_lock as run_lock_module

            real_open = os.open

            def read_only(path, flags, *args):
                if str(path).endswith(run_lock_module.LOCK_NAME):
                    raise OSError(errno.EROFS, "Read-only file system", str(path))
                return real_open(path, flags, *args)

            monkeypatch.setattr(run_lock_module.os, "open", read_only)
            run = tmp_path / "run"
        assert main(["train", "--config", str(config), "--run-dir", str(run)]) == 1
        one_error_line(capsys, str(run), "choose")


def test_read_only_output_of_evaluate_is_one_line(tmp_path, capsys):
    x = np.random.default_rng(0).normal(size=(20, 4)).astype(np.float32)
    args = npy_pair(tmp_path, x, np.repeat(np.arange(4), 5))
    with tiny_filesystem(tmp_path) as mount:
        if mount is None:
            pytest.skip("needs a read-only mount (root + tmpfs); the injected run-lock case covers the path")
        subprocess.run(["mount", "-o", "remount,ro", str(mount)], check=True)
        args[args.index("--out") + 1] = str(mount / "m.json")
        assert main(args) == 1
        one_error_line(capsys, str(mount), "writable")


def test_stray_temp_files_of_a_killed_save_are_cleaned_on_the_next_start(finished_run, tmp_path):
    run = copy_run(finished_run, tmp_path / "run")
    stray = [run / ".last.pt.0123456789abcdef.tmp", run / ".metrics.jsonl.fedcba9876543210.tmp"]
    for path in stray:
        path.write_bytes(b"half a checkpoint")
    keep = run / "notes.tmp"  # not ours: left alone
    keep.write_text("mine")
    train(None, run, resume=True)
    assert not any(p.exists() for p in stray) and keep.exists()


# ------------------------------------------------------------------------------------------- resume
def test_resume_with_a_shape_changing_override_is_refused(finished_run, tmp_path, capsys):
    run = copy_run(finished_run, tmp_path / "run")
    before = (run / "config.yaml").read_text()
    assert main(["train", "--resume", str(run), "--set", "model.embedding_dim=16"]) == 1
    one_error_line(capsys, "model.embedding_dim", "8 -> 16", "new run")
    assert main(["train", "--resume", str(run), "--set", "train.lr=0.5"]) == 1
    one_error_line(capsys, "train.lr")
    assert (run / "config.yaml").read_text() == before


def test_resume_of_a_finished_run_with_fewer_epochs_never_rewrites_its_config(finished_run, tmp_path, capsys):
    run = copy_run(finished_run, tmp_path / "run")
    before = (run / "config.yaml").read_text()
    records = (run / "metrics.jsonl").read_text()
    assert main(["train", "--resume", str(run), "--set", "train.epochs=1"]) == 1
    one_error_line(capsys, "train.epochs=1", "2 epochs", "longer")
    assert (run / "config.yaml").read_text() == before and (run / "metrics.jsonl").read_text() == records


def test_resume_elsewhere_is_refused_not_ignored(finished_run, tmp_path, capsys):
    run = copy_run(finished_run, tmp_path / "run")
    assert main(["train", "--resume", str(run), "--run-dir", str(tmp_path / "other")]) == 1
    one_error_line(capsys, "--run-dir", str(tmp_path / "other"))
    assert not (tmp_path / "other").exists()


def test_checkpoint_whose_weights_do_not_fit_is_one_line(finished_run, tmp_path, capsys):
    ckpt = load_checkpoint(finished_run / "last.pt")
    ckpt["config"]["model"]["embedding_dim"] = 16  # the weights are for 8
    bad = tmp_path / "bad.pt"
    torch.save(ckpt, bad)
    assert main(["evaluate", "--checkpoint", str(bad), "--device", "cpu"]) == 1
    one_error_line(capsys, "do not fit", "size mismatch")


def test_unknown_device_is_one_line(finished_run, capsys):
    assert main(["evaluate", "--checkpoint", str(finished_run / "last.pt"), "--device", "gpu0"]) == 1
    one_error_line(capsys, "gpu0", "cuda:N")


def test_retrieval_k_and_queries_are_bounded_before_any_work(finished_run, tmp_path, capsys):
    out = tmp_path / "grid.png"
    for flag, value in (("--k", "10000"), ("--queries", "0"), ("--k", "0"), ("--queries", "100000")):
        args = ["retrieval", "--checkpoint", str(finished_run / "last.pt"), "--out", str(out), flag, value]
        assert main(args) == 1
        one_error_line(capsys, flag)
    assert not out.exists()


def test_retrieval_k_is_bounded_by_the_split_size():
    from clusterloss.analysis import check_grid_size

    check_grid_size(8, 8, 9)
    with pytest.raises(ValueError, match="--k 9 is more than the 8 other images"):
        check_grid_size(8, 9, 9)
    with pytest.raises(ValueError, match="--queries 10 is more than the 9 images"):
        check_grid_size(10, 2, 9)


# ------------------------------------------------------------------------------------------- pickles
def cifar_folder(tmp_path: Path, batch: bytes) -> Path:
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        (folder / name).write_bytes(batch)
    meta = {b"label_names": [f"c{i}".encode() for i in range(10)]}
    (folder / "batches.meta").write_bytes(pickle.dumps(meta, protocol=2))
    return tmp_path


@pytest.mark.parametrize("kind", ["empty", "truncated", "random"])
def test_empty_truncated_or_random_cifar_batch_is_one_line_naming_the_file(tmp_path, capsys, kind):
    whole = pickle.dumps({b"data": np.zeros((10, 3072), np.uint8), b"labels": list(range(10))}, protocol=2)
    batch = {"empty": b"", "truncated": whole[: len(whole) // 2], "random": os.urandom(2000)}[kind]
    root = cifar_folder(tmp_path / "data", batch)
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump({"data": {"name": "cifar10", "root": str(root)},
                                      "model": {"name": "convnet", "embedding_dim": 4}}))
    assert main(["train", "--config", str(config), "--run-dir", str(tmp_path / "run")]) == 1
    one_error_line(capsys, "data_batch_1" if kind != "empty" else "cifar-10-batches-py")


def test_pickle_with_a_huge_declared_array_is_refused_before_allocating(tmp_path):
    # _reconstruct(ndarray, (2**32,), "B"): 4 GiB declared in a 67-byte file
    crafted = (b"\x80\x02cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\n"
               b"\x8a\x05\x00\x00\x00\x00\x01\x85U\x01B\x87R.")
    path = tmp_path / "crafted.pkl"
    path.write_bytes(crafted)
    with pytest.raises(pickle.UnpicklingError, match=r"crafted\.pkl.*4,294,967,296-byte array"):
        safe_load(path)
    with pytest.raises(pickle.UnpicklingError, match="4,294,967,296-byte"):
        safe_load(io.BytesIO(crafted))
    fine = tmp_path / "fine.pkl"
    fine.write_bytes(pickle.dumps({"a": np.arange(1000)}, protocol=4))
    assert (safe_load(fine)["a"] == np.arange(1000)).all()


def test_npy_header_declaring_more_than_the_file_holds_is_one_line(tmp_path, capsys):
    np.save(tmp_path / "e.npy", np.zeros((4, 3), np.float32))
    raw = (tmp_path / "e.npy").read_bytes()
    (tmp_path / "e.npy").write_bytes(raw.replace(b"'shape': (4, 3), ", b"'shape': (99999999999, 3), "))
    np.save(tmp_path / "l.npy", np.array([0, 0, 1, 1]))
    args = ["evaluate", "--embeddings", str(tmp_path / "e.npy"), "--labels", str(tmp_path / "l.npy")]
    assert main(args) == 1
    one_error_line(capsys, "e.npy", "not a readable .npy")

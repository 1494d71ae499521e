"""Analysis: extraction in dataset order, the analysis CLI commands and the run report, on tiny digits."""

import argparse
import json

import numpy as np
import pytest
import torch

from clusterloss.analysis import (
    add_subcommands,
    analyze_run,
    extract,
    format_table,
    load_extracted,
    save_extracted,
)
from clusterloss.checkpoint import save_checkpoint
from clusterloss.config import load_config
from clusterloss.data import build_splits, normalize
from clusterloss.metrics import evaluate_embeddings
from clusterloss.models import build_model

TINY = ["data.name=digits", "data.protocol=zero_shot", "model.name=convnet", "model.embedding_dim=8",
        "model.options={width: 4}", "eval.kmeans_seeds=[0, 1]", "eval.ks=[1, 2]", "eval.batch_size=64"]


@pytest.fixture(autouse=True)
def _one_thread():
    # Digits batches are tiny: on a shared 2-core machine, thread wake-ups cost 10-30x the work itself.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A run directory with a checkpoint of an untrained (seeded) model and a short metrics.jsonl."""
    run = tmp_path_factory.mktemp("tiny_run")
    config = load_config(None, TINY)
    torch.manual_seed(0)
    model = build_model("convnet", embedding_dim=8, in_channels=1, width=4).eval()
    save_checkpoint({"model": model.state_dict(), "config": config.to_dict(), "epoch": 1, "step": 3},
                    run / "last.pt")
    rows = [{"epoch": 0, "step": s, "split": "train", "loss": 1.0 / s, "lr": 0.05} for s in (1, 2, 3)]
    rows.append({"epoch": 1, "step": 3, "split": "eval", "nmi": 0.3, "recall@1": 0.5})
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return run


def cli(*argv):
    parser = argparse.ArgumentParser(prog="clusterloss")
    add_subcommands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args([str(a) for a in argv])
    return args.func(args)


def test_extract_embeds_the_eval_split_in_dataset_order(run_dir):
    ex = extract(run_dir / "last.pt", "test", batch_size=50)
    splits = build_splits("digits", "data", protocol="zero_shot")
    assert torch.equal(torch.from_numpy(ex.labels), splits.eval.labels)
    assert ex.embeddings.shape == (len(splits.eval), 8) and ex.embeddings.dtype == np.float32
    torch.manual_seed(0)
    model = build_model("convnet", embedding_dim=8, in_channels=1, width=4).eval()
    with torch.no_grad():
        direct = model(normalize(splits.eval.images[:20], splits.mean, splits.std))
    np.testing.assert_allclose(ex.embeddings[:20], direct.numpy(), atol=1e-5)
    small_batches = extract(run_dir / "last.pt", batch_size=7).embeddings
    np.testing.assert_allclose(small_batches, ex.embeddings, atol=1e-5)
    half = extract(run_dir / "last.pt", bf16=True).embeddings
    assert np.abs(half - ex.embeddings).max() < 0.1
    assert (ex.meta["dataset"], ex.meta["split"], ex.meta["protocol"]) == ("digits", "eval", "zero_shot")
    assert ex.meta["checkpoint"].endswith("last.pt") and ex.meta["epoch"] == 1
    assert len(extract(run_dir / "last.pt", "train").labels) == len(splits.train)


def test_saved_embeddings_round_trip_and_find_their_images(run_dir, tmp_path):
    ex = extract(run_dir / "last.pt")
    paths = save_extracted(ex, tmp_path)
    back = load_extracted(paths["embeddings"], paths["labels"], with_images=True)
    assert np.array_equal(back.embeddings, ex.embeddings) and np.array_equal(back.labels, ex.labels)
    assert torch.equal(back.images, ex.images) and back.class_names == ex.class_names
    assert np.load(paths["labels"]).dtype == np.int64


@pytest.mark.slow
def test_cli_commands(run_dir, tmp_path, capsys):
    ckpt = run_dir / "last.pt"
    assert cli("extract", "--checkpoint", ckpt, "--out", tmp_path, "--split", "test") == 0
    emb, labels = tmp_path / "embeddings.npy", tmp_path / "labels.npy"
    assert json.loads((tmp_path / "embeddings.json").read_text())["split"] == "eval"

    assert cli("evaluate", "--embeddings", emb, "--labels", labels, "--out", tmp_path / "m.json",
               "--ks", 1, 3, "--seeds", 0) == 0
    metrics = json.loads((tmp_path / "m.json").read_text())
    want = evaluate_embeddings(np.load(emb), np.load(labels), ks=(1, 3), kmeans_seeds=(0,))
    assert metrics == pytest.approx(want)
    assert "recall@3" in capsys.readouterr().out
    assert cli("evaluate", "--checkpoint", ckpt, "--out", tmp_path / "m2.json", "--seeds", 0) == 0
    assert json.loads((tmp_path / "m2.json").read_text())["recall@1"] == pytest.approx(want["recall@1"])

    assert cli("tsne", "--embeddings", emb, "--labels", labels, "--images", "--out", tmp_path / "t.png") == 0
    assert cli("retrieval", "--checkpoint", ckpt, "--out", tmp_path / "r.png", "--queries", 3, "--k", 4) == 0
    assert (tmp_path / "t.png").stat().st_size > 10_000 and (tmp_path / "r.png").stat().st_size > 10_000

    with pytest.raises(ValueError, match="--checkpoint"):
        cli("evaluate", "--labels", labels)
    with pytest.raises(ValueError, match="superclass"):
        cli("tsne", "--checkpoint", ckpt, "--coarse", "--out", tmp_path / "x.png")
    with pytest.raises(SystemExit):
        cli("retrieval", "--out", tmp_path / "x.png")  # --checkpoint is required


@pytest.mark.slow
def test_report_writes_every_artifact_and_falls_back_to_last_pt(run_dir, capsys):
    assert cli("report", run_dir) == 0  # no best.pt in this run: last.pt is used
    for name in ("embeddings.npy", "labels.npy", "embeddings.json", "metrics.json", "tsne.png",
                 "retrieval.png", "curves.png", "report.html"):
        assert (run_dir / name).stat().st_size > 0, name
    metrics = json.loads((run_dir / "metrics.json").read_text())
    ex = extract(run_dir / "last.pt")
    want = evaluate_embeddings(ex.embeddings, ex.labels, ks=(1, 2), kmeans_seeds=(0, 1))
    assert metrics == pytest.approx(want)
    html = (run_dir / "report.html").read_text()
    assert html.count("data:image/png;base64,") == 3 and "convnet" in html and "digits" in html
    assert "report.html" in capsys.readouterr().out
    with pytest.raises(ValueError, match="no checkpoint"):
        analyze_run(run_dir / "missing")


def _cifar_fixture_writer():
    """tests/data/conftest.py's writers of small official-format dataset files, loaded as a module."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).parent / "data" / "conftest.py"
    spec = importlib.util.spec_from_file_location("dataset_file_writers", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_every_analysis_command_finds_a_dataset_that_moved_with_data_root(tmp_path, capsys):
    first, second, third = tmp_path / "first", tmp_path / "second", tmp_path / "third"
    _cifar_fixture_writer().write_cifar10(first, per_batch=30)
    run = tmp_path / "run"
    config = load_config(None, ["data.name=cifar10", f"data.root={first}", *TINY[1:]])
    torch.manual_seed(0)
    model = build_model("convnet", embedding_dim=8, in_channels=3, width=4).eval()
    save_checkpoint({"model": model.state_dict(), "config": config.to_dict(), "epoch": 1, "step": 1},
                    run / "last.pt")
    ckpt = run / "last.pt"
    first.rename(second)
    with pytest.raises(FileNotFoundError, match="cifar-10"):
        cli("evaluate", "--checkpoint", ckpt, "--out", tmp_path / "m.json")
    assert cli("evaluate", "--checkpoint", ckpt, "--data-root", second, "--out", tmp_path / "m.json",
               "--seeds", 0) == 0
    assert cli("extract", "--checkpoint", ckpt, "--data-root", second, "--out", tmp_path / "emb") == 0
    emb, labels = tmp_path / "emb" / "embeddings.npy", tmp_path / "emb" / "labels.npy"
    assert cli("tsne", "--embeddings", emb, "--labels", labels, "--images", "--out", tmp_path / "t1.png") == 0
    second.rename(third)  # embeddings.json still names the second folder: --data-root overrides it
    assert cli("tsne", "--embeddings", emb, "--labels", labels, "--images", "--data-root", third,
               "--out", tmp_path / "t2.png") == 0
    assert cli("retrieval", "--checkpoint", ckpt, "--data-root", third, "--out", tmp_path / "r.png",
               "--queries", 2, "--k", 3) == 0
    assert cli("report", run, "--no-tsne", "--data-root", third) == 0
    assert (run / "report.html").exists() and (tmp_path / "t2.png").exists()


def test_format_table_prints_scores_and_fewshot_accuracies_in_percent():
    metrics = {"nmi": 0.8562, "nmi_std": 0.0041, "recall@1": 0.9, "oneshot": 0.74, "20way1shot": 0.7891,
               "20way1shot_ci95": 0.0123, "20way1shot_ncm": 0.8, "num_classes": 26, "kmeans_seconds": 1.5}
    rows = dict(line.split("  ", 1) for line in format_table(metrics).splitlines())
    rows = {name: text.strip() for name, text in rows.items()}
    assert rows == {"nmi (%)": "85.62 ± 0.41", "recall@1 (%)": "90.00", "oneshot (%)": "74.00",
                    "20way1shot (%)": "78.91 ± 1.23 (95 % CI)", "20way1shot_ncm (%)": "80.00",
                    "num_classes": "26", "kmeans_seconds": "1.5000"}

"""The frozen-feature trainer scores a query / gallery evaluation split (In-Shop) as queries against the
gallery, not all against all: train_head passes the mask, and the runner passes the final split's mask."""

import json
from types import SimpleNamespace

import torch

from clusterloss.comparison import features
from clusterloss.config import load_config
from clusterloss.metrics import evaluate_embeddings
from clusterloss.metrics.evaluate import evaluate_as_configured

TINY = ["data.name=digits", "train.epochs=1", "train.steps_per_epoch=2", "train.progress=false",
        "eval.kmeans_seeds=[0]", "train.num_threads=1", "model.embedding_dim=8", "train.batch_classes=3",
        "train.batch_samples=2"]


def _features(n, views, dim, classes, seed):
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % classes
    return torch.randn(n, views, dim, generator=g) + labels[:, None, None].float(), labels


def test_train_head_scores_queries_against_the_gallery(tmp_path, monkeypatch):
    config = load_config(None, TINY)
    train, train_labels = _features(30, 2, 6, 5, 0)
    evaluation, eval_labels = _features(24, 1, 6, 4, 1)
    mask = torch.arange(24) < 8  # 8 queries, 16 gallery images; every query label is in the gallery
    heads = []

    def recording_evaluate(embeddings, labels, eval_config, query_mask=None):
        heads.append(embeddings.detach().clone())
        return evaluate_as_configured(embeddings, labels, eval_config, query_mask=query_mask)

    monkeypatch.setattr(features, "evaluate_as_configured", recording_evaluate)
    got = features.train_head(config, train, train_labels, evaluation[:, 0], eval_labels, tmp_path / "a",
                              eval_query_mask=mask)
    assert (got["num_queries"], got["num_gallery"], got["num_samples"]) == (8, 16, 24)
    # Exactly the query / gallery scores of the head's embeddings (queries against the 16 gallery rows).
    want = evaluate_embeddings(heads[0][mask], eval_labels[mask], kmeans_seeds=(0,),
                               gallery_embeddings=heads[0][~mask], gallery_labels=eval_labels[~mask])
    for key in ("recall@1", "map@r", "r_precision", "nmi"):
        assert got[key] == want[key], key
    plain = features.train_head(config, train, train_labels, evaluation[:, 0], eval_labels, tmp_path / "b")
    assert "num_queries" not in plain and plain["num_samples"] == 24


def test_runner_passes_the_final_split_mask_and_none_for_validation(tmp_path, monkeypatch):
    seen = []

    def recording_head(config, *args, eval_query_mask=None):
        seen.append(eval_query_mask)
        return {"map@r": 0.5}

    monkeypatch.setattr(features, "train_head", recording_head)
    config = load_config(None, TINY)
    mask = torch.tensor([True, False, False, True])
    runner = object.__new__(features.FeatureRunner)
    runner.views, runner.seed = 2, 0
    runner.key = features._cache_key(config, runner.views, runner.seed)
    runner.folder = tmp_path / "cache"
    runner.cache = {"train": torch.zeros(4, 2, 3), "train_labels": torch.tensor([0, 0, 1, 1]),
                    "eval": torch.zeros(4, 3), "eval_labels": torch.tensor([0, 0, 1, 1])}
    runner.final_splits = SimpleNamespace(eval=SimpleNamespace(query_mask=mask))
    assert runner(config, tmp_path / "final") == {"map@r": 0.5}
    assert seen[-1] is mask
    assert json.loads((tmp_path / "final" / "final_metrics.json").read_text()) == {"map@r": 0.5}
    runner._select = lambda dataset: torch.ones(4, dtype=torch.bool)
    runner.tuning_splits = SimpleNamespace(train=None, eval=None)
    validation = load_config(None, TINY + ["data.validation=true"])
    runner.key = features._cache_key(validation, runner.views, runner.seed)
    runner(validation, tmp_path / "tune")
    assert seen[-1] is None


def test_train_head_decays_the_margin_multiplier_like_the_trainer(tmp_path):
    # loss.margin_decay_*: gamma_t = 4 * 0.5 ** (t / 2) at 0-based step t (period 1 epoch = 2 steps), logged
    # as margin_multiplier, the trainer's rule (schedule.margin_multiplier_at)
    config = load_config(None, TINY + ["train.epochs=2", "train.log_every_steps=1",
                                       "loss.name=facility_location", "loss.margin_multiplier=4.0",
                                       "loss.margin_decay_rate=0.5", "loss.margin_decay_epochs=1"])
    train, train_labels = _features(30, 2, 6, 5, 0)
    evaluation, eval_labels = _features(24, 1, 6, 4, 1)
    features.train_head(config, train, train_labels, evaluation[:, 0], eval_labels, tmp_path / "a")
    records = [json.loads(line) for line in (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()]
    logged = [(r["step"], r["margin_multiplier"]) for r in records if r["split"] == "train"]
    assert logged == [(s, 4.0 * 0.5 ** ((s - 1) / 2)) for s in (1, 2, 3, 4)]

"""trainer top_blocks on tiny digits with timm's test_efficientnet (random weights): the cached maps through
the untrained top are the backbone's own pooled features, only the top + head train, nothing is redone, a
cut short extraction resumes, and bad features keys are one-line errors."""

import json

import pytest
import torch
import yaml

from clusterloss.cli import main
from clusterloss.comparison import top_blocks
from clusterloss.comparison.protocol import run_config, run_protocol
from clusterloss.comparison.spec import load_protocol, trial_points
from clusterloss.comparison.top_blocks import TopBlockRunner, pca_init, pooled_reference, split_backbone
from clusterloss.data.augment import apply_affine, eval_view, normalization_affine
from clusterloss.data.protocols import splits_from_config
from clusterloss.models.head import PooledFeatures
from clusterloss.models.registry import build_model_from_config

TINY = ["data.name=digits", "model.name=timm", "model.options={arch: test_efficientnet}",
        "model.pretrained=false", "model.embedding_dim=8", "train.epochs=1", "train.steps_per_epoch=2",
        "train.progress=false", "train.optimizer=adam", "train.lr=0.01", "train.head_lr_multiplier=10",
        "train.num_threads=1", "eval.kmeans_seeds=[0]", "eval.every_epochs=0", "train.batch_classes=3",
        "train.batch_samples=2"]


def _protocol(tmp_path, features=None, name="tiny"):
    body = {"name": name, "config": "digits_convnet", "trainer": "top_blocks", "set": TINY,
            "reference": "facility_location", "metrics": ["nmi", "recall@1", "map@r"],
            "tune": {"trials": 2, "seeds": [0], "metric": "map@r"}, "final": {"seeds": 1},
            "features": features if features is not None else {"views": 2, "trainable_blocks": 1,
                                                                 "cache_blocks": 2, "batch_size": 64},
            "losses": {"facility_location": {"space": {"loss.margin_multiplier": [1.0, 3.0]}},
                       "triplet_semihard": {"space": {"model.embedding_dim": [8, 16]}}}}
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(body))
    return path


def _splits(config):
    return splits_from_config(config.data)


def _runner(path, cache_dir):
    protocol = load_protocol(path)
    entry = protocol.entries[protocol.reference]
    point = trial_points(entry, protocol.trials)[0]
    final = run_config(protocol, entry, point, 0, validation=False)
    tuning = run_config(protocol, entry, point, 0, validation=True)
    return TopBlockRunner(protocol, cache_dir, final, tuning), protocol, final


def test_cached_maps_through_the_untrained_top_are_the_backbones_pooled_features(tmp_path):
    runner, _, final = _runner(_protocol(tmp_path), tmp_path / "cache")
    assert runner.cache["train"].dtype == torch.float16 and runner.cache["train"].dim() == 5
    assert runner.cache["train"].shape[:2] == (len(runner.final_splits.train), 2)
    # Independent reference: the whole pretrained model's backbone on the evaluation view, pooled, L2.
    torch.manual_seed(0)
    model = build_model_from_config(final.model, 1).eval()
    splits = runner.final_splits
    scale, shift = normalization_affine(splits.mean, splits.std, 1, torch.device("cpu"))
    images = apply_affine(eval_view(splits.eval.images, int(splits.eval.images.shape[-1]), 1.0), scale, shift)
    with torch.no_grad():
        want = PooledFeatures(model)(images)
    got, labels = runner.reference_features(validation=False)
    assert torch.equal(labels, splits.eval.labels)
    torch.testing.assert_close(got, want, atol=3e-3, rtol=0)  # the cached map is float16
    # The validation reference: the evaluation view of the validation classes' training images.
    val, val_labels = runner.reference_features(validation=True)
    assert len(val) == len(runner.tuning_splits.eval) and set(val_labels.tolist()) == {3, 4}
    metrics = pooled_reference(runner, final, validation=False)
    assert 0.0 <= metrics["map@r"] <= 1.0 and metrics["num_samples"] == len(splits.eval)


def test_only_the_top_and_head_train_from_the_pretrained_weights(tmp_path, monkeypatch):
    runner, protocol, final = _runner(_protocol(tmp_path), tmp_path / "cache")
    before = {k: v.clone() for k, v in runner.backbone_model(final).state_dict().items()}
    made = []
    original = runner.new_model

    def recording(dim):
        model = original(dim)
        made.append((model, {k: v.clone() for k, v in model.state_dict().items()}))
        return model

    monkeypatch.setattr(runner, "new_model", recording)
    metrics = runner(final, tmp_path / "run")
    assert metrics["steps"] == 2.0
    model, initial = made[0]
    # The run's top started as the pretrained one (the runner's top, not the frozen block before it).
    for key, value in runner.top.state_dict().items():
        assert torch.equal(initial[f"top.{key}"], value), key
    trained = model.state_dict()
    changed = {k for k in trained if not torch.equal(trained[k], initial[k])}
    assert any(k.startswith("top.0.") and k.endswith("weight") for k in changed)  # the trainable block
    assert "head.linear.weight" in changed
    assert not any("running_" in k or "num_batches" in k for k in changed)  # BatchNorm statistics frozen
    # Nothing below the cut (nor the shared pretrained top) moved.
    after = runner.backbone_model(final).state_dict()
    assert all(torch.equal(after[k], before[k]) for k in before)


def test_protocol_resumes_and_redoes_nothing(tmp_path, monkeypatch):
    path = _protocol(tmp_path)
    calls = []
    original = TopBlockRunner.extractor

    def failing_extractor(self, model):
        bottom = original(self, model)

        def forward(images):
            calls.append(len(images))
            if len(calls) == 3:  # the second batch of the training images: a kill mid-extraction
                raise KeyboardInterrupt
            return bottom(images)
        return forward

    monkeypatch.setattr(TopBlockRunner, "extractor", failing_extractor)
    with pytest.raises(KeyboardInterrupt):
        run_protocol(path, tmp_path / "runs", tmp_path / "results")
    parts = list((tmp_path / "runs" / "features").glob("*/parts_train/part*.pt"))
    assert len(parts) == 1
    calls.clear()

    def counting_extractor(self, model):
        bottom = original(self, model)
        return lambda images: (calls.append(len(images)), bottom(images))[1]

    monkeypatch.setattr(TopBlockRunner, "extractor", counting_extractor)
    result = run_protocol(path, tmp_path / "runs", tmp_path / "results")
    _, _, final = _runner(path, tmp_path / "runs" / "features")  # the cache is read back, not rebuilt
    train_batches = -(-len(_splits(final).train) // 64)
    eval_batches = -(-len(_splits(final).eval) // 64)
    # The first batch of the training images (2 views) came from its saved part, not from the backbone.
    assert len(calls) == 2 * (train_batches - 1) + eval_batches
    assert set(result["summary"]) == {"facility_location", "triplet_semihard"}
    folder = next((tmp_path / "runs" / "features").glob("*/features.pt")).parent
    info = json.loads((folder / "features.json").read_text())
    assert info["feature_shape"][0] > 1 and len(info["feature_shape"]) == 3
    # The embedding size was tuned over the one cache (the key ignores model.embedding_dim).
    assert len(list((tmp_path / "runs" / "features").glob("*/features.pt"))) == 1
    tuned = json.loads((tmp_path / "results" / "selection.json").read_text())["entries"]
    assert tuned["triplet_semihard"]["validation"][1]["point"] == {"model.embedding_dim": 16}
    reference = json.loads((tmp_path / "results" / "reference.json").read_text())
    assert reference["final"]["num_samples"] == len(_splits(final).eval)
    assert reference["validation"]["num_classes"] == 2  # the validation classes' evaluation views
    run = json.loads((tmp_path / "runs" / "tune" / "facility_location" / "trial0" / "seed0" /
                      "final_metrics.json").read_text())
    assert run["num_classes"] == 2  # validation: digits 3-4 of the training classes, never 5-9

    def no_training(*args, **kwargs):
        raise AssertionError("a finished run was trained again")

    monkeypatch.setattr(top_blocks, "train_head", no_training)
    monkeypatch.setattr(TopBlockRunner, "extractor", lambda self, model: no_training())
    again = run_protocol(path, tmp_path / "runs", tmp_path / "results")
    assert again["summary"] == result["summary"]


@pytest.mark.parametrize("features, message", [
    ({"trainable_block": 1}, "unknown features key(s) ['trainable_block']"),
    ({"trainable_blocks": 2, "cache_blocks": 1}, "1 <= features.trainable_blocks <= cache_blocks"),
    ({"trainable_blocks": "two"}, "must be integers"),
    ({"trainable_blocks": 99}, "must be in 1.."),
])
def test_bad_features_keys_are_one_line_errors(tmp_path, capsys, features, message):
    path = _protocol(tmp_path, features)
    assert main(["compare", "--protocol", str(path), "--out", str(tmp_path / "runs")]) == 1
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and err.startswith("error: ")


def test_split_refuses_a_backbone_without_efficientnet_parts():
    with pytest.raises(ValueError, match="EfficientNet-style backbone .*got Linear"):
        split_backbone(torch.nn.Linear(2, 2), 1)


@pytest.mark.parametrize("center", [True, False])
def test_pca_head_of_full_rank_keeps_the_cosine_geometry(center):
    g = torch.Generator().manual_seed(0)
    features = torch.rand(40, 6, generator=g) * torch.tensor([3.0, 2.0, 1.0, 1.0, 0.5, 0.2])
    linear = torch.nn.Linear(6, 6)
    pca_init(linear, features, center=center)
    torch.testing.assert_close(linear.weight @ linear.weight.T, torch.eye(6), atol=1e-5, rtol=0)
    with torch.no_grad():
        out = torch.nn.functional.normalize(linear(features), dim=1)
    # Independent reference: cosine similarities of the (centred) features themselves.
    ref = torch.nn.functional.normalize(features - features.mean(0) if center else features, dim=1)
    torch.testing.assert_close(out @ out.T, ref @ ref.T, atol=1e-5, rtol=0)
    small = torch.nn.Linear(6, 2)
    pca_init(small, features, center=center)  # the two leading directions: most of the variance kept
    with torch.no_grad():
        kept = (small(features) - small(features).mean(0)).pow(2).sum()
    total = (features - features.mean(0)).pow(2).sum()
    if center:
        eigen = torch.linalg.eigvalsh(torch.cov(features.T) * (len(features) - 1))
        torch.testing.assert_close(kept, eigen[-2:].sum(), rtol=1e-4, atol=0)
    assert kept <= total
    with pytest.raises(ValueError, match="embedding_dim <= 6"):
        pca_init(torch.nn.Linear(6, 7), features)


def test_a_run_made_with_other_top_blocks_options_is_not_reused(tmp_path):
    runner, _, final = _runner(_protocol(tmp_path), tmp_path / "cache")
    runner(final, tmp_path / "run")
    runner.head_init = "pca"
    with pytest.raises(ValueError, match="other top_blocks options"):
        runner(final, tmp_path / "run")
    assert runner(final, tmp_path / "other")["steps"] == 2.0  # the PCA-initialized head trains too

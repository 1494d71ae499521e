"""Config: every shipped YAML builds, overrides are typed, unknown keys name the closest valid key."""

from pathlib import Path

import pytest

from clusterloss.config import Config, load_config, save_config
from clusterloss.losses import build_loss
from clusterloss.models import build_model_from_config

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "configs").glob("*.yaml"))


def test_configs_folder_is_not_empty():
    names = {p.name for p in CONFIGS}
    assert {"cifar100_densenet_bc40.yaml", "cifar10_densenet_bc40.yaml", "imagenet32_densenet_bc40.yaml",
            "digits_convnet.yaml"} <= names


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_every_config_builds_its_model_and_loss(path):
    config = load_config(path)
    in_channels = 1 if config.data.name == "digits" else 3
    # every model.* key as the trainer uses it; pretrained weights are not read (no download in tests)
    model = build_model_from_config(config.model, in_channels=in_channels, load_weights=False)
    assert model.embedding_dim == config.model.embedding_dim
    options = dict(config.loss.options)
    if config.loss.name == "facility_location":
        pytest.importorskip("clusterloss.losses.facility_location")
        options.update(margin_multiplier=config.loss.margin_multiplier, margin_type=config.loss.margin_type,
                       pam_iterations=config.loss.pam_iterations)
    build_loss(config.loss.name, config.model.embedding_dim, num_classes=10, **options)
    assert Config.from_dict(config.to_dict()) == config


def test_the_original_recipe():
    c = load_config(Path(CONFIGS[0]).parent / "cifar100_densenet_bc40.yaml")
    assert (c.data.name, c.data.protocol, c.model.name, c.model.embedding_dim) == (
        "cifar100", "closed", "densenet_bc40", 64)
    assert (c.loss.name, c.loss.margin_type, c.loss.margin_multiplier) == ("facility_location", "nmi", 1.0)
    assert c.loss.pam_iterations > 0
    assert (c.train.batch_classes, c.train.batch_samples, c.train.epochs) == (32, 4, 100)
    assert (c.train.lr, c.train.momentum, c.train.nesterov, c.train.weight_decay) == (0.1, 0.9, True, 1e-4)
    assert (c.train.schedule, c.train.milestones, c.train.lr_decay) == ("step", [0.5, 0.75], 0.1)


def test_overrides_are_typed_as_yaml_scalars():
    c = load_config(None, ["train.epochs=3", "train.lr=1e-3", "train.nesterov=false",
                           "train.milestones=[0.3]", "model.options.dropout=0.25", "data.train_classes=null",
                           "loss.margin_type=ami", "train.weight_decay=0"])
    assert c.train.epochs == 3 and isinstance(c.train.epochs, int)
    assert c.train.lr == 1e-3 and c.train.nesterov is False and c.train.milestones == [0.3]
    assert c.model.options == {"dropout": 0.25} and c.data.train_classes is None
    assert c.loss.margin_type == "ami"
    assert c.train.weight_decay == 0.0 and isinstance(c.train.weight_decay, float)


def test_override_wins_over_yaml_and_yaml_keeps_the_rest(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("train:\n  epochs: 7\n  lr: 1e-2\nmodel:\n  name: convnet\n")
    c = load_config(path, ["train.epochs=2"])
    assert (c.train.epochs, c.train.lr, c.model.name) == (2, 0.01, "convnet")


@pytest.mark.parametrize("override, closest", [("train.epoch=3", "train.epochs"),
                                               ("trian.epochs=3", "train.epochs"),
                                               ("train.batch_class=4", "train.batch_classes"),
                                               ("model.embeding_dim=8", "model.embedding_dim")])
def test_unknown_override_names_the_closest_key(override, closest):
    with pytest.raises(ValueError, match=f"did you mean '{closest}'"):
        load_config(None, [override])


def test_unknown_yaml_key_names_the_closest_key(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("train:\n  learning_rate: 0.1\n  epoch: 3\n")
    with pytest.raises(ValueError, match="unknown config key 'train.epoch'|'train.learning_rate'"):
        load_config(path)
    path.write_text("optimizer:\n  lr: 0.1\n")
    with pytest.raises(ValueError, match="unknown config key 'optimizer'"):
        load_config(path)


@pytest.mark.parametrize("override, message", [
    ("train.epochs=three", "expects int"), ("train.nesterov=3", "expects bool"),
    ("train.schedule=cos", "must be one of"), ("train.amp=int8", "must be one of"),
    ("train.epochs", "section.key=value"), ("model.name.x=1", "not a mapping"),
    ("train.batch_samples=1", ">= 2"), ("train.milestones=[1.5]", "fractions"),
])
def test_bad_values_are_explained(override, message):
    with pytest.raises(ValueError, match=message):
        load_config(None, [override])


def test_save_and_load_round_trip(tmp_path):
    config = load_config(None, ["train.epochs=5", "model.options.width=8", "eval.ks=[1, 4]"])
    save_config(config, tmp_path / "config.yaml")
    assert load_config(tmp_path / "config.yaml") == config
    assert set(config.to_dict()) == {"data", "model", "loss", "train", "eval"}


def test_missing_file_is_a_value_error(tmp_path):
    with pytest.raises(ValueError, match="not found"):
        load_config(tmp_path / "nope.yaml")


@pytest.mark.parametrize("override, message", [
    ("eval.best_metric=recal@1", "did you mean 'recall@1'"),
    ("eval.best_metric=recall@16", "eval.best_metric"),
    ("eval.ks=[0]", "eval.ks"),
    ("eval.kmeans_seeds=[]", "eval.kmeans_seeds"),
])
def test_eval_settings_that_would_fail_late_are_rejected_up_front(override, message):
    with pytest.raises(ValueError, match=message):
        load_config(None, [override])


def test_best_metric_may_name_any_configured_recall():
    config = load_config(None, ["eval.ks=[1, 16]", "eval.best_metric=recall@16"])
    assert config.eval.best_metric == "recall@16"

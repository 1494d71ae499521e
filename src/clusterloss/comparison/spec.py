"""The protocol file of a fair comparison (``configs/compare/<setting>.yaml``) and its trial points.

A protocol names a base training config, the losses (entries) to compare, each entry's search space, and
the budget of each phase::

    name: digits_fair                 # results go to results/<name>/, runs to runs/evidence/<name>/
    config: digits_convnet             # a packaged config name or a YAML path
    trainer: images                   # images: `clusterloss train` runs; features: frozen-backbone head runs;
                                      # top_blocks: the backbone's last blocks + head on cached inner maps
    set: [train.epochs=10]            # overrides of every run (tuning and final)
    reference: facility_location      # every other entry is paired against this one
    metrics: [nmi, recall@1, map@r]   # table columns
    tune:
      trials: 4                       # per entry: the same number for every entry (enforced)
      seeds: [0]                      # each trial's validation metric is the mean over these seeds
      metric: map@r                   # the stated selection metric (higher is better)
      set: [train.batch_classes=3]    # overrides of the validation runs only
    final:
      seeds: 5                        # seeds 0..4 on the full training classes, evaluated once
    losses:
      facility_location:
        space: {loss.margin_multiplier: [1, 0.3, 3, 10]}
      facility_location_ami:
        loss: facility_location       # the registered loss (default: the entry's name)
        set: [loss.margin_type=ami]
        space: {loss.margin_multiplier: [1, 0.3, 3, 10]}
      triplet_semihard:
        space: {loss.options.margin: [0.2, 0.05, 0.1, 0.4]}
    sweeps:                           # optional one-factor studies, validation split only
      gamma: {losses: [facility_location], seeds: [0], values: {loss.margin_multiplier: [0.3, 1, 10, 100]}}
      per_batch:                      # or explicit points (here P x K at 128 images per batch)
        losses: [facility_location]
        values: [{train.batch_classes: 8, train.batch_samples: 16},
                 {train.batch_classes: 32, train.batch_samples: 4}]

Trial points: the space is the grid of its listed values (first value of each key first). A grid with
exactly ``trials`` points is used whole; a larger one gives its first point (list the defaults first) and
``trials - 1`` others drawn without replacement by a generator seeded from the entry's name; a smaller one is
an error, so every entry gets the same number of trials.
"""

from __future__ import annotations

import itertools
import json
import random
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..config_files import find_config

__all__ = ["Entry", "Protocol", "Sweep", "load_protocol", "trial_points", "point_overrides", "TRAINERS"]

TRAINERS = ("images", "features", "top_blocks")
_TOP_KEYS = {"name", "config", "trainer", "set", "reference", "metrics", "tune", "final", "losses", "sweeps",
             "features", "description"}


@dataclass
class Entry:
    name: str
    loss: str
    set: list[str] = field(default_factory=list)
    space: dict[str, list] = field(default_factory=dict)


@dataclass
class Sweep:
    name: str
    losses: list[str]
    seeds: list[int]
    points: list[dict[str, Any]]


@dataclass
class Protocol:
    name: str
    config: Path
    trainer: str
    set: list[str]
    reference: str
    metrics: list[str]
    trials: int
    tune_seeds: list[int]
    tune_metric: str
    tune_set: list[str]
    final_seeds: int
    entries: dict[str, Entry]
    sweeps: list[Sweep]
    features: dict[str, Any]
    path: Path
    description: str = ""


def _need(mapping: dict, key: str, where: str, kind: type | tuple[type, ...]):
    if key not in mapping:
        raise ValueError(f"{where}: missing key {key!r}")
    value = mapping[key]
    if not isinstance(value, kind) or isinstance(value, bool) and kind is int:
        raise ValueError(f"{where}: {key!r} must be {getattr(kind, '__name__', kind)}, got {value!r}")
    return value


def _string_list(value: Any, where: str) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) and "=" in v for v in value):
        raise ValueError(f"{where} must be a list of section.key=value overrides, got {value!r}")
    return list(value)


def _space(value: Any, where: str) -> dict[str, list]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ValueError(f"{where} must map section.key to a list of values, got {value!r}")
    out = {}
    for key, values in value.items():
        if not isinstance(key, str) or "." not in key:
            raise ValueError(f"{where}: {key!r} is not a section.key name (e.g. train.lr)")
        if not isinstance(values, list) or not values:
            raise ValueError(f"{where}.{key} must be a non-empty list of values, got {values!r}")
        out[key] = list(values)
    return out


def _resolve_config(text: str, protocol_path: Path) -> Path:
    """A base config by path or packaged name (``digits_convnet``), else relative to the protocol's folder."""
    try:
        return find_config(text)
    except ValueError:
        candidate = protocol_path.parent / text
        if candidate.is_file():
            return candidate
        raise ValueError(f"{protocol_path}: base config {text!r} not found (a YAML path or a packaged "
                         "config name such as digits_convnet)") from None


def load_protocol(path: str | Path) -> Protocol:
    """Read and check a protocol file (see the module docstring); errors name the file and the key."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"protocol file {str(path)!r} not found (e.g. configs/compare/digits_fair.yaml)")
    where = str(path)
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ValueError(f"{where} is not valid YAML (quote overrides holding [ ] or :): {err}") from None
    if not isinstance(raw, dict):
        raise ValueError(f"{where}: a protocol is a mapping (name:, config:, losses:, ...)")
    unknown = sorted(set(raw) - _TOP_KEYS)
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {unknown}; known: {sorted(_TOP_KEYS)}")
    tune = _need(raw, "tune", where, dict)
    final = _need(raw, "final", where, dict)
    trainer = raw.get("trainer", "images")
    if trainer not in TRAINERS:
        raise ValueError(f"{where}: trainer must be one of {TRAINERS}, got {trainer!r}")
    entries = {}
    for name, body in (_need(raw, "losses", where, dict)).items():
        body = body or {}
        if not isinstance(body, dict) or set(body) - {"loss", "set", "space"}:
            raise ValueError(f"{where}: losses.{name} takes loss:, set: and space:, got {body!r}")
        entries[name] = Entry(name=name, loss=body.get("loss", name),
                              set=_string_list(body.get("set"), f"{where}: losses.{name}.set"),
                              space=_space(body.get("space"), f"{where}: losses.{name}.space"))
    if not entries:
        raise ValueError(f"{where}: losses is empty")
    reference = raw.get("reference", next(iter(entries)))
    if reference not in entries:
        raise ValueError(f"{where}: reference {reference!r} is not one of the losses {list(entries)}")
    trials = _need(tune, "trials", f"{where}: tune", int)
    final_seeds = _need(final, "seeds", f"{where}: final", int)
    if trials < 1 or final_seeds < 1:
        raise ValueError(f"{where}: tune.trials and final.seeds must be >= 1")
    tune_seeds = tune.get("seeds", [0])
    if not isinstance(tune_seeds, list) or not tune_seeds or not all(isinstance(s, int) for s in tune_seeds):
        raise ValueError(f"{where}: tune.seeds must be a non-empty list of integers, got {tune_seeds!r}")
    sweeps = []
    for name, body in (raw.get("sweeps") or {}).items():
        if not isinstance(body, dict):
            raise ValueError(f"{where}: sweeps.{name} must be a mapping (losses:, seeds:, values:)")
        losses = body.get("losses", [reference])
        bad = [e for e in losses if e not in entries]
        if bad:
            raise ValueError(f"{where}: sweeps.{name}.losses {bad} are not entries of losses:")
        values = body.get("values")
        if isinstance(values, list):  # explicit points, e.g. P x K pairs at equal batch size
            if not values or not all(isinstance(v, dict) and v for v in values):
                raise ValueError(f"{where}: sweeps.{name}.values as a list holds mappings of "
                                 "section.key: value")
            points = [dict(v) for v in values]
        else:
            space = _space(values, f"{where}: sweeps.{name}.values")
            points = [dict(zip(space, v, strict=True)) for v in itertools.product(*space.values())]
        sweeps.append(Sweep(name=name, losses=list(losses), seeds=list(body.get("seeds", tune_seeds)),
                            points=points))
    protocol = Protocol(
        name=str(raw.get("name", path.stem)), config=_resolve_config(_need(raw, "config", where, str), path),
        trainer=trainer, set=_string_list(raw.get("set"), f"{where}: set"), reference=reference,
        metrics=list(raw.get("metrics", ["nmi", "recall@1", "map@r"])), trials=trials,
        tune_seeds=list(tune_seeds), tune_metric=str(tune.get("metric", "map@r")),
        tune_set=_string_list(tune.get("set"), f"{where}: tune.set"), final_seeds=final_seeds,
        entries=entries, sweeps=sweeps, features=dict(raw.get("features") or {}), path=path,
        description=str(raw.get("description", "")))
    for entry in entries.values():
        trial_points(entry, trials)  # fail now, not after hours of tuning
    return protocol


def trial_points(entry: Entry, trials: int) -> list[dict[str, Any]]:
    """The ``trials`` hyper-parameter points of an entry (see the module docstring for the rule)."""
    keys = list(entry.space)
    grid = [dict(zip(keys, values, strict=True)) for values in itertools.product(*entry.space.values())]
    if len(grid) < trials:
        raise ValueError(f"losses.{entry.name}.space has {len(grid)} point(s), fewer than tune.trials = "
                         f"{trials}: every loss gets the same number of trials, so widen its space")
    if len(grid) == trials:
        return grid
    rng = random.Random(zlib.crc32(entry.name.encode()))
    others = sorted(rng.sample(range(1, len(grid)), trials - 1))
    return [grid[0]] + [grid[i] for i in others]


def point_overrides(point: dict[str, Any]) -> list[str]:
    """``{"train.lr": 0.01, "loss.options.energy_scale": "mean"}`` -> ``["train.lr=0.01", ...]`` (JSON values
    are valid YAML, so strings, lists and numbers all parse back as given)."""
    return [f"{key}={json.dumps(value)}" for key, value in point.items()]

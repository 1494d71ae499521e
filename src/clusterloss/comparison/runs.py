"""One run of a comparison, made once: reuse a finished run, resume a stopped one, refuse mixed settings.

``run_images(config, run_dir)`` trains with ``clusterloss.train.train`` and writes ``final_metrics.json``
(final-epoch metrics on the run's evaluation split + ``train_seconds``). ``check_no_leak`` proves that a
validation (tuning) config sees no class of the final evaluation split.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import torch
import yaml

from ..config import Config
from ..utils.files import atomic_write_text

__all__ = ["check_same_settings", "run_images", "read_done", "check_no_leak", "class_names_of", "write_json"]


def write_json(path: Path, value: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(value, indent=2, sort_keys=True) + "\n")


def check_same_settings(run_dir: Path, config: Config) -> None:
    """Refuse to reuse or resume a run in ``run_dir`` made with other settings than ``config`` (a run that
    got somewhere: ``last.pt`` or ``final_metrics.json``; its ``config.yaml`` is compared key by key)."""
    saved = run_dir / "config.yaml"
    started = (run_dir / "last.pt").exists() or (run_dir / "final_metrics.json").exists()
    if not saved.exists() or not started:
        return
    old = yaml.safe_load(saved.read_text()) or {}
    defaults = Config().to_dict()  # a key added since that run was made had its default value there
    diffs = []
    for section, values in config.to_dict().items():
        for key, value in values.items():
            before = (old.get(section) or {}).get(key, defaults[section][key])
            if before != value:
                diffs.append(f"{section}.{key}: {before!r} -> {value!r}")
    if diffs:
        raise ValueError(f"{run_dir} holds a run made with other settings ({'; '.join(diffs[:6])}); "
                         "choose another output folder or delete that run")


def read_done(run_dir: Path) -> dict[str, float] | None:
    done = run_dir / "final_metrics.json"
    return json.loads(done.read_text()) if done.exists() else None


def run_images(config: Config, run_dir: Path) -> dict[str, float]:
    """Final metrics of one ``clusterloss train`` run in ``run_dir``: trained now, resumed, or reused."""
    from ..train import train  # train pulls in the whole training stack; the stats/report code does not

    run_dir = Path(run_dir)
    check_same_settings(run_dir, config)
    done = read_done(run_dir)
    if done is not None:
        return done
    start = time.perf_counter()
    metrics = train(config, run_dir, resume=(run_dir / "last.pt").exists())
    metrics = {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float))}
    metrics["train_seconds"] = time.perf_counter() - start
    metrics["load_average_1m"] = os.getloadavg()[0]
    metrics.update(margin_statistics(run_dir / "metrics.jsonl"))
    write_json(run_dir / "final_metrics.json", metrics)
    return metrics


def margin_statistics(path: Path) -> dict[str, float]:
    """Mean over the logged training records of the facility-location margin's share of the loss
    (``fl_margin_share``) and of the margin itself (``fl_margin``); empty for other losses."""
    shares, margins = [], []
    if path.exists():
        for line in path.read_text().splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            if record.get("split") == "train" and record.get("margin_share") is not None:
                shares.append(float(record["margin_share"]))
                margins.append(float(record.get("margin", float("nan"))))
    if not shares:
        return {}
    return {"fl_margin_share": sum(shares) / len(shares), "fl_margin": sum(margins) / len(margins)}


def class_names_of(dataset) -> set[str]:
    """Names of the classes that have at least one image in ``dataset`` (an ImageDataset or alike)."""
    return {str(dataset.class_names[int(c)]) for c in torch.unique(dataset.labels).tolist()}


def check_no_leak(tuning, final) -> None:
    """Raise ValueError unless the tuning splits (``tuning.train`` / ``tuning.eval``) contain no class of the
    final evaluation split ``final.eval`` (compared by class name, so readers that number each split's
    classes on their own are covered) and the tuning evaluation is not the final one."""
    seen = class_names_of(tuning.train) | class_names_of(tuning.eval)
    overlap = sorted(seen & class_names_of(final.eval))
    if overlap:
        raise ValueError(f"the tuning split sees {len(overlap)} class(es) of the final evaluation split "
                         f"(e.g. {overlap[:3]}); the fair protocol needs class-disjoint evaluation "
                         "(data.protocol: zero_shot or data.train_classes)")
    if getattr(tuning.eval, "split", "") == getattr(final.eval, "split", None) == "test":
        raise ValueError("the tuning runs evaluate on the test split; set data.validation=true for them")

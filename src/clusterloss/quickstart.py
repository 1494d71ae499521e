"""``clusterloss quickstart`` (``make demo``): train, evaluate and report on bundled data, offline.

* ``omniglot`` (default): Conv-4 with the facility-location loss on Omniglot's official background-small-1
  set, trained on four of its alphabets (``configs/omniglot_conv4.yaml``); evaluated on the 20 official
  20-way one-shot runs (characters of the evaluation alphabets) and on the fifth, unseen alphabet (Latin):
  5-way and 20-way 1-shot episodes, NMI, Recall@1, MAP@R.
* ``digits``: the small convnet on scikit-learn's 8x8 digits, zero-shot 0-4 -> 5-9
  (``configs/digits_convnet.yaml``): a seconds-long check of the pipeline.

Both print the trained network next to two references computed on the same evaluation images and runs —
raw pixels and the same network untrained — and write ``RUN_DIR/report.html``.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import torch

from .config import Config, load_config
from .config_files import find_config
from .utils.files import atomic_write_text

__all__ = ["QUICKSTARTS", "quickstart", "fewshot_reference_metrics", "training_rate"]

# dataset -> (config name, metrics printed)
QUICKSTARTS: dict[str, tuple[str, tuple[str, ...]]] = {
    "omniglot": ("omniglot_conv4", ("oneshot", "5way1shot", "20way1shot", "nmi", "recall@1", "map@r")),
    "digits": ("digits_convnet", ("nmi", "recall@1", "recall@2", "recall@4", "recall@8", "map@r")),
}


def fewshot_reference_metrics(config: Config) -> dict[str, dict[str, float]]:
    """The few-shot metrics of raw pixels and of the untrained network (the run's seed), the rows of
    ``experiments.reference_metrics``; empty rows when the config asks for no few-shot evaluation."""
    from .data.augment import normalize
    from .data.protocols import splits_from_config
    from .metrics.fewshot_eval import fewshot_metrics, model_embedder
    from .models import build_model_from_config, input_normalization

    splits = splits_from_config(config.data)
    evaluation = splits.eval

    def pixels(images: torch.Tensor) -> torch.Tensor:
        return normalize(images, splits.mean, splits.std).flatten(1)

    torch.manual_seed(config.train.seed)
    model = build_model_from_config(config.model, in_channels=int(evaluation.images.shape[1]))
    mean, std = input_normalization(model, splits.mean, splits.std)
    untrained = model_embedder(model, mean, std, batch_size=config.eval.batch_size)
    return {"raw pixels": fewshot_metrics(config, pixels(evaluation.images), evaluation.labels, pixels)[0],
            "untrained network": fewshot_metrics(config, untrained(evaluation.images), evaluation.labels,
                                                 untrained)[0]}


def training_rate(run_dir: Path, batch_size: int) -> float | None:
    """Mean training steps per second over the logged steps of ``metrics.jsonl`` (None if none logged)."""
    path = run_dir / "metrics.jsonl"
    if not path.exists():
        return None
    rates = []
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if record.get("split") == "train" and record.get("images_per_s"):
            rates.append(float(record["images_per_s"]) / batch_size)
    return sum(rates) / len(rates) if rates else None


def quickstart(run_dir: str | Path = "runs/quickstart", overrides: list[str] | None = None,
               dataset: str = "omniglot") -> dict[str, Any]:
    """Train (or reuse a finished run in ``run_dir``), analyse, print and return ``{row name: metrics}``.

    Writes ``references.json`` (raw pixels, untrained network) beside the analysis of ``analyze_run``.
    """
    from .run_lock import run_lock

    if dataset not in QUICKSTARTS:
        raise ValueError(f"quickstart --dataset must be one of {sorted(QUICKSTARTS)}, got {dataset!r}")
    config_name, columns = QUICKSTARTS[dataset]
    run_dir = Path(run_dir)
    config = load_config(find_config(config_name), overrides)
    with run_lock(run_dir, "quickstart"):  # held through training, analysis and the report
        return _quickstart_locked(run_dir, config, dataset, columns)


def _quickstart_locked(run_dir: Path, config: Config, dataset: str, columns: tuple[str, ...]
                       ) -> dict[str, Any]:
    from .analysis import analyze_run
    from .experiments import _epochs_done, check_same_settings, comparison_table, reference_metrics
    from .train import train

    check_same_settings(run_dir, config)
    done_before = _epochs_done(run_dir)
    start = time.perf_counter()
    # A finished quickstart is simply re-analysed; an interrupted one continues.
    train(config, run_dir, resume=(run_dir / "last.pt").exists())
    train_seconds = time.perf_counter() - start
    references = reference_metrics(config)
    for name, extra in fewshot_reference_metrics(config).items():
        references.setdefault(name, {}).update(extra)
    atomic_write_text(run_dir / "references.json", json.dumps(references, indent=2, sort_keys=True) + "\n")
    trained = analyze_run(run_dir, checkpoint="last.pt")  # its report shows references.json too
    rows = {**references, f"trained ({config.loss.name.replace('_', ' ')})": trained}
    t = config.train
    rate = training_rate(run_dir, t.batch_classes * t.batch_samples)
    if done_before is not None and done_before >= t.epochs:
        trained_now = f"reused the finished run in {run_dir} ({done_before} epochs trained earlier, none now)"
    else:
        speed = f", {rate:.1f} steps/s" if rate else ""
        trained_now = f"{t.epochs} epochs in {train_seconds:.1f} s{speed} (with loading and evaluation)"
    if dataset == "omniglot":
        alphabets = ", ".join(config.data.eval_groups or ["(second half)"])
        print(f"\nOmniglot background small 1, zero-shot by alphabet: Conv-4 trained on the other alphabets "
              f"({t.batch_classes} characters x {t.batch_samples} per batch), {trained_now}.\nOne-shot: the "
              f"20 official 20-way runs (400 test items); episodes ({config.eval.episodes} each, "
              f"{config.eval.queries} queries per class), NMI, R@1, MAP@R: the unseen alphabet "
              f"{alphabets}.\n")
    else:
        print(f"\nZero-shot digits (train on 0-4, evaluate on 5-9), {trained_now}:\n")
    print(comparison_table(rows, columns))
    print(f"\nReport: {(run_dir / 'report.html').resolve()}")
    return rows

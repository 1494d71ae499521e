"""The fair protocol (Musgrave et al., "A Metric Learning Reality Check", 2020), one phase after the other:

1. **tune**: for every entry, the same number of trials (``trial_points``), each trained on the validation
   split only (``data.validation=true``: classes carved from the training classes) with ``tune.seeds``;
   the trial with the best mean ``tune.metric`` wins (ties: the earlier trial). Before any run,
   ``check_no_leak`` proves the validation splits hold no class of the final evaluation split.
2. **final**: the chosen settings, seeds ``0 .. final.seeds - 1`` on the full training classes, evaluated
   once (final epoch) on the unseen classes, seed-major (seed 0 of every entry first). No final run starts
   before every entry is tuned.
3. **sweeps** (optional): one-factor studies on the validation split (e.g. gamma, classes per batch).

Runs live under ``runs_dir`` (``runs/evidence/<name>/{tune,final,sweeps}/...``); each writes
``final_metrics.json`` and is never redone. Summaries (``selection.json``, ``compare.json``, ``compare.md``,
``compare.png``) go to ``results_dir`` (``results/<name>/``) and are rewritten after each phase.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..config import Config, load_config
from ..data.protocols import splits_from_config
from ..references import reference_metrics
from .features import FeatureRunner, settings_key
from .report import write_summary
from .runs import check_no_leak, run_images, write_json
from .spec import Entry, Protocol, load_protocol, point_overrides, trial_points
from .top_blocks import TopBlockRunner, pooled_reference

__all__ = ["run_protocol", "run_config", "PHASES"]

PHASES = ("tune", "final", "sweeps")
Runner = Callable[[Config, Path], dict[str, float]]


def run_config(protocol: Protocol, entry: Entry, point: dict[str, Any], seed: int, validation: bool,
               extra: list[str] | None = None) -> Config:
    """The resolved config of one run: base config, protocol ``set``, the entry's loss and ``set``, then
    (validation runs) ``tune.set`` + ``data.validation=true``, the trial point, extra overrides, the seed."""
    overrides = [*protocol.set, f"loss.name={entry.loss}", "loss.options={}", *entry.set]
    if validation:
        overrides += [*protocol.tune_set, "data.validation=true"]
    else:
        overrides += ["data.validation=false"]
    overrides += [*point_overrides(point), *(extra or []), f"train.seed={seed}"]
    return load_config(protocol.config, overrides)


def _select(trials: list[dict[str, Any]], metric: str, entry: str) -> int:
    best, best_value = 0, None
    for i, trial in enumerate(trials):
        values = [run.get(metric) for run in trial["runs"]]
        if any(v is None for v in values):
            raise ValueError(f"tune.metric {metric!r} is missing from the validation runs of {entry} "
                             f"(they report {sorted(trial['runs'][0])})")
        trial["mean"] = sum(values) / len(values)
        if best_value is None or trial["mean"] > best_value:
            best, best_value = i, trial["mean"]
    return best


def write_reference(protocol: Protocol, runner: Runner, path: Path) -> None:
    """``reference.json``: what the runs start from, on the validation and on the final evaluation split,
    with the runs' evaluation. Top-block runs: the untrained backbone's pooled features (from the cache).
    Image runs: raw pixels, the untrained network of seed 0 and, pretrained, its pooled features
    (``references.reference_metrics``: a pass over the evaluation images, so written once per settings)."""
    final = run_config(protocol, protocol.entries[protocol.reference], {}, 0, validation=False)
    tuning = run_config(protocol, protocol.entries[protocol.reference], {}, 0, validation=True)
    if isinstance(runner, TopBlockRunner):
        write_json(path, {
            "what": "the untrained backbone's pooled, L2-normalized features (no head), same cache and "
                    "evaluation code as the runs", "validation": pooled_reference(runner, tuning, True),
            "final": pooled_reference(runner, final, False)})
        return
    key = settings_key(final, seed=final.train.seed, eval=[c.to_dict()["eval"] for c in (final, tuning)])
    if path.exists() and json.loads(path.read_text()).get("settings") == key:
        return
    write_json(path, {
        "what": "what training starts from (seed 0's untrained network; raw pixels; a pretrained backbone's "
                "pooled, L2-normalized features), same evaluation code as the runs",
        "settings": key, "validation": reference_metrics(tuning), "final": reference_metrics(final)})


def _log(message: str) -> None:
    print(f"[evidence {time.strftime('%H:%M:%S')}] {message}", flush=True)


def run_protocol(path: str | Path, runs_dir: str | Path | None = None, results_dir: str | Path | None = None,
                 phases: tuple[str, ...] = PHASES, only: list[str] | None = None,
                 runner: Runner | None = None) -> dict[str, Any]:
    """Run (or resume) the protocol in ``path``; returns the summary written to ``compare.json``.

    ``phases`` limits what runs now (``final`` needs every selected entry tuned); ``only`` limits the
    entries. ``runner`` replaces the trainer (tests; the frozen-feature trainer).
    """
    protocol = load_protocol(path)
    bad = [p for p in phases if p not in PHASES]
    if bad:
        raise ValueError(f"unknown phase(s) {bad}; choose from {PHASES}")
    names = list(protocol.entries) if not only else only
    unknown = [n for n in names if n not in protocol.entries]
    if unknown:
        raise ValueError(f"unknown entry(ies) {unknown}; the protocol has {list(protocol.entries)}")
    runs_dir = Path(runs_dir) if runs_dir is not None else Path("runs") / "evidence" / protocol.name
    results_dir = Path(results_dir) if results_dir is not None else Path("results") / protocol.name
    if runner is None:
        entry = protocol.entries[protocol.reference]
        point = trial_points(entry, protocol.trials)[0]
        final = run_config(protocol, entry, point, 0, validation=False)
        tuning = run_config(protocol, entry, point, 0, validation=True)
        if protocol.trainer in ("features", "top_blocks"):  # leak check + cache
            kind = FeatureRunner if protocol.trainer == "features" else TopBlockRunner
            runner = kind(protocol, runs_dir / "features", final, tuning)
        else:
            check_no_leak(splits_from_config(tuning.data), splits_from_config(final.data))
            runner = run_images
    tuned: dict[str, Any] = {}
    for name in names:  # phase 1: validation split only
        entry = protocol.entries[name]
        trials = []
        for i, point in enumerate(trial_points(entry, protocol.trials)):
            runs = []
            for seed in protocol.tune_seeds:
                run_dir = runs_dir / "tune" / name / f"trial{i}" / f"seed{seed}"
                if "tune" not in phases and not (run_dir / "final_metrics.json").exists():
                    break
                _log(f"tune {name} trial {i} {point} seed {seed}")
                runs.append(runner(run_config(protocol, entry, point, seed, validation=True), run_dir))
            if len(runs) == len(protocol.tune_seeds):
                trials.append({"point": point, "runs": runs})
        if len(trials) == protocol.trials:
            chosen = _select(trials, protocol.tune_metric, name)
            tuned[name] = {"trials": trials, "chosen": chosen, "point": trials[chosen]["point"]}
    selection = {name: {"point": t["point"], "trial": t["chosen"],
                        "validation": [{"point": tr["point"], protocol.tune_metric: tr["mean"]}
                                       for tr in t["trials"]]} for name, t in tuned.items()}
    write_json(results_dir / "selection.json", {"metric": protocol.tune_metric, "entries": selection})

    finals: dict[str, list[dict[str, float]]] = {}
    # Phase 2 starts new runs only once every entry has its settings; finished ones are always read back.
    may_start = "final" in phases and all(n in tuned for n in names)
    # Seed-major (seed 0 of every entry, then seed 1, ...): a budget cut short leaves every entry equally
    # many seeds; each entry keeps its seeds 0..n-1 in order (a gap stops that entry).
    stopped: set[str] = set()
    for seed in range(protocol.final_seeds):
        for name in names:
            if name not in tuned or name in stopped:
                continue
            run_dir = runs_dir / "final" / name / f"seed{seed}"
            if not may_start and not (run_dir / "final_metrics.json").exists():
                stopped.add(name)
                continue
            _log(f"final {name} {tuned[name]['point']} seed {seed}")
            entry = protocol.entries[name]
            metrics = runner(run_config(protocol, entry, tuned[name]["point"], seed, False), run_dir)
            finals.setdefault(name, []).append(metrics)
    finals = {name: finals[name] for name in names if name in finals}

    sweeps: dict[str, Any] = {}
    for sweep in protocol.sweeps:  # phase 3: one-factor studies, validation only
        rows = []
        for name in sweep.losses:
            if name not in tuned:
                continue
            for value in sweep.points:
                runs = []
                for seed in sweep.seeds:
                    tag = "_".join(f"{k.split('.')[-1]}{v}" for k, v in value.items())
                    run_dir = runs_dir / "sweeps" / sweep.name / name / tag / f"seed{seed}"
                    if "sweeps" not in phases and not (run_dir / "final_metrics.json").exists():
                        break
                    _log(f"sweep {sweep.name} {name} {value} seed {seed}")
                    point = {**tuned[name]["point"], **value}
                    config = run_config(protocol, protocol.entries[name], point, seed, validation=True)
                    runs.append(runner(config, run_dir))
                if runs:
                    rows.append({"loss": name, "value": value, "runs": runs})
        sweeps[sweep.name] = rows
    summary = write_summary(protocol, tuned, finals, sweeps, results_dir)
    if finals and (isinstance(runner, TopBlockRunner) or runner is run_images):
        write_reference(protocol, runner, results_dir / "reference.json")
    _log(f"written: {results_dir / 'compare.md'}")
    return summary


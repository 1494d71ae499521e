"""The ``quickstart`` and ``compare`` commands: whole experiments built from train() and the analysis tools.

``quickstart`` (in ``quickstart.py``) trains the facility-location loss on bundled Omniglot (or digits), then
writes the analysis of the run and prints its metrics next to two references computed on the same evaluation
images: raw pixels, and the same network untrained (``reference_metrics``).

``compare`` trains several losses under one config (same data, model, budget, protocol and seeds) and writes a
paper-style table (mean ± std over seeds) as Markdown and JSON, plus a bar chart. Each (loss, seed) run lives
in its own folder; a finished run is never redone and an interrupted one is resumed.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path
from typing import Any

from .checkpoint import load_checkpoint
from .comparison.runs import check_same_settings
from .config import load_config
from .config_files import find_config  # noqa: F401  (a config path, or a packaged config's name)
from .references import reference_metrics  # noqa: F401  (the quickstart's and compare's reference rows)
from .run_lock import run_lock
from .utils.files import atomic_write_text

TABLE_METRICS = ("nmi", "recall@1", "recall@2", "recall@4", "recall@8", "map@r")
DEFAULT_LOSSES = ("facility_location", "triplet_semihard", "lifted_structure", "npairs", "multi_similarity")


def _write_json(path: Path, value: Any) -> None:
    atomic_write_text(path, json.dumps(value, indent=2, sort_keys=True) + "\n")


# -- quickstart ------------------------------------------------------------------------------------
def comparison_table(rows: dict[str, dict[str, Any]], metrics: tuple[str, ...] = TABLE_METRICS) -> str:
    """A Markdown table, one row per entry; a value is a float, or a (mean, std) pair shown as mean ± std."""
    from .viz.comparison import metric_label  # loads matplotlib: not at import, so the CLI parser stays light

    def cell(value: Any) -> str:
        if isinstance(value, (tuple, list)):
            return f"{100 * value[0]:.2f} ± {100 * value[1]:.2f}"
        return "—" if value is None else f"{100 * value:.2f}"

    names = [""] + list(rows)
    columns = [[metric_label(m)] + [cell(values.get(m)) for values in rows.values()] for m in metrics]
    table = [names] + columns
    widths = [max(len(text) for text in column) for column in table]
    lines = []
    for r in range(len(names)):
        padded = [column[r].ljust(w) if c == 0 else column[r].rjust(w)
                  for c, (column, w) in enumerate(zip(table, widths, strict=True))]
        lines.append("| " + " | ".join(padded) + " |")
        if r == 0:
            lines.append("|" + "|".join("-" * (w + 1) + (":" if c else "-")
                                        for c, w in enumerate(widths)) + "|")
    return "\n".join(lines)


def quickstart(run_dir: str | Path = "runs/quickstart", overrides: list[str] | None = None,
               dataset: str = "omniglot") -> dict[str, Any]:
    """``clusterloss quickstart``: see :func:`clusterloss.quickstart.quickstart` (Omniglot, or digits)."""
    from .quickstart import quickstart as run_quickstart

    return run_quickstart(run_dir, overrides, dataset)


def _epochs_done(run_dir: Path) -> int | None:
    try:
        return int(load_checkpoint(run_dir / "last.pt").get("epoch", 0))
    except (ValueError, TypeError):  # missing or unreadable: train() resumes from an intact older one
        return None


# -- compare ---------------------------------------------------------------------------------------
def _per_loss_overrides(per_loss: list[str], loss: str) -> list[str]:
    """``triplet_semihard:loss.options.margin=0.1`` -> ``loss.options.margin=0.1`` for that loss only."""
    chosen = []
    for text in per_loss:
        name, sep, override = text.partition(":")
        if not sep or "=" not in override or "." not in override.split("=", 1)[0]:
            raise ValueError(f"--per-loss looks like LOSS:section.key=value (e.g. "
                             f"triplet_semihard:loss.options.margin=0.1), got {text!r}")
        if name == loss:
            chosen.append(override)
    return chosen


def summarize(runs: list[dict[str, float]]) -> dict[str, tuple[float, float]]:
    """Mean and (population) standard deviation over seeds of every metric the runs share."""
    keys = [k for k in runs[0] if all(k in r for r in runs) and isinstance(runs[0][k], (int, float))]
    summary = {}
    for key in keys:
        values = [float(r[key]) for r in runs]
        mean = sum(values) / len(values)
        summary[key] = (mean, math.sqrt(sum((v - mean) ** 2 for v in values) / len(values)))
    return summary


def compare(config_path: str | Path, losses: list[str], seeds: int = 3, out: str | Path | None = None,
            overrides: list[str] | None = None, per_loss: list[str] | None = None) -> dict[str, Any]:
    """Train every loss in ``losses`` for seeds 0..seeds-1 under one config; write compare.{md,json,png}.

    The metrics of a run are those of its final epoch on the evaluation split (never the best epoch: picking
    epochs on the evaluation classes would leak them into the result).
    """
    from .losses import LOSSES

    config_path = find_config(config_path)
    unknown = [name for name in losses if name not in LOSSES]
    if unknown:
        raise ValueError(f"unknown loss(es) {unknown}; choose from {sorted(LOSSES)}")
    if seeds < 1:
        raise ValueError(f"--seeds must be >= 1, got {seeds}")
    out = Path(out) if out is not None else Path("runs") / "compare" / config_path.stem
    with run_lock(out, "compare"):  # one compare per output folder (each train() locks its own run too)
        return _compare_locked(config_path, losses, seeds, out, list(overrides or []), per_loss)


def _compare_locked(config_path: Path, losses: list[str], seeds: int, out: Path, base: list[str],
                    per_loss: list[str] | None) -> dict[str, Any]:
    from .train import train
    from .viz.comparison import plot_comparison

    results: dict[str, list[dict[str, float]]] = {}
    for loss in losses:
        for seed in range(seeds):
            run_dir = out / loss / f"seed{seed}"
            done = run_dir / "final_metrics.json"
            config = load_config(config_path, [*base, f"loss.name={loss}", "loss.options={}",
                                               f"train.seed={seed}",
                                               *_per_loss_overrides(list(per_loss or []), loss)])
            check_same_settings(run_dir, config)
            if done.exists():
                print(f"[compare] {loss} seed {seed}: finished earlier, reusing {done}")
                results.setdefault(loss, []).append(json.loads(done.read_text()))
                continue
            print(f"[compare] {loss} seed {seed} -> {run_dir}")
            start = time.perf_counter()
            metrics = train(config, run_dir, resume=(run_dir / "last.pt").exists())
            metrics = {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float))}
            metrics["train_seconds"] = time.perf_counter() - start
            _write_json(done, metrics)
            results.setdefault(loss, []).append(metrics)
    summary = {loss: summarize(runs) for loss, runs in results.items()}
    title = f"{config_path.stem}: {seeds} seed(s), final-epoch metrics on the evaluation split (%)"
    table = comparison_table(summary)
    (out / "compare.md").write_text(f"{title}\n\n{table}\n")
    _write_json(out / "compare.json", {"config": str(config_path), "overrides": base, "seeds": seeds,
                                       "per_loss": list(per_loss or []),
                                       "summary": summary, "runs": results})
    plot_comparison(summary, out / "compare.png", metrics=TABLE_METRICS, title=title)
    print(f"\n{title}\n\n{table}\n\nWritten: {out / 'compare.md'}, {out / 'compare.json'}, "
          f"{out / 'compare.png'}")
    return {"summary": summary, "runs": results}


# -- CLI -------------------------------------------------------------------------------------------
def _run_quickstart(args: argparse.Namespace) -> int:
    quickstart(args.run_dir, args.set, args.dataset)
    return 0


def _run_compare(args: argparse.Namespace) -> int:
    if args.protocol:  # the fair protocol (issue 13): tune on validation classes, then seeds on unseen ones
        from .comparison.protocol import run_protocol  # scipy + matplotlib: loaded only for this command

        phases = tuple(p.strip() for p in args.phases.split(",") if p.strip())
        only = [n.strip() for n in args.only.split(",") if n.strip()] if args.only else None
        run_protocol(args.protocol, args.out, args.results, phases=phases, only=only)
        return 0
    if not args.config:
        raise ValueError("compare needs --config FILE (plain comparison) or --protocol FILE (fair protocol)")
    losses = [name.strip() for name in args.losses.split(",") if name.strip()]
    compare(args.config, losses, args.seeds, args.out, args.set, args.per_loss)
    return 0


def add_subcommands(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("quickstart",
                              help="train + evaluate + report on bundled Omniglot (or digits); no download")
    p.add_argument("--dataset", default="omniglot", choices=("omniglot", "digits"),
                   help="omniglot (default: configs/omniglot_conv4.yaml, the official one-shot runs) or "
                        "digits (configs/digits_convnet.yaml, seconds)")
    p.add_argument("--run-dir", default="runs/quickstart", help="output folder (default: runs/quickstart)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a key of the quickstart's config, e.g. train.epochs=3")
    p.set_defaults(func=_run_quickstart)

    p = subparsers.add_parser("compare", help="train several losses under one config and tabulate them")
    p.add_argument("--config", default=None, help="YAML config (path, or a name from configs/)")
    p.add_argument("--protocol", default=None, metavar="FILE",
                   help="fair protocol file (configs/compare/*.yaml): tune every loss with the same number "
                        "of trials on validation classes, then final seeds on the unseen classes")
    p.add_argument("--phases", default="tune,final,sweeps", help="with --protocol: phases to run now")
    p.add_argument("--only", default=None, help="with --protocol: comma-separated entries to run")
    p.add_argument("--results", default=None, help="with --protocol: summary folder (default results/<name>)")
    p.add_argument("--losses", default=",".join(DEFAULT_LOSSES), help="comma-separated loss names")
    p.add_argument("--seeds", type=int, default=3, help="seeds 0..N-1 per loss (default 3)")
    p.add_argument("--out", default=None, help="output folder (default: runs/compare/<config name>; with "
                                                "--protocol runs/evidence/<name>)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key for every run, e.g. train.epochs=10")
    p.add_argument("--per-loss", action="append", default=[], metavar="LOSS:KEY=VALUE",
                   help="override for one loss only, e.g. triplet_semihard:loss.options.margin=0.1 or "
                        "npairs:train.lr=0.01")
    p.set_defaults(func=_run_compare)

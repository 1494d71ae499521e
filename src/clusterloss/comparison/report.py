"""Summaries of a fair comparison: ``compare.json`` (every number), ``compare.md`` (tables), ``compare.png``.

Values are fractions in [0, 1] in the JSON and percentages in the Markdown. Paired differences are
``entry - reference`` over the same seeds; the verdict of a metric is "wins" / "loses" (for the reference)
when the paired t-test gives p < 0.05, else "no significant difference".
"""

from __future__ import annotations

import os
import platform
import time
from pathlib import Path
from typing import Any

import torch

from ..viz.comparison import metric_label, plot_comparison
from .runs import write_json
from .spec import Protocol
from .stats import describe, paired

__all__ = ["write_summary", "verdict", "markdown_table", "summary_table"]


def _pct(value: float | None, digits: int = 2) -> str:
    return "—" if value is None else f"{100 * value:.{digits}f}"


def verdict(reference: str, metric: str, comparison: dict[str, Any], alpha: float = 0.05) -> str:
    """Plain words for one paired comparison (``comparison`` from ``stats.paired``, diff = other - ref)."""
    d, ci, p = comparison["mean_diff"], comparison["ci95"], comparison["t_p"]
    half = "" if ci is None else f" ± {100 * (ci[1] - ci[0]) / 2:.2f}"
    label = metric_label(metric)
    if p is None:
        return f"one seed only: {reference} {'-' if d > 0 else '+'}{100 * abs(d):.2f} on {label}, no test"
    if p < alpha:
        side = "loses" if d > 0 else "wins"
        return f"{reference} {side} on {label} by {100 * abs(d):.2f}{half} (p = {p:.3g})"
    return f"no significant difference on {label} ({100 * -d:+.2f}{half} for {reference}, p = {p:.2g})"


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(r[c])) for r in [header, *rows]) for c in range(len(header))]
    lines = ["| " + " | ".join(str(h).ljust(w) for h, w in zip(header, widths, strict=True)) + " |",
             "|" + "|".join("-" * (w + 1) + (":" if c else "-") for c, w in enumerate(widths)) + "|"]
    for row in rows:
        lines.append("| " + " | ".join(str(v).ljust(w) if c == 0 else str(v).rjust(w)
                                       for c, (v, w) in enumerate(zip(row, widths, strict=True))) + " |")
    return "\n".join(lines)


def _point_text(point: dict[str, Any]) -> str:
    short = {k.removeprefix("loss.options.").removeprefix("loss."): v for k, v in point.items()}
    return ", ".join(f"{k}={v}" for k, v in short.items()) or "(defaults)"


def _machine() -> dict[str, Any]:
    return {"cpus": os.cpu_count(), "processor": platform.processor() or platform.machine(),
            "torch": torch.__version__, "threads": torch.get_num_threads(),
            "load_average_at_summary": round(os.getloadavg()[0], 2)}


def write_summary(protocol: Protocol, tuned: dict[str, Any], finals: dict[str, list[dict[str, float]]],
                  sweeps: dict[str, Any], results_dir: Path) -> dict[str, Any]:
    """Write compare.{json,md,png} into ``results_dir`` from the runs done so far; return the JSON dict."""
    metrics = list(protocol.metrics)
    ref = protocol.reference
    summary = {name: {m: describe([r[m] for r in runs]) for m in metrics if all(r.get(m) is not None
                                                                                 for r in runs)}
               for name, runs in finals.items()}
    timing = {name: describe([r["train_seconds"] for r in runs]) for name, runs in finals.items()
              if all("train_seconds" in r for r in runs)}
    tune_seconds = {name: sum(r.get("train_seconds", 0.0) for tr in t["trials"] for r in tr["runs"])
                    for name, t in tuned.items()}
    comparisons: dict[str, dict[str, Any]] = {}
    # Paired over the seeds both have (seeds 0..n-1; a cut-short budget leaves fewer than final.seeds).
    if ref in finals:
        for name, runs in finals.items():
            n = min(len(runs), len(finals[ref]))
            if name == ref or n < 2:
                continue
            comparisons[name] = {m: paired([r[m] for r in runs[:n]], [r[m] for r in finals[ref][:n]])
                                 for m in metrics if m in summary[name] and m in summary[ref]}
    result = {
        "protocol": {"name": protocol.name, "file": str(protocol.path), "config": str(protocol.config),
                     "trainer": protocol.trainer, "set": protocol.set, "reference": ref,
                     "trials_per_loss": protocol.trials, "tune_seeds": protocol.tune_seeds,
                     "tune_metric": protocol.tune_metric, "tune_set": protocol.tune_set,
                     "final_seeds": protocol.final_seeds, "description": protocol.description,
                     "entries": {n: {"loss": e.loss, "set": e.set, "space": e.space}
                                 for n, e in protocol.entries.items()}},
        "machine": _machine(), "written": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
        "selection": {n: {"point": t["point"], "trial": t["chosen"],
                          "trials": [{"point": tr["point"], "mean": tr["mean"], "runs": tr["runs"]}
                                     for tr in t["trials"]]} for n, t in tuned.items()},
        "tune_seconds": tune_seconds, "final_runs": finals, "summary": summary, "train_seconds": timing,
        "paired_vs_reference": comparisons,
        "verdicts": {n: {m: verdict(ref, m, c) for m, c in per.items()} for n, per in comparisons.items()},
        "sweeps": sweeps,
    }
    results_dir.mkdir(parents=True, exist_ok=True)
    write_json(results_dir / "compare.json", result)
    (results_dir / "compare.md").write_text(_markdown(protocol, result))
    if summary:
        chart = {n: {m: (s["mean"], 0.0 if s["ci95"] is None else (s["ci95"][1] - s["ci95"][0]) / 2)
                     for m, s in per.items()} for n, per in summary.items()}
        plot_comparison(chart, results_dir / "compare.png", metrics=metrics,
                        title=f"{protocol.name}: final runs on unseen classes, mean over "
                              f"{protocol.final_seeds} seeds, error bars = 95 % CI")
    return result


def summary_table(protocol: Protocol, result: dict[str, Any]) -> str:
    """One row per loss: chosen settings, mean ± std of each metric, the paired difference to the reference
    on the tuning metric (95 % CI, t-test p), seconds per run (the table the README shows)."""
    ref, key = protocol.reference, protocol.tune_metric
    header = ["loss (seeds)", "chosen on validation", *[metric_label(m) for m in protocol.metrics],
              f"Δ{metric_label(key)} vs {ref} [95 % CI], p", "s / run"]
    rows = []
    for name, per in result["summary"].items():
        cells = [f"{_pct(per[m]['mean'])} ± {_pct(per[m]['std'])}" if m in per else "—"
                 for m in protocol.metrics]
        c = result["paired_vs_reference"].get(name, {}).get(key)
        diff = "—" if c is None else (f"{100 * c['mean_diff']:+.2f}" + (
            "" if c["ci95"] is None else f" [{100 * c['ci95'][0]:+.2f}, {100 * c['ci95'][1]:+.2f}]") +
            ("" if c["t_p"] is None else f", p = {c['t_p']:.2g}") +
            ("" if c["n"] == protocol.final_seeds else f" (n = {c['n']})"))
        seconds = result["train_seconds"].get(name)
        rows.append([f"{name} ({len(result['final_runs'][name])})",
                     _point_text(result["selection"].get(name, {}).get("point", {})), *cells, diff,
                     "—" if seconds is None else f"{seconds['mean']:.0f}"])
    return markdown_table(header, rows)


def _markdown(protocol: Protocol, result: dict[str, Any]) -> str:
    ref, metric = protocol.reference, protocol.tune_metric
    out = [f"# {protocol.name}", ""]
    if protocol.description:
        out += [protocol.description.strip(), ""]
    m = result["machine"]
    out += [f"Protocol `{protocol.path}` (base config `{protocol.config}`, trainer `{protocol.trainer}`, "
            f"overrides {protocol.set or 'none'}). Machine: {m['cpus']} CPUs ({m['processor']}), torch "
            f"{m['torch']}, load average {m['load_average_at_summary']} when this summary was written. "
            f"Written {result['written']}.", ""]
    if result["summary"]:
        out += [summary_table(protocol, result), ""]
    out += [f"## Tuning: {protocol.trials} trials per loss on the validation split, seeds "
            f"{protocol.tune_seeds}, chosen by validation {metric_label(metric)}", ""]
    rows = []
    for name, sel in result["selection"].items():
        values = [tr["mean"] for tr in sel["trials"]]
        rows.append([name, _point_text(sel["point"]), _pct(values[sel["trial"]]),
                     f"{_pct(min(values))}–{_pct(max(values))}", f"{result['tune_seconds'][name]:.0f}"])
    out += [markdown_table(["loss", "chosen", f"val {metric_label(metric)}", "range over trials",
                            "tuning s"], rows), ""]
    if result["summary"]:
        out += [f"## Final: chosen settings, seeds 0-{protocol.final_seeds - 1}, full training classes, "
                "evaluated once on the unseen classes (final epoch), % (mean ± std [95 % CI])", ""]
        rows = []
        for name, per in result["summary"].items():
            cells = []
            for key in protocol.metrics:
                s = per.get(key)
                ci = "" if s is None or s["ci95"] is None else \
                    f" [{_pct(s['ci95'][0], 1)}, {_pct(s['ci95'][1], 1)}]"
                cells.append("—" if s is None else f"{_pct(s['mean'])} ± {_pct(s['std'])}{ci}")
            seconds = result["train_seconds"].get(name)
            rows.append([f"{name} (n={len(result['final_runs'][name])})", *cells,
                         "—" if seconds is None else f"{seconds['mean']:.1f} ± {seconds['std']:.1f}"])
        out += [markdown_table(["loss", *[metric_label(k) for k in protocol.metrics], "s / run"], rows), ""]
    if result["paired_vs_reference"]:
        out += [f"## Paired against {ref} (the seeds both have; difference = loss − {ref}, in points)", ""]
        rows = []
        for name, per in result["paired_vs_reference"].items():
            for key, c in per.items():
                ci = "—" if c["ci95"] is None else f"[{100 * c['ci95'][0]:+.2f}, {100 * c['ci95'][1]:+.2f}]"
                rows.append([name, metric_label(key), f"{100 * c['mean_diff']:+.2f}", ci,
                             "—" if c["t_p"] is None else f"{c['t_p']:.3g}", f"{c['sign_p']:.3g}",
                             f"{c['wins']}/{c['losses']}/{c['ties']}", result["verdicts"][name][key]])
        out += [markdown_table(["loss", "metric", "mean diff", "95 % CI", "t-test p", "sign p", "W/L/T",
                                "verdict"], rows), ""]
    for sweep, rows_in in result["sweeps"].items():
        if not rows_in:
            continue
        out += [f"## Sweep `{sweep}` (validation split only, validation {metric_label(metric)})", ""]
        rows = []
        for row in rows_in:
            s = describe([r[metric] for r in row["runs"]])
            share = [r["fl_margin_share"] for r in row["runs"] if r.get("fl_margin_share") is not None]
            rows.append([row["loss"], _point_text(row["value"]), f"{_pct(s['mean'])} ± {_pct(s['std'])}",
                         str(s["n"]), "—" if not share else f"{100 * sum(share) / len(share):.1f}"])
        out += [markdown_table(["loss", "value", f"val {metric_label(metric)}", "seeds",
                                "margin share of loss %"], rows), ""]
    return "\n".join(out) + "\n"

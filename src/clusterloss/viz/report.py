"""One self-contained ``report.html`` per run: header, metrics table, curves, t-SNE, retrieval grid, config.

Images are embedded as base64 data URIs and the CSS is inline, so the file can be mailed or archived alone.
Scores (NMI, Recall@K, MAP@R, ...) are shown in percent with two decimals, as the terminal prints them; an
undefined score (``None``, e.g. every class a singleton) is shown as such with its reason.
"""

from __future__ import annotations

import base64
import datetime as _dt
import html
import math
from collections.abc import Mapping
from pathlib import Path

import yaml

__all__ = ["render_report", "write_report"]

# Display names and order of the headline metrics; other numeric keys follow in the given order.
METRIC_LABELS = {
    "nmi": "NMI", "ami": "AMI", "recall@1": "Recall@1", "recall@2": "Recall@2", "recall@4": "Recall@4",
    "recall@8": "Recall@8", "precision@1": "Precision@1", "r_precision": "R-Precision", "map@r": "MAP@R",
    # few-shot (metrics/fewshot.py): official Omniglot runs and N-way K-shot episodes on the evaluation split
    "oneshot": "One-shot (20 official runs)", "5way1shot": "5-way 1-shot", "20way1shot": "20-way 1-shot",
    "5way5shot": "5-way 5-shot", "5way5shot_ncm": "5-way 5-shot (class means)",
}
_FEWSHOT_CARDS = ("oneshot", "20way1shot")

CSS = """
:root { --ink:#1f2328; --muted:#656d76; --line:#d0d7de; --bg:#f6f8fa; --accent:#0b6e4f; }
* { box-sizing: border-box; }
body { margin:0; font:15px/1.5 -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; color:var(--ink);
       background:#fff; }
header { background:linear-gradient(120deg,#0b6e4f,#155e75); color:#fff; padding:28px 40px 22px; }
header h1 { margin:0 0 6px; font-size:28px; font-weight:600; letter-spacing:-0.3px; }
header .tags span { display:inline-block; background:rgba(255,255,255,.16); border-radius:999px;
       padding:2px 12px; margin:4px 6px 0 0; font-size:13px; }
header .when { opacity:.75; font-size:12px; margin-top:8px; }
main { max-width:1180px; margin:0 auto; padding:8px 40px 40px; }
section { margin-top:30px; }
h2 { font-size:19px; font-weight:600; border-bottom:1px solid var(--line); padding-bottom:6px;
     margin:0 0 14px; }
.cards { display:flex; flex-wrap:wrap; gap:12px; }
.card { flex:1 1 130px; background:var(--bg); border:1px solid var(--line); border-radius:10px;
        padding:12px 16px; }
.card .v { font-size:26px; font-weight:600; color:var(--accent); font-variant-numeric:tabular-nums; }
.card .k { color:var(--muted); font-size:13px; }
table { border-collapse:collapse; width:100%; max-width:640px; font-variant-numeric:tabular-nums; }
th, td { text-align:left; padding:7px 12px; border-bottom:1px solid var(--line); }
th { background:var(--bg); font-weight:600; }
td.num { text-align:right; font-family:ui-monospace, SFMono-Regular, Menlo, monospace; }
figure { margin:0; }
figure img { max-width:100%; border:1px solid var(--line); border-radius:8px; }
figcaption { color:var(--muted); font-size:13px; margin-top:4px; }
details summary { cursor:pointer; color:var(--accent); }
pre { background:var(--bg); border:1px solid var(--line); border-radius:8px; padding:14px; overflow:auto;
      font-size:13px; }
.missing { color:var(--muted); font-style:italic; }
footer { color:var(--muted); font-size:12px; text-align:center; padding:20px; }
"""


def _img_tag(path: Path | None, alt: str) -> str:
    if path is None or not Path(path).exists():
        return f'<p class="missing">{html.escape(alt)}: not available</p>'
    data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def _is_score(key: str) -> bool:
    key = key.removesuffix("_std").removesuffix("_ci95")
    return key in METRIC_LABELS or key.startswith("recall@") or "way" in key and "shot" in key


def _fmt(value, key: str = "") -> str:
    if value is None:
        return "undefined"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return html.escape(str(value))
    if _is_score(key):  # a fraction in [0, 1], shown in percent like the terminal
        return "undefined" if math.isnan(value) else f"{100 * value:.2f}"
    if isinstance(value, int):
        return f"{value:,}"
    return "nan" if math.isnan(value) else f"{value:.4f}"


def _metrics_table(metrics: Mapping) -> str:
    keys = [k for k in METRIC_LABELS if k in metrics]
    keys += [k for k in metrics if k not in METRIC_LABELS and not k.endswith("_std")
             and k.startswith("recall@")]
    undefined = metrics.get("undefined") or {}
    rows = []
    for key in keys:
        std = metrics.get(f"{key}_std")
        std = metrics.get(f"{key}_ci95", std)  # few-shot episodes: 95 % confidence interval
        spread = f" ± {_fmt(std, key)}" if isinstance(std, (int, float)) else ""
        why = f" ({html.escape(str(undefined[key]))})" if metrics[key] is None and key in undefined else ""
        rows.append(f"<tr><td>{html.escape(METRIC_LABELS.get(key, key))}</td>"
                    f'<td class="num">{_fmt(metrics[key], key)}{spread}{why}</td></tr>')
    extra = [k for k in metrics if k not in keys and not k.endswith(("_std", "_ci95")) and k != "undefined"
             and not isinstance(metrics[k], (list, dict))]  # e.g. oneshot_per_run: in metrics.json only
    for key in extra:
        rows.append(f"<tr><td>{html.escape(key)}</td><td class=\"num\">{_fmt(metrics[key], key)}</td></tr>")
    head = "<table><tr><th>metric</th><th style='text-align:right'>value</th></tr>"
    return head + "".join(rows) + "</table>"


def _cards(metrics: Mapping) -> str:
    shown = [k for k in _FEWSHOT_CARDS if isinstance(metrics.get(k), float)]
    shown += ["nmi", "recall@1", "map@r", "ami"]
    cards = [(k, METRIC_LABELS[k], metrics[k]) for k in shown if k in metrics]
    return '<div class="cards">' + "".join(
        f'<div class="card"><div class="v">{_fmt(v, key)}</div><div class="k">{html.escape(k)} (%)</div>'
        "</div>" for key, k, v in cards) + "</div>"


def _references_table(references: Mapping[str, Mapping], metrics: Mapping) -> str:
    keys = [k for k in ("oneshot", "5way1shot", "20way1shot", "nmi", "recall@1", "recall@2", "recall@4",
                        "recall@8", "map@r") if k in metrics]
    head = "<table style='max-width:900px'><tr><th></th>" + "".join(
        f"<th style='text-align:right'>{html.escape(METRIC_LABELS.get(k, k))}</th>" for k in keys) + "</tr>"
    rows = [(name, values, False) for name, values in references.items()] + [("this run", metrics, True)]
    body = "".join(
        f"<tr><td>{'<b>' if bold else ''}{html.escape(name)}{'</b>' if bold else ''}</td>" + "".join(
            f'<td class="num">{_fmt(values[k], k) if k in values else "—"}</td>' for k in keys) + "</tr>"
        for name, values, bold in rows)
    return head + body + "</table>"


def render_report(
    *,
    run_name: str,
    config: Mapping | None,
    metrics: Mapping | None,
    images: Mapping[str, Path | None],
    subtitle: str | None = None,
    references: Mapping[str, Mapping] | None = None,
) -> str:
    """HTML text of the report.

    Args:
        run_name: shown as the page title.
        config: the resolved run config as a plain dict (sections data / model / loss / train / eval).
        metrics: flat metric dict as returned by ``evaluate_embeddings``.
        images: {"curves": png, "tsne": png, "retrieval": png}; missing or None entries are noted, not fatal.
        subtitle: optional line under the title (e.g. the checkpoint used).
        references: optional ``{name: metrics}`` computed on the same evaluation images (e.g. raw pixels,
            the untrained network), shown in a table next to this run's metrics.
    """
    config = dict(config or {})
    data, model, loss = (config.get(s, {}) or {} for s in ("data", "model", "loss"))
    tags = [f"dataset: {data.get('name', '?')}", f"protocol: {data.get('protocol', '?')}",
            f"model: {model.get('name', '?')} (dim {model.get('embedding_dim', '?')})",
            f"loss: {loss.get('name', '?')}"]
    when = _dt.datetime.now().strftime("%Y-%m-%d %H:%M")
    parts = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>{html.escape(run_name)} — clusterloss report</title><style>{CSS}</style></head><body>",
        f"<header><h1>{html.escape(run_name)}</h1><div class='tags'>",
        "".join(f"<span>{html.escape(t)}</span>" for t in tags),
        f"</div><div class='when'>{html.escape(subtitle or '')} · generated {when}</div></header><main>",
    ]
    if metrics:
        parts += ["<section><h2>Evaluation</h2>", _cards(metrics), "<div style='height:14px'></div>",
                  _metrics_table(metrics),
                  "<p class='missing'>Euclidean distances, each sample a query against all others (self "
                  "excluded); NMI / AMI: mean ± std over k-means seeds with K = number of classes; "
                  "queries of singleton classes are left out of the retrieval metrics. Scores in "
                  "percent.</p></section>"]
    else:
        parts.append("<section><h2>Evaluation</h2><p class='missing'>no metrics</p></section>")
    if references and metrics:
        parts += ["<section><h2>Against reference points</h2>", _references_table(references, metrics),
                  "<p class='missing'>Same evaluation images and metrics; the untrained network has the "
                  "run's architecture and seed.</p></section>"]
    captions = {
        "curves": ("Training curves",
                   "Loss and learning rate per logged step; NMI and Recall@1 per evaluation."),
        "tsne": ("t-SNE map",
                 "2-D t-SNE of the evaluation embeddings, one point per image, coloured by class."),
        "retrieval": ("Retrieval examples",
                      "Each row: a query, then its nearest neighbours (green: same class, red: other)."),
    }
    if images.get("episodes") is not None:  # few-shot runs only (viz/episodes.py)
        captions["episodes"] = (
            "One-shot episodes",
            "Each row: a test item of an official one-shot run, then its 20 candidates (one drawing per "
            "character); the nearest one by the learned embedding is framed, green when right, red when "
            "wrong (the right one underlined).")
    for key, (name, caption) in captions.items():
        parts.append(f"<section><h2>{name}</h2><figure>{_img_tag(images.get(key), name)}"
                     f"<figcaption>{html.escape(caption)}</figcaption></figure></section>")
    config_text = yaml.safe_dump(config, sort_keys=False, default_flow_style=None) if config else "(none)"
    parts += ["<section><h2>Configuration</h2><details open><summary>resolved config</summary>",
              f"<pre>{html.escape(config_text)}</pre></details></section></main>",
              "<footer>clusterloss — deep metric learning via facility location "
              "(Song et al., CVPR 2017)</footer>",
              "</body></html>"]
    return "\n".join(parts)


def write_report(out, **kwargs) -> Path:
    """Write :func:`render_report` (same keyword arguments) to ``out``; returns the path."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(render_report(**kwargs), encoding="utf-8")
    return out

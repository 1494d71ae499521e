"""Analysis of a trained run: extract embeddings, evaluate, t-SNE, retrieval grid, report.

Library functions :func:`extract` and :func:`analyze_run` do the work; ``add_subcommands`` adds the thin CLI
commands ``extract``, ``evaluate``, ``tsne``, ``retrieval`` and ``report``. A checkpoint alone is enough: its
config names the model, dataset and protocol, so the split is rebuilt exactly as in training and embedded
in dataset order (row i of ``embeddings.npy`` is image i of the split).
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from clusterloss.metrics.fewshot import is_fewshot_metric
from clusterloss.utils.devices import resolve_device
from clusterloss.utils.files import atomic_write_text
from clusterloss.validation import check_embeddings, check_labels

__all__ = ["Extracted", "extract", "save_extracted", "load_extracted", "analyze_run", "add_subcommands"]

SPLITS = {"eval": "eval", "test": "eval", "train": "train"}


@dataclass
class Extracted:
    """Embeddings of one split in dataset order.

    embeddings: float32 [N, D]; labels: int64 [N]; images: uint8 [N, C, H, W] (None when loaded from .npy
    without the dataset); class_names: one per class id; meta: dataset, split, protocol, checkpoint, ...;
    config: the checkpoint's resolved config as a plain dict (None when loaded from .npy);
    query_mask: bool [N], True = query, False = gallery, for query / gallery splits (In-Shop), else None.
    """

    embeddings: np.ndarray
    labels: np.ndarray
    images: torch.Tensor | None
    class_names: list[str] | None
    meta: dict[str, Any]
    coarse_labels: np.ndarray | None = None
    coarse_class_names: list[str] | None = field(default=None)
    config: dict[str, Any] | None = None
    query_mask: np.ndarray | None = None


def _dataset_for(config, split: str, data_root: str | None):
    from clusterloss.data.protocols import splits_from_config

    if split not in SPLITS:
        raise ValueError(f"split must be one of {sorted(SPLITS)}, got {split!r}")
    splits = splits_from_config(config.data, root=data_root, download=False)
    return splits, getattr(splits, SPLITS[split])


def extract(
    checkpoint_path,
    split: str = "eval",
    *,
    batch_size: int | None = None,
    device: str = "auto",
    bf16: bool = False,
    progress: bool = False,
    data_root: str | None = None,
) -> Extracted:
    """Embed a split of the checkpoint's dataset with the checkpoint's model (batched, no augmentation).

    Args:
        checkpoint_path: a ``.pt`` written by training (holds model weights and the resolved config).
        split: "eval" (= "test": the protocol's evaluation split, e.g. the unseen classes) or "train".
        batch_size: images per forward pass (default: the config's eval batch size).
        device: "auto", "cpu", "cuda", ...; bf16: autocast to bfloat16 (embeddings are returned as float32).
        data_root: dataset folder if it moved since training (default: the config's ``data.root``).
    """
    from clusterloss.checkpoint import load_checkpoint, model_from_checkpoint
    from clusterloss.inference import embed_dataset
    from clusterloss.models import input_normalization

    path = Path(checkpoint_path)
    if not path.exists():
        raise ValueError(f"checkpoint {path} not found; pass a .pt file written by `clusterloss train`")
    ckpt = load_checkpoint(path)
    model, config = model_from_checkpoint(ckpt)
    splits, dataset = _dataset_for(config, split, data_root)
    dev = resolve_device(device)
    model = model.to(dev)
    if len(dataset):
        mean, std = input_normalization(model, splits.mean, splits.std)  # a pretrained backbone's own
        embeddings = embed_dataset(model, dataset, mean, std,
                                   batch_size=batch_size or config.eval.batch_size, device=dev,
                                   amp_dtype=torch.bfloat16 if bf16 else None, progress=progress).numpy()
    else:
        embeddings = np.zeros((0, config.model.embedding_dim), np.float32)
    meta = {
        "dataset": config.data.name, "split": SPLITS[split], "dataset_split": dataset.split,
        "protocol": config.data.protocol, "train_classes": config.data.train_classes,
        "validation": config.data.validation, "data_root": str(data_root or config.data.root),
        "checkpoint": str(path.resolve()), "run": path.resolve().parent.name,
        "epoch": ckpt.get("epoch"), "step": ckpt.get("step"), "model": config.model.name,
        "loss": config.loss.name, "num_samples": int(len(embeddings)),
        "embedding_dim": int(embeddings.shape[1]), "bf16": bool(bf16),
    }
    coarse = dataset.coarse_labels
    query_mask = getattr(dataset, "query_mask", None)
    return Extracted(embeddings=embeddings.astype(np.float32), labels=dataset.labels.numpy().astype(np.int64),
                     images=dataset.images, class_names=list(dataset.class_names), meta=meta,
                     coarse_labels=None if coarse is None else coarse.numpy(),
                     coarse_class_names=dataset.coarse_class_names, config=config.to_dict(),
                     query_mask=None if query_mask is None else query_mask.numpy().astype(bool))


def save_extracted(extracted: Extracted, out_dir) -> dict[str, Path]:
    """Write ``embeddings.npy`` [N, D] float32, ``labels.npy`` [N] int64 and ``embeddings.json`` (meta), and
    for a query / gallery split ``query_mask.npy`` [N] bool (named in the meta, so ``evaluate --embeddings``
    finds it)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"embeddings": out / "embeddings.npy", "labels": out / "labels.npy",
             "meta": out / "embeddings.json"}
    np.save(paths["embeddings"], extracted.embeddings.astype(np.float32))
    np.save(paths["labels"], extracted.labels.astype(np.int64))
    meta = dict(extracted.meta)
    if extracted.query_mask is not None:
        paths["query_mask"] = out / "query_mask.npy"
        np.save(paths["query_mask"], np.asarray(extracted.query_mask, dtype=bool))
        meta["query_mask"] = paths["query_mask"].name
    paths["meta"].write_text(json.dumps(meta, indent=2) + "\n")
    return paths


def _load_npy(path, what: str) -> np.ndarray:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} {path} not found (or not a file); pass a .npy written by "
                                "`clusterloss extract` or numpy.save")
    try:
        # Memory-mapped first: a header that declares more data than the file holds fails here, before any
        # allocation of the declared size.
        return np.array(np.load(path, mmap_mode="r", allow_pickle=False))
    except (ValueError, OSError, EOFError, MemoryError) as err:
        raise ValueError(f"{what} {path} is not a readable .npy array ({err}); write it with "
                         "numpy.save") from err


def _load_query_mask(path, n: int) -> np.ndarray:
    mask = _load_npy(path, "--query-mask")
    if mask.dtype != np.bool_ or mask.shape != (n,):
        raise ValueError(f"query mask {path} must be bool [{n}] (True = query, one per embedding), got "
                         f"{mask.dtype} {mask.shape}")
    return mask


def load_extracted(embeddings_path, labels_path, *, with_images: bool = False,
                   data_root: str | None = None, query_mask_path=None) -> Extracted:
    """Read ``.npy`` embeddings and labels; with ``with_images``, reload the split's images (and class names)
    from the dataset named in the ``embeddings.json`` beside the embeddings. The query mask is read from
    ``query_mask_path``, else from the file the ``embeddings.json`` names (written by ``extract``)."""
    emb = _load_npy(embeddings_path, "--embeddings")
    labels = _load_npy(labels_path, "--labels")
    if emb.ndim != 2 or labels.ndim != 1 or len(emb) != len(labels):
        raise ValueError(f"expected embeddings [N, D] and labels [N], got {emb.shape} and {labels.shape}")
    emb = check_embeddings(emb, name=f"embeddings in {embeddings_path}").numpy()
    labels = check_labels(labels, len(emb), name=f"labels in {labels_path}").numpy()
    meta_path = Path(embeddings_path).with_suffix(".json")
    meta = json.loads(meta_path.read_text()) if meta_path.exists() else {}
    out = Extracted(embeddings=emb.astype(np.float32), labels=labels.astype(np.int64), images=None,
                    class_names=None, meta=meta)
    if query_mask_path is None and meta.get("query_mask"):
        query_mask_path = Path(embeddings_path).parent / meta["query_mask"]
    if query_mask_path is not None:
        out.query_mask = _load_query_mask(query_mask_path, len(emb))
    if with_images:
        if "dataset" not in meta:
            raise ValueError(f"{meta_path} (written by `clusterloss extract`) is needed to find the images; "
                             "or use --checkpoint")
        from clusterloss.config import Config

        config = Config.from_dict({"data": {k: meta[k] for k in ("protocol", "train_classes", "validation")}
                                   | {"name": meta["dataset"], "root": meta.get("data_root", "data")}})
        _, dataset = _dataset_for(config, meta.get("split", "eval"), data_root)
        if len(dataset) != len(emb):
            raise ValueError(f"{meta['dataset']} {meta.get('split')} has {len(dataset)} images but the "
                             f"embeddings have {len(emb)} rows; re-run `clusterloss extract`")
        out.images, out.class_names = dataset.images, list(dataset.class_names)
        if dataset.coarse_labels is not None:
            out.coarse_labels = dataset.coarse_labels.numpy()
            out.coarse_class_names = dataset.coarse_class_names
    return out


def _title(meta: dict, what: str, metrics: dict | None) -> str:
    where = f"{meta.get('dataset', '?')} {meta.get('split', '')}".strip()
    parts = [meta.get("run") or "embeddings", where, what]
    if metrics:
        shown = [(k, n) for k, n in (("nmi", "NMI"), ("recall@1", "Recall@1")) if k in metrics]
        parts.append(", ".join(f"{n} {metrics[k]:.3f}" for k, n in shown))
    return " · ".join(p for p in parts if p)


def _fewshot_into(metrics: dict, checkpoint, ex: Extracted, device: str, data_root, picture: Path) -> dict:
    """Add the run's few-shot metrics (metrics/fewshot_eval.py) to ``metrics``; draw the one-shot episodes
    (viz/episodes.py) when the official runs were scored. Returns ``{"episodes": png}`` or ``{}``."""
    from clusterloss.metrics.fewshot_eval import cached_runs, checkpoint_fewshot

    extra, details = checkpoint_fewshot(checkpoint, ex.embeddings, ex.labels, device=device,
                                        data_root=data_root)
    metrics.update(extra)
    if not details:
        return {}
    from clusterloss.viz.episodes import episodes_figure

    metrics["oneshot_per_run"] = details["oneshot_per_run"]
    data = (ex.config or {}).get("data", {})
    runs = cached_runs(str(data_root or data.get("root") or "") or None, data.get("image_size"))
    title = f"official one-shot runs: {100 * extra['oneshot']:.1f} % of 400 test items right"
    return {"episodes": episodes_figure(runs.train, runs.test, runs.answers,
                                        torch.tensor(details["oneshot_predictions"]), picture, title=title)}


def analyze_run(run_dir, checkpoint: str = "best.pt", *, split: str = "eval", tsne: bool = True,
                tsne_images: bool = False, device: str = "auto", progress: bool = False,
                data_root: str | None = None) -> dict[str, float]:
    """Extract, evaluate and draw everything for a run; writes into ``run_dir`` and returns the metrics.

    Files: ``embeddings.npy``, ``labels.npy``, ``embeddings.json``, ``metrics.json``, ``tsne.png`` (unless
    ``tsne=False``), ``retrieval.png``, ``curves.png`` (when ``metrics.jsonl`` exists) and ``report.html``.
    ``checkpoint`` falls back to ``last.pt`` when ``best.pt`` is missing (a run without evaluations).
    """
    from clusterloss.metrics import evaluate_embeddings
    from clusterloss.viz.curves import curves
    from clusterloss.viz.report import write_report
    from clusterloss.viz.retrieval_grid import retrieval_grid
    from clusterloss.viz.tsne import tsne_map

    run = Path(run_dir)
    ckpt_path = run / checkpoint
    if not ckpt_path.exists() and checkpoint == "best.pt" and (run / "last.pt").exists():
        ckpt_path = run / "last.pt"
    if not ckpt_path.exists():
        raise ValueError(f"no checkpoint {ckpt_path}; is {run} a run directory of `clusterloss train`?")
    ex = extract(ckpt_path, split, device=device, progress=progress, data_root=data_root)
    save_extracted(ex, run)
    config = ex.config
    ev = config.get("eval", {})
    metrics = evaluate_embeddings(ex.embeddings, ex.labels, ks=tuple(ev.get("ks", (1, 2, 4, 8))),
                                  kmeans_seeds=tuple(ev.get("kmeans_seeds", (0, 1, 2))),
                                  kmeans_iterations=int(ev.get("kmeans_iterations", 20)),
                                  query_mask=ex.query_mask)
    images = {"tsne": None, "curves": None}
    images.update(_fewshot_into(metrics, ckpt_path, ex, device, data_root, run / "episodes.png"))
    atomic_write_text(run / "metrics.json", json.dumps(metrics, indent=2) + "\n")
    if tsne:
        images["tsne"] = tsne_map(ex.embeddings, ex.labels, run / "tsne.png", class_names=ex.class_names,
                                  images=ex.images if tsne_images else None,
                                  title=_title(ex.meta, "t-SNE", metrics))
    images["retrieval"] = retrieval_grid(ex.embeddings, ex.labels, ex.images, run / "retrieval.png",
                                         class_names=ex.class_names,
                                         title=_title(ex.meta, "retrieval", metrics))
    if (run / "metrics.jsonl").exists():
        images["curves"] = curves(run / "metrics.jsonl", run / "curves.png",
                                  title=f"{run.resolve().name} · training curves",
                                  shown=(ckpt_path.name, ex.meta.get("epoch")))  # the header's checkpoint
    references_path = run / "references.json"
    references = json.loads(references_path.read_text()) if references_path.exists() else None
    write_report(run / "report.html", run_name=run.resolve().name, config=config, metrics=metrics,
                 references=references,
                 images=images, subtitle=f"checkpoint {ckpt_path.name} (epoch {ex.meta.get('epoch')}), "
                 f"{ex.meta['split']} split, {len(ex.labels):,} images")
    return metrics


# ---------------------------------------------------------------------------------------------- CLI


def _inputs(args, *, with_images: bool = False) -> Extracted:
    if args.checkpoint:
        if args.embeddings or args.labels:
            raise ValueError("give either --checkpoint or --embeddings/--labels, not both")
        return extract(args.checkpoint, args.split, device=args.device, progress=True,
                       data_root=args.data_root)
    if not (args.embeddings and args.labels):
        raise ValueError("give --checkpoint CKPT, or both --embeddings E.npy and --labels L.npy")
    return load_extracted(args.embeddings, args.labels, with_images=with_images, data_root=args.data_root,
                          query_mask_path=getattr(args, "query_mask", None))


def _add_input_args(p: argparse.ArgumentParser, embeddings: bool = True) -> None:
    p.add_argument("--checkpoint", required=not embeddings,
                   help="a .pt checkpoint written by `clusterloss train`")
    if embeddings:
        p.add_argument("--embeddings", help="embeddings.npy [N, D] (from `clusterloss extract`)")
        p.add_argument("--labels", help="labels.npy [N] matching --embeddings")
    p.add_argument("--split", default="test", choices=sorted(SPLITS),
                   help="which split to embed (test = eval = the protocol's evaluation split)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ...")
    p.add_argument("--data-root", help="dataset folder, if it moved since training")


SCORE_KEYS = ("nmi", "ami", "precision@1", "r_precision", "map@r")


def _is_score(key: str) -> bool:
    return key in SCORE_KEYS or key.startswith("recall@") or is_fewshot_metric(key)


def format_table(metrics: dict) -> str:
    """One line per metric; scores and few-shot accuracies in percent (as the report and the quickstart
    show them), with ``± std`` over k-means seeds or ``± half-width (95 % CI)`` of the episode mean."""
    undefined = metrics.get("undefined") or {}
    rows = [(k, v) for k, v in metrics.items() if not k.endswith(("_std", "_ci95")) and k != "undefined"]
    names = {k: f"{k} (%)" if _is_score(k) else k for k, _ in rows}
    width = max(len(name) for name in names.values())
    lines = []
    for key, value in rows:
        std = metrics.get(f"{key}_std")
        scale = 100 if _is_score(key) else 1
        if value is None:
            text = f"undefined ({undefined.get(key, 'no value')})"
        elif isinstance(value, float):
            text = f"{scale * value:.2f}" if scale == 100 else f"{value:.4f}"
        else:
            text = str(value)
        spread = f" ± {scale * std:.2f}" if isinstance(std, (int, float)) and scale == 100 else (
            f" ± {std:.4f}" if isinstance(std, (int, float)) else "")
        ci95 = metrics.get(f"{key}_ci95")
        if isinstance(ci95, (int, float)):
            spread += f" ± {scale * ci95:.2f} (95 % CI)"
        lines.append(f"{names[key]:<{width}}  {text}{spread}")
    return "\n".join(lines)


def _cmd_extract(args) -> int:
    ex = extract(args.checkpoint, args.split, batch_size=args.batch_size, device=args.device, bf16=args.bf16,
                 progress=True, data_root=args.data_root)
    paths = save_extracted(ex, args.out or Path(args.checkpoint).parent)
    print(f"wrote {paths['embeddings']} {ex.embeddings.shape}, {paths['labels']}, {paths['meta']}")
    return 0


def _cmd_evaluate(args) -> int:
    from clusterloss.metrics import evaluate_embeddings

    gallery = {}
    if args.gallery_embeddings or args.gallery_labels:
        if not (args.gallery_embeddings and args.gallery_labels and args.embeddings):
            raise ValueError("query / gallery evaluation needs --embeddings/--labels (the queries) and both "
                             "--gallery-embeddings and --gallery-labels")
        if args.query_mask:
            raise ValueError("give either --query-mask or --gallery-embeddings/--gallery-labels, not both")
        g = load_extracted(args.gallery_embeddings, args.gallery_labels)
        gallery = {"gallery_embeddings": g.embeddings, "gallery_labels": g.labels}
    if args.query_mask and not args.embeddings:
        raise ValueError("--query-mask goes with --embeddings/--labels (with --checkpoint the dataset's own "
                         "query / gallery split is used)")
    ex = _inputs(args)
    if gallery:
        ex.query_mask = None  # the two files are the split
    metrics = evaluate_embeddings(ex.embeddings, ex.labels, ks=tuple(args.ks), kmeans_seeds=tuple(args.seeds),
                                  kmeans_iterations=args.kmeans_iterations, query_mask=ex.query_mask,
                                  clustering_on=args.nmi_on, **gallery)
    if args.checkpoint:  # few-shot episodes / official one-shot runs when the run's config asks for them
        from clusterloss.metrics.fewshot_eval import checkpoint_fewshot

        metrics.update(checkpoint_fewshot(args.checkpoint, ex.embeddings, ex.labels, device=args.device,
                                          data_root=args.data_root)[0])
    print(format_table(metrics))
    out = Path(args.out) if args.out else Path(args.checkpoint or args.embeddings).parent / "metrics.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out, json.dumps(metrics, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


def _quick_metrics(ex: Extracted) -> dict:
    from clusterloss.metrics import retrieval_metrics

    return retrieval_metrics(ex.embeddings, ex.labels, (1,), r_metrics=False)


def _cmd_tsne(args) -> int:
    from clusterloss.viz.tsne import tsne_map

    ex = _inputs(args, with_images=args.images or args.coarse)
    labels, names = ex.labels, ex.class_names
    if args.coarse:
        if ex.coarse_labels is None:
            raise ValueError(f"--coarse needs superclass labels; dataset {ex.meta.get('dataset')} has none "
                             "(only cifar100)")
        labels, names = ex.coarse_labels, ex.coarse_class_names
    title = args.title or _title(ex.meta, "t-SNE" + (" (superclasses)" if args.coarse else ""),
                                 _quick_metrics(ex))
    out = tsne_map(ex.embeddings, labels, args.out, class_names=names,
                   images=ex.images if args.images else None, title=title, seed=args.seed,
                   max_points=args.max_points)
    print(f"wrote {out}")
    return 0


# Largest retrieval grid drawn: beyond this a picture is unreadable (and k=10,000 took minutes and a
# 33,000-px-wide PNG).
MAX_GRID_QUERIES = 64
MAX_GRID_K = 32


def check_grid_size(queries: int, k: int, n: int | None = None) -> None:
    """``--queries`` and ``--k`` of the retrieval grid: at least 1, at most what the picture and (given ``n``
    samples) the data allow."""
    if not 1 <= queries <= MAX_GRID_QUERIES:
        raise ValueError(f"--queries must be in [1, {MAX_GRID_QUERIES}] (rows of the picture), got {queries}")
    if not 1 <= k <= MAX_GRID_K:
        raise ValueError(f"--k must be in [1, {MAX_GRID_K}] (neighbours per row), got {k}")
    if n is not None:
        if n < 2:
            raise ValueError(f"the split has {n} image(s); a retrieval grid needs at least 2")
        if k > n - 1:
            raise ValueError(f"--k {k} is more than the {n - 1} other images of this split; use --k {n - 1} "
                             "or fewer")
        if queries > n:
            raise ValueError(f"--queries {queries} is more than the {n} images of this split")


def _cmd_retrieval(args) -> int:
    from clusterloss.viz.retrieval_grid import retrieval_grid

    check_grid_size(args.queries, args.k)  # before the (slow) extraction
    ex = extract(args.checkpoint, args.split, device=args.device, progress=True, data_root=args.data_root)
    check_grid_size(args.queries, args.k, len(ex.labels))
    out = retrieval_grid(ex.embeddings, ex.labels, ex.images, args.out, n_queries=args.queries, k=args.k,
                         class_names=ex.class_names, seed=args.seed,
                         title=_title(ex.meta, "retrieval", _quick_metrics(ex)))
    print(f"wrote {out}")
    return 0


def _cmd_report(args) -> int:
    metrics = analyze_run(args.run_dir, args.checkpoint, split=args.split, tsne=not args.no_tsne,
                          tsne_images=args.tsne_images, device=args.device, progress=True,
                          data_root=args.data_root)
    print(format_table(metrics))
    print(f"wrote {Path(args.run_dir) / 'report.html'}")
    return 0


def add_subcommands(subparsers) -> None:
    """Add ``extract``, ``evaluate``, ``tsne``, ``retrieval`` and ``report`` to the top-level CLI."""
    p = subparsers.add_parser("extract", help="embed a split with a checkpoint -> embeddings.npy, labels.npy")
    _add_input_args(p, embeddings=False)
    p.add_argument("--out", help="output folder (default: the checkpoint's folder)")
    p.add_argument("--batch-size", type=int, default=None, help="default: the config's eval.batch_size")
    p.add_argument("--bf16", action="store_true", help="bfloat16 autocast for the forward pass")
    p.set_defaults(func=_cmd_extract)

    p = subparsers.add_parser("evaluate", help="NMI, AMI, Recall@K, Precision@1, R-Precision, MAP@R")
    _add_input_args(p)
    p.add_argument("--out", help="metrics JSON (default: metrics.json beside the input)")
    p.add_argument("--ks", type=int, nargs="+", default=[1, 2, 4, 8], help="the K of Recall@K")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="k-means seeds for NMI / AMI")
    p.add_argument("--kmeans-iterations", type=int, default=20,
                   help="Lloyd iterations per k-means run (default 20, as pytorch-metric-learning)")
    p.add_argument("--gallery-embeddings", help="query / gallery mode: gallery embeddings [M, D] .npy "
                   "(--embeddings/--labels are then the queries)")
    p.add_argument("--gallery-labels", help="gallery labels [M] .npy matching --gallery-embeddings")
    p.add_argument("--query-mask", help="query / gallery mode on one array: bool [N] .npy, True = query "
                   "(default: the query_mask.npy that `extract` wrote for an In-Shop split, if any)")
    p.add_argument("--nmi-on", default="union", choices=["union", "query", "gallery"],
                   help="query / gallery mode: what k-means clusters for NMI / AMI (default: the union)")
    p.set_defaults(func=_cmd_evaluate)

    p = subparsers.add_parser("tsne", help="2-D t-SNE map coloured by class (or with image thumbnails)")
    _add_input_args(p)
    p.add_argument("--out", required=True, help="output PNG")
    p.add_argument("--images", action="store_true", help="draw each image's thumbnail at its own point")
    p.add_argument("--coarse", action="store_true", help="colour by superclass (CIFAR-100's 20)")
    p.add_argument("--max-points", type=int, default=10_000, help="random subset above this many points")
    p.add_argument("--title", help="override the title")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_cmd_tsne)

    p = subparsers.add_parser("retrieval", help="grid of queries and their nearest neighbours")
    _add_input_args(p, embeddings=False)
    p.add_argument("--out", required=True, help="output PNG")
    p.add_argument("--queries", type=int, default=8, help=f"number of query rows (1-{MAX_GRID_QUERIES})")
    p.add_argument("--k", type=int, default=8, help=f"neighbours per query (1-{MAX_GRID_K})")
    p.add_argument("--seed", type=int, default=0, help="query selection seed")
    p.set_defaults(func=_cmd_retrieval)

    p = subparsers.add_parser("report", help="everything for a run -> RUN_DIR/report.html")
    p.add_argument("run_dir", help="a run directory written by `clusterloss train`")
    p.add_argument("--checkpoint", default="best.pt", help="checkpoint file inside RUN_DIR (default best.pt)")
    p.add_argument("--split", default="test", choices=sorted(SPLITS))
    p.add_argument("--device", default="auto")
    p.add_argument("--no-tsne", action="store_true", help="skip the t-SNE map (the slowest part)")
    p.add_argument("--tsne-images", action="store_true", help="t-SNE map with image thumbnails")
    p.add_argument("--data-root", help="dataset folder, if it moved since training")
    p.set_defaults(func=_cmd_report)


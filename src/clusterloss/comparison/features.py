"""Frozen-backbone comparisons: backbone features of a few augmented views cached once, heads trained on them.

``view_features`` runs the (pretrained, frozen) backbone of ``config.model`` over a dataset: view 0 is the
evaluation view (``eval_view``: centre crop + resize, what ``clusterloss train`` evaluates on), views 1..V-1
the training augmentation (``data.augmentation``, e.g. random resized crop + flip). ``FeatureRunner`` builds
that cache once per protocol (training images of the training classes: V views; unseen images: view 0),
then trains one embedding head per run (``PooledEmbeddingHead``: Linear -> L2, as on top of the backbone in
end-to-end training) with the run's loss, sampler (P classes x K images, each image in a random one of its
views), optimizer and schedule, and evaluates the final head once on its evaluation split. Validation runs
use the cached training features of the classes ``data.validation=true`` carves out (checked by class name
against the real validation splits, which must not contain a class of the final evaluation split).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from ..config import Config, save_config
from ..data.augment import AUGMENTATIONS, apply_affine, eval_view, normalization_affine, resolve_augmentation
from ..data.protocols import splits_from_config
from ..data.sampler import ClassBalancedBatchSampler
from ..losses import build_loss
from ..metrics.evaluate import evaluate_as_configured
from ..models.head import PooledEmbeddingHead, global_pool
from ..models.registry import build_model_from_config
from ..schedule import IterationSchedule, build_optimizer, margin_decay_of, margin_multiplier_at
from ..train import loss_margin_stats
from .runs import check_no_leak, check_same_settings, class_names_of, read_done, write_json

__all__ = ["view_features", "FeatureRunner", "train_head", "loss_options"]


def loss_options(config: Config) -> dict[str, Any]:
    """The keyword arguments ``build_loss`` gets for ``config.loss`` (as the trainer assembles them)."""
    options = dict(config.loss.options)
    if config.loss.name == "facility_location":
        options = {"margin_multiplier": config.loss.margin_multiplier, "margin_type": config.loss.margin_type,
                   "pam_iterations": config.loss.pam_iterations, **options}
    return options


def _pooled(model: torch.nn.Module, images: torch.Tensor) -> torch.Tensor:
    features = model.backbone(images)
    if features.dim() == 4:
        return global_pool(features, getattr(model.head, "pooling", "avg"))
    return features


@torch.inference_mode()
def view_features(model: torch.nn.Module, dataset, views: int, augmentation: str = "auto", seed: int = 0,
                  batch_size: int = 64, mean=None, std=None, parts_dir: Path | None = None,
                  forward: Callable[[torch.Tensor], torch.Tensor] | None = None) -> torch.Tensor:
    """float16 [N, views, F] pooled backbone features of ``dataset`` (view 0: evaluation view; the others:
    ``augmentation``; batch i draws from a generator seeded with ``(seed, i)``, so a resumed extraction gives
    the same features). ``mean`` / ``std`` default to the model's ``preprocessing`` (pretrained weights).
    ``parts_dir``: each batch's features are saved there and reused (a long extraction survives a kill).
    ``forward``: normalized images [B, C, H, W] -> what is cached per view (default: the backbone's pooled
    features; ``top_blocks`` caches an inner map [B, C', H', W'], giving [N, views, C', H', W'])."""
    if views < 1:
        raise ValueError(f"features.views must be >= 1, got {views}")
    pre = getattr(model, "preprocessing", None)
    if mean is None or std is None:
        if pre is None:
            raise ValueError("view_features needs mean/std, or a model with preprocessing "
                             "(pretrained weights)")
        mean, std = pre["mean"], pre["std"]
    model.eval()
    if forward is None:
        def forward(images: torch.Tensor) -> torch.Tensor:
            return _pooled(model, images)
    size = getattr(dataset, "view_size", None) or int(dataset.images.shape[-1])
    crop = float(getattr(dataset, "eval_crop", 1.0))
    augment = AUGMENTATIONS[resolve_augmentation(augmentation, dataset)]
    scale, shift = normalization_affine(mean, std, int(dataset.images.shape[1]), torch.device("cpu"))
    parts = []
    for i, start in enumerate(range(0, len(dataset), batch_size)):
        part = None if parts_dir is None else Path(parts_dir) / f"part{i:05d}.pt"
        if part is not None and part.exists():
            try:
                parts.append(torch.load(part, weights_only=True))
                continue
            except (RuntimeError, EOFError, OSError):  # cut short by a kill: compute it again
                part.unlink()
        generator = torch.Generator().manual_seed(seed * 1_000_003 + i)
        images = dataset.images[start:start + batch_size]
        batch = [eval_view(images, size, crop)]
        batch += [augment(images, size, generator) for _ in range(views - 1)]
        parts.append(torch.stack([forward(apply_affine(v, scale, shift)) for v in batch], 1).half())
        if part is not None:
            part.parent.mkdir(parents=True, exist_ok=True)
            tmp = part.with_suffix(f".{os.getpid()}.tmp")
            torch.save(parts[-1], tmp)
            tmp.replace(part)
    return torch.cat(parts)


def train_head(config: Config, train_features: torch.Tensor, train_labels: torch.Tensor,
               eval_features: torch.Tensor, eval_labels: torch.Tensor, run_dir: Path,
               eval_query_mask: torch.Tensor | None = None, model: torch.nn.Module | None = None
               ) -> dict[str, float]:
    """Train a Linear -> L2 head on cached features [N, V, F] with ``config``'s loss, batches and optimizer;
    return the final head's metrics on ``eval_features`` [M, F] (+ ``train_seconds``, margin statistics).
    ``eval_query_mask`` (bool [M], True = query): score the evaluation set as queries against a gallery
    (In-Shop) instead of all against all. ``model``: train this module instead of a new Linear -> L2 head
    (``top_blocks``: cached maps [N, V, C, H, W] -> top of the backbone -> head, its ``head.*`` parameters at
    ``train.head_lr_multiplier`` x the learning rate); the evaluation runs in ``eval.batch_size`` chunks."""
    t = config.train
    start = time.perf_counter()
    torch.manual_seed(t.seed)
    classes = torch.unique(train_labels)
    label_map = torch.full((int(classes.max()) + 1,), -1, dtype=torch.int64)
    label_map[classes] = torch.arange(len(classes))
    head = model if model is not None else PooledEmbeddingHead(int(train_features.shape[-1]),
                                                               config.model.embedding_dim)
    head.train()
    loss_fn = build_loss(config.loss.name, config.model.embedding_dim, len(classes), **loss_options(config))
    sampler = ClassBalancedBatchSampler(train_labels, t.batch_classes, t.batch_samples, seed=t.seed)
    per_epoch = t.steps_per_epoch or len(sampler)
    total = per_epoch * t.epochs
    optimizer = build_optimizer(t.optimizer, head, loss_fn, t.lr, t.momentum, t.nesterov, t.weight_decay,
                                t.no_decay_bn_bias, config.loss.param_lr_multiplier,
                                t.head_lr_multiplier if model is not None else 1.0)
    schedule = IterationSchedule(optimizer, total, t.schedule, t.milestones, t.lr_decay,
                                 round(t.warmup_epochs * per_epoch), t.min_lr / t.lr)
    views = torch.Generator().manual_seed(t.seed * 1_000_003)
    decay = margin_decay_of(config.loss, per_epoch)  # loss.margin_decay_*: the trainer's rule
    gamma = config.loss.margin_multiplier
    records, losses, shares, margins, step = [], [], [], [], 0
    for epoch in range(t.epochs):
        sampler.set_epoch(epoch)
        for i, batch in enumerate(sampler):
            if i == per_epoch:
                break
            if decay is not None:
                gamma = margin_multiplier_at(step, **decay)
                loss_fn.set_margin_multiplier(gamma)
            index = torch.as_tensor(batch, dtype=torch.int64)
            view = torch.randint(train_features.shape[1], (len(index),), generator=views)
            x = train_features[index, view].float()
            loss = loss_fn(head(x), label_map[train_labels[index]])
            value = float(loss.detach())
            if not math.isfinite(value):
                raise ValueError(f"{run_dir}: the loss became {value} at step {step + 1}; "
                                 "lower train.lr")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            step += 1
            losses.append(value)
            stats = loss_margin_stats(loss_fn)
            if stats is not None:
                shares.append(stats["margin_share"])
                margins.append(stats["margin"])
            n = t.log_every_steps
            if n and step % n == 0:
                record = {"epoch": epoch, "step": step, "split": "train", "loss": sum(losses[-n:]) / n}
                if shares:
                    record["margin_share"] = sum(shares[-n:]) / len(shares[-n:])
                    record["margin"] = sum(margins[-n:]) / len(margins[-n:])
                if decay is not None:  # gamma of the window's last step, as the trainer logs it
                    record["margin_multiplier"] = gamma
                records.append(record)
    seconds = time.perf_counter() - start
    head.eval()
    with torch.no_grad():
        chunk = config.eval.batch_size
        embeddings = torch.cat([head(eval_features[i:i + chunk].float())
                                for i in range(0, len(eval_features), chunk)])
    out = evaluate_as_configured(embeddings, eval_labels, config.eval, query_mask=eval_query_mask)
    out.update(train_seconds=seconds, steps=float(step), load_average_1m=os.getloadavg()[0])
    if shares:
        out.update(fl_margin_share=sum(shares) / len(shares), fl_margin=sum(margins) / len(margins))
    records.append({"epoch": t.epochs, "step": step, "split": "eval", **out})
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    return out


def settings_key(config: Config, run_only_model_keys: tuple[str, ...] = (), **fields) -> str:
    """16 hex digits hashing a feature cache's inputs: the data settings (not ``data.validation``: one cache
    serves the final and the validation runs), the model settings but ``run_only_model_keys``, and
    ``fields`` (views, seed, ...)."""
    raw = config.to_dict()
    data = {k: v for k, v in raw["data"].items() if k != "validation"}
    model = {k: v for k, v in raw["model"].items() if k not in run_only_model_keys}
    text = json.dumps({"data": data, "model": model, **fields}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _cache_key(config: Config, views: int, seed: int) -> str:
    return settings_key(config, views=views, seed=seed)


class FeatureRunner:
    """``runner(config, run_dir) -> metrics`` for protocols with ``trainer: features``; ``final`` / ``tuning``
    are a final and a validation config of the protocol (their data and model sections define the cache).

    ``protocol.features``: ``views`` (default 4: the evaluation view + 3 augmented), ``batch_size`` (64),
    ``seed`` (0, the augmentation draws). The cache (``features.pt`` + ``features.json``) lives under
    ``cache_dir/<key>/``, the key hashing the data and model settings. A subclass changes what is cached
    (``extractor``), the key (``key_of``) and the run (``train``): ``top_blocks.TopBlockRunner``.
    """

    KNOWN = ("views", "batch_size", "seed")  # protocol.features keys

    def __init__(self, protocol, cache_dir: Path, final: Config, tuning: Config) -> None:
        options = dict(protocol.features)
        unknown = sorted(set(options) - set(self.KNOWN))
        if unknown:
            raise ValueError(f"{protocol.path}: unknown features key(s) {unknown}; known: "
                             f"{', '.join(self.KNOWN)}")
        self.views, self.seed = int(options.get("views", 4)), int(options.get("seed", 0))
        self.final_splits = splits_from_config(final.data)
        self.tuning_splits = splits_from_config(tuning.data)
        check_no_leak(self.tuning_splits, self.final_splits)
        self.key = self.key_of(final)
        self.folder = Path(cache_dir) / self.key
        self.cache = self._load_or_build(final, int(options.get("batch_size", 64)))
        class_names = self.final_splits.train.class_names
        self._train_names = [str(class_names[int(c)]) for c in self.cache["train_labels"].tolist()]

    def _load_or_build(self, config: Config, batch_size: int) -> dict[str, Any]:
        path = self.folder / "features.pt"
        if path.exists():
            return torch.load(path, weights_only=True)
        model = self.backbone_model(config)
        mean, std = (None, None) if getattr(model, "preprocessing", None) else \
            (self.final_splits.mean, self.final_splits.std)
        start = time.perf_counter()
        forward = self.extractor(model)
        train = view_features(model, self.final_splits.train, self.views, config.data.augmentation, self.seed,
                              batch_size, mean, std, self.folder / "parts_train", forward)
        evaluation = view_features(model, self.final_splits.eval, 1, "none", self.seed, batch_size, mean, std,
                                   self.folder / "parts_eval", forward)
        seconds = time.perf_counter() - start
        cache = {"train": train, "train_labels": self.final_splits.train.labels.clone(),
                 "eval": evaluation[:, 0].contiguous(), "eval_labels": self.final_splits.eval.labels.clone()}
        self.folder.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        torch.save(cache, tmp)
        tmp.replace(path)
        for folder in ("parts_train", "parts_eval"):  # the whole cache is in place: the pieces can go
            for part in sorted((self.folder / folder).glob("part*.pt")):
                part.unlink()
        images = len(self.final_splits.train) * self.views + len(self.final_splits.eval)
        write_json(self.folder / "features.json", {
            "key": self.key, "views": self.views, "seed": self.seed, "seconds": seconds,
            "images_per_s": images / seconds, "load_average_1m": os.getloadavg()[0],
            "train_images": len(self.final_splits.train), "eval_images": len(self.final_splits.eval),
            "feature_dim": int(train.shape[-1]), "feature_shape": list(train.shape[2:]),
            "data": config.to_dict()["data"],
            "model": config.to_dict()["model"]})
        return cache

    def key_of(self, config: Config) -> str:
        """The cache key of a run's config (data and model settings; it must equal the runner's)."""
        return _cache_key(config, self.views, self.seed)

    def backbone_model(self, config: Config) -> torch.nn.Module:
        """The pretrained model whose backbone the cache is computed with."""
        torch.manual_seed(0)
        return build_model_from_config(config.model, int(self.final_splits.train.images.shape[1]))

    def extractor(self, model: torch.nn.Module) -> Callable[[torch.Tensor], torch.Tensor] | None:
        """What ``view_features`` caches per image and view (None: the pooled backbone features)."""
        return None

    def train(self, config: Config, args: tuple, run_dir: Path, query_mask) -> dict[str, float]:
        """One run on the cached features ``args`` (train features, labels, eval features, labels)."""
        return train_head(config, *args, run_dir, eval_query_mask=query_mask)

    def _select(self, dataset) -> torch.Tensor:
        names = class_names_of(dataset)
        rows = torch.tensor([n in names for n in self._train_names], dtype=torch.bool)
        if int(rows.sum()) != len(dataset):
            raise ValueError(f"the cached training features hold {int(rows.sum())} images of the validation "
                             f"classes, the validation split {len(dataset)}: rebuild the cache")
        return rows

    def __call__(self, config: Config, run_dir: Path) -> dict[str, float]:
        if self.key_of(config) != self.key:
            raise ValueError(f"{run_dir}: its data/model settings differ from the feature cache "
                             f"{self.folder}; a frozen-feature protocol varies only loss and training keys")
        run_dir = Path(run_dir)
        check_same_settings(run_dir, config)
        done = read_done(run_dir)
        if done is not None:
            return done
        c = self.cache
        query_mask = None  # validation is all against all (data.protocols); the final test side may not be
        if config.data.validation:
            fit, val = self._select(self.tuning_splits.train), self._select(self.tuning_splits.eval)
            args = (c["train"][fit], c["train_labels"][fit], c["train"][val, 0], c["train_labels"][val])
        else:
            args = (c["train"], c["train_labels"], c["eval"], c["eval_labels"])
            query_mask = self.final_splits.eval.query_mask
        run_dir.mkdir(parents=True, exist_ok=True)
        save_config(config, run_dir / "config.yaml")
        metrics = self.train(config, args, run_dir, query_mask)
        write_json(run_dir / "final_metrics.json", metrics)
        return metrics

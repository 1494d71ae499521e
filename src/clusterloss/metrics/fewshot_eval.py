"""Few-shot metrics of a model under a run's config: what training-time evaluation, ``evaluate`` and the
report add to the retrieval / clustering metrics (see ``metrics/fewshot.py`` for the protocols).

* ``eval.episodes > 0``: ``eval.ways`` x ``eval.shots`` episodes with ``eval.queries`` queries per class on
  the evaluation split (seed 0, so every model and epoch is scored on the same episodes).
* ``eval.oneshot`` (None = on for the ``omniglot*`` datasets): the 20 official one-shot runs, read from
  ``data.root`` (``all_runs.zip`` or its folders) or the bundled copy, preprocessed like the training images
  (``data.image_size``) and normalized with the training statistics.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import torch

from clusterloss.data.dataset import ImageDataset
from clusterloss.data.omniglot import OneShotRuns, load_oneshot_runs
from clusterloss.metrics.fewshot import ONESHOT, episode_metrics, oneshot_accuracy

__all__ = ["oneshot_enabled", "fewshot_metrics", "model_embedder", "cached_runs", "checkpoint_fewshot"]

Embedder = Callable[[torch.Tensor], torch.Tensor]  # uint8 images [M, C, H, W] -> float embeddings [M, D]


def oneshot_enabled(config) -> bool:
    wanted = config.eval.oneshot
    return str(config.data.name).startswith("omniglot") if wanted is None else bool(wanted)


@functools.lru_cache(maxsize=4)
def cached_runs(root: str | None, image_size: int | None) -> OneShotRuns:
    """The one-shot runs, decoded once per process for each (root, image size)."""
    return load_oneshot_runs(root, image_size)


def model_embedder(model: torch.nn.Module, mean, std, device=None, batch_size: int = 512,
                   **embed_options) -> Embedder:
    """An :data:`Embedder` that runs ``model`` like evaluation does (``inference.embed_dataset``)."""
    from clusterloss.inference import embed_dataset  # inference sits above metrics' other users

    def embed(images: torch.Tensor) -> torch.Tensor:
        dataset = ImageDataset(images=images.contiguous(), labels=torch.zeros(len(images), dtype=torch.int64),
                               class_names=["?"], name="oneshot_runs", split="test")
        return embed_dataset(model, dataset, mean, std, batch_size=batch_size, device=device, **embed_options)

    return embed


def fewshot_metrics(config, embeddings: torch.Tensor | None, labels: torch.Tensor | None,
                    embed: Embedder | None) -> tuple[dict[str, float], dict[str, Any]]:
    """(metrics, details): ``metrics`` holds floats only (``oneshot``, ``5way1shot``, ``..._ci95``, ...);
    ``details`` the per-run accuracies and predictions of the official runs (for tables and pictures)."""
    ev = config.eval
    metrics: dict[str, float] = {}
    details: dict[str, Any] = {}
    if ev.episodes > 0 and embeddings is not None and labels is not None and len(labels):
        metrics.update(episode_metrics(torch.as_tensor(embeddings), torch.as_tensor(labels), ev.ways,
                                       ev.shots, ev.queries, ev.episodes, seed=0))
    if oneshot_enabled(config) and embed is not None:
        root = config.data.root or None
        runs = cached_runs(None if root is None else str(root), config.data.image_size)
        count = runs.train.shape[0] * runs.train.shape[1]
        both = embed(torch.cat([runs.train.flatten(0, 1), runs.test.flatten(0, 1)]))
        shape = (*runs.answers.shape, both.shape[1])
        result = oneshot_accuracy(both[:count].reshape(shape), both[count:].reshape(shape), runs.answers)
        metrics[ONESHOT] = result[ONESHOT]
        details = {"oneshot_per_run": result["per_run"],
                   "oneshot_predictions": result["predictions"].tolist()}
    return metrics, details


def checkpoint_fewshot(checkpoint_path, embeddings, labels, *, device: str = "auto",
                       data_root: str | None = None) -> tuple[dict[str, float], dict[str, Any]]:
    """:func:`fewshot_metrics` of a saved run: the checkpoint's model and config (``data_root`` overrides
    ``data.root``), normalized with the statistics it was trained with. ``({}, {})`` when its config asks
    for no few-shot evaluation (nothing is loaded then)."""
    import dataclasses

    from clusterloss.checkpoint import load_checkpoint, model_from_checkpoint
    from clusterloss.config import Config
    from clusterloss.utils.devices import resolve_device

    ckpt = load_checkpoint(checkpoint_path)
    config = Config.from_dict(ckpt["config"])
    if data_root:
        config = dataclasses.replace(config, data=dataclasses.replace(config.data, root=str(data_root)))
    if config.eval.episodes <= 0 and not oneshot_enabled(config):
        return {}, {}
    model, _ = model_from_checkpoint(ckpt)
    dev = resolve_device(device)
    stats = ckpt.get("data_stats") or {}
    if "mean" not in stats:
        raise ValueError(f"{checkpoint_path} has no data_stats (the normalization it was trained with)")
    embed = model_embedder(model.to(dev), stats["mean"], stats["std"], dev, config.eval.batch_size)
    return fewshot_metrics(config, torch.as_tensor(embeddings), torch.as_tensor(labels), embed)

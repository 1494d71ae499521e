"""Few-shot classification with an embedding: the official Omniglot one-shot runs and N-way K-shot episodes.

* :func:`oneshot_accuracy` — the protocol of Lake et al. (Science 2015): in each of the 20 runs, each of the
  20 test images is given the class of its nearest training image (one per class); accuracy over all items
  and per run.
* :func:`episode_accuracy` — generic N-way K-shot episodes drawn (seeded) from any labelled evaluation set:
  N classes, K support and Q query images per class; a query is classified by its nearest support image
  (``nn``) or by the nearest class mean of the support embeddings (``ncm``, Snell et al. 2017's prototypes
  without re-normalization). Mean accuracy over episodes and the half-width of its 95 % confidence interval
  (1.96 standard errors, the convention of the few-shot literature).

Distances are Euclidean; a tie goes to the candidate listed first. Metric names (for ``eval.best_metric``,
``metrics.jsonl`` and comparison tables): ``oneshot`` and ``{N}way{K}shot`` (``_ncm`` for class means;
``_ci95`` for the interval), see :func:`fewshot_metric_names`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

import numpy as np
import torch

__all__ = ["oneshot_accuracy", "sample_episodes", "episode_accuracy", "episode_metrics",
           "fewshot_metric_names", "episode_name", "is_fewshot_metric", "ONESHOT"]

ONESHOT = "oneshot"
_EPISODE_NAME = re.compile(r"\d+way\d+shot(_ncm)?")
_Z95 = 1.959963984540054


def episode_name(ways: int, shots: int, rule: str = "nn") -> str:
    return f"{ways}way{shots}shot" + ("" if rule == "nn" else f"_{rule}")


def is_fewshot_metric(name: str) -> bool:
    """True for the accuracies this module names: ``oneshot``, ``5way1shot``, ``20way1shot_ncm``."""
    return name == ONESHOT or _EPISODE_NAME.fullmatch(name) is not None


def fewshot_metric_names(ways: Sequence[int] = (5, 20), shots: Sequence[int] = (1,),
                         oneshot: bool = True) -> list[str]:
    """Every higher-is-better few-shot metric name the evaluation can produce (no ``_ci95``)."""
    names = [ONESHOT] if oneshot else []
    for n in ways:
        for k in shots:
            names += [episode_name(n, k), episode_name(n, k, "ncm")]
    return names


def _first_argmin(distances: torch.Tensor) -> torch.Tensor:
    """argmin over the last axis, the first index on ties (torch's argmin does not promise which)."""
    best = distances.min(dim=-1, keepdim=True).values
    hits = distances <= best
    positions = torch.arange(distances.shape[-1], device=distances.device)
    return torch.where(hits, positions, distances.shape[-1]).min(dim=-1).values


def oneshot_accuracy(train_embeddings: torch.Tensor, test_embeddings: torch.Tensor,
                     answers: torch.Tensor) -> dict[str, object]:
    """Official one-shot score: ``train_embeddings`` / ``test_embeddings`` [R, W, D] (run r's W training and
    W test images), ``answers`` int64 [R, W] (the training image of each test item's class).

    Returns ``{"oneshot": accuracy over all R*W items, "per_run": [R] accuracies, "predictions": [R, W]}``.
    """
    if train_embeddings.dim() != 3 or train_embeddings.shape != test_embeddings.shape:
        raise ValueError(f"train and test embeddings must both be [runs, ways, dim], got "
                         f"{tuple(train_embeddings.shape)} and {tuple(test_embeddings.shape)}")
    if answers.shape != train_embeddings.shape[:2]:
        raise ValueError(f"answers must be [runs, ways] = {tuple(train_embeddings.shape[:2])}, "
                         f"got {tuple(answers.shape)}")
    distances = torch.cdist(test_embeddings.double(), train_embeddings.double())  # [R, test, train]
    predictions = _first_argmin(distances)
    correct = (predictions == answers.to(predictions.device)).double()
    return {ONESHOT: float(correct.mean()), "per_run": correct.mean(dim=1).tolist(),
            "predictions": predictions.cpu()}


def sample_episodes(labels: torch.Tensor, ways: int, shots: int, queries: int, episodes: int,
                    seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Seeded episodes over ``labels`` [N]: (support [E, ways, shots], query [E, ways, queries]) indices.

    Each episode draws ``ways`` distinct classes among those with at least ``shots + queries`` images,
    then ``shots + queries`` distinct images of each (without replacement; support first). Depends only on
    ``labels`` and ``seed`` (NumPy's PCG64), so every model is scored on the same episodes.
    """
    if ways < 2 or shots < 1 or queries < 1 or episodes < 1:
        raise ValueError(f"need ways >= 2, shots >= 1, queries >= 1, episodes >= 1; got {ways}, {shots}, "
                         f"{queries}, {episodes}")
    labels_np = np.asarray(torch.as_tensor(labels).cpu(), dtype=np.int64)
    classes, counts = np.unique(labels_np, return_counts=True)
    usable = classes[counts >= shots + queries]
    if len(usable) < ways:
        raise ValueError(f"{ways}-way {shots}-shot episodes with {queries} queries need {ways} classes "
                         f"with >= {shots + queries} images each; this split has {len(usable)}")
    members = {c: np.flatnonzero(labels_np == c) for c in usable}
    rng = np.random.default_rng(seed)
    picked = np.empty((episodes, ways, shots + queries), dtype=np.int64)
    for e in range(episodes):
        for j, c in enumerate(rng.choice(usable, size=ways, replace=False)):
            picked[e, j] = rng.choice(members[c], size=shots + queries, replace=False)
    picked_t = torch.from_numpy(picked)
    return picked_t[:, :, :shots], picked_t[:, :, shots:]


def episode_accuracy(embeddings: torch.Tensor, labels: torch.Tensor, ways: int, shots: int = 1,
                     queries: int = 5, episodes: int = 1000, seed: int = 0,
                     chunk: int = 256) -> dict[str, tuple[float, float]]:
    """Mean accuracy and 95 % CI half-width of ``ways``-way ``shots``-shot episodes on ``embeddings`` [N, D].

    Returns ``{"nn": (mean, ci95), "ncm": (mean, ci95)}`` (fractions in [0, 1]); with one shot the two
    rules coincide. The per-episode accuracy is the fraction of its ``ways * queries`` queries right.
    """
    embeddings = torch.as_tensor(embeddings)
    if embeddings.dim() != 2 or embeddings.shape[0] != len(labels):
        raise ValueError(f"embeddings must be [N, D] with N = len(labels) = {len(labels)}, got "
                         f"{tuple(embeddings.shape)}")
    support, query = sample_episodes(labels, ways, shots, queries, episodes, seed)
    x = embeddings.detach().double().cpu()
    truth = torch.arange(ways).repeat_interleave(queries)  # query order: class 0's queries, then class 1's
    scores: dict[str, list[torch.Tensor]] = {"nn": [], "ncm": []}
    for start in range(0, episodes, chunk):
        s = x[support[start:start + chunk]]                  # [e, ways, shots, D]
        q = x[query[start:start + chunk]].flatten(1, 2)      # [e, ways * queries, D]
        nearest = _first_argmin(torch.cdist(q, s.flatten(1, 2)))  # support index, class-major
        scores["nn"].append(((nearest // shots) == truth).double().mean(dim=1))
        means = s.mean(dim=2)                                # [e, ways, D]
        scores["ncm"].append((_first_argmin(torch.cdist(q, means)) == truth).double().mean(dim=1))
    out = {}
    for rule, parts in scores.items():
        per_episode = torch.cat(parts)
        std = float(per_episode.std(unbiased=True)) if episodes > 1 else 0.0
        out[rule] = (float(per_episode.mean()), _Z95 * std / math.sqrt(episodes))
    return out


def episode_metrics(embeddings: torch.Tensor, labels: torch.Tensor, ways: Sequence[int] = (5, 20),
                    shots: Sequence[int] = (1,), queries: int = 5, episodes: int = 1000,
                    seed: int = 0) -> dict[str, float]:
    """:func:`episode_accuracy` for every (ways, shots) pair, flattened: ``{"5way1shot": mean,
    "5way1shot_ci95": ci, "5way1shot_ncm": ..., ...}``. Pairs the split cannot supply are left out."""
    metrics: dict[str, float] = {}
    _, counts = np.unique(np.asarray(torch.as_tensor(labels).cpu()), return_counts=True)
    for n in ways:
        for k in shots:
            if int((counts >= k + queries).sum()) < n:
                continue
            result = episode_accuracy(embeddings, labels, n, k, queries, episodes, seed)
            for rule, (mean, ci) in result.items():
                metrics[episode_name(n, k, rule)] = mean
                metrics[episode_name(n, k, rule) + "_ci95"] = ci
    return metrics

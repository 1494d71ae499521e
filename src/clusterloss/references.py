"""What training starts from, measured on an evaluation split: the reference rows of the quickstart, of
``compare`` and of the comparison protocols (``results/<name>/reference.json``).

Raw pixels; the network as built, untrained (same seed as the run); with a pretrained backbone also the
backbone's own pooled features, L2-normalized, with no head (what the weights give with no training).
"""

from __future__ import annotations

import torch

from .config import Config
from .data.augment import normalize
from .data.dataset import ImageDataset
from .data.protocols import splits_from_config
from .inference import embed_dataset
from .metrics.evaluate import evaluate_as_configured
from .models import build_model_from_config, input_normalization
from .models.head import PooledFeatures

__all__ = ["reference_metrics"]


def reference_metrics(config: Config) -> dict[str, dict[str, float]]:
    """Metrics of raw pixels and of the untrained network (same seed as the run) on the evaluation split.

    With a pretrained backbone the network row is "pretrained backbone, untrained head", and a row of the
    backbone's own pooled features (L2-normalized, no head) is added. With ``data.validation`` the
    evaluation split is the validation classes. In-Shop's query/gallery split is scored queries against
    gallery, as the runs are.
    """
    ev = config.eval
    splits = splits_from_config(config.data)
    evaluation: ImageDataset = splits.eval

    def scores(embeddings: torch.Tensor) -> dict[str, float]:
        return evaluate_as_configured(embeddings, evaluation.labels, ev, query_mask=evaluation.query_mask)

    pixels = normalize(evaluation.images, splits.mean, splits.std).flatten(1)
    torch.manual_seed(config.train.seed)
    model = build_model_from_config(config.model, in_channels=int(evaluation.images.shape[1]))
    mean, std = input_normalization(model, splits.mean, splits.std)
    untrained = embed_dataset(model, evaluation, mean, std, batch_size=ev.batch_size)
    rows = {"raw pixels": scores(pixels)}
    if getattr(model, "preprocessing", None) is None:
        rows["untrained network"] = scores(untrained)
        return rows
    pooled = embed_dataset(PooledFeatures(model), evaluation, mean, std, batch_size=ev.batch_size)
    rows["pretrained backbone, pooled features"] = scores(pooled)
    rows["pretrained backbone, untrained head"] = scores(untrained)
    return rows

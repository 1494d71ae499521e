"""Fine-tuning the top of a frozen backbone on a CPU: the activations before its last blocks cached once.

``trainer: top_blocks`` (protocol ``features:`` keys ``views``, ``batch_size``, ``seed`` as for ``features``,
plus ``trainable_blocks`` N and ``cache_blocks`` K >= N, default K = N). The backbone (a timm EfficientNet:
``conv_stem, bn1, blocks[0..6], conv_head, bn2``) is cut before its last K blocks, counted one by one over
the flattened stages (tf_efficientnet_lite0 at 224 px: ``blocks[6][0]`` and ``blocks[5][1..3]`` all take
a 7x7x192 map, 18.8 kB as float16; ``blocks[5][0]`` takes 14x14x112). ``view_features`` caches that map for
the evaluation view + ``views - 1`` augmented views of every training image and the evaluation view of
every unseen image ([N, V, C, H, W] float16; keyed, resumable like ``features``). The K - N frozen blocks
between the cut and the trainable ones are run once over the cache when the runner starts. Each run then
trains a deep copy of the pretrained top (the last N blocks + ``conv_head`` + ``bn2``; BatchNorm statistics
frozen, i.e. eval mode as ``model.freeze_bn`` keeps them, affine parameters learned) + pooling + Linear -> L2
(``head.*``, at ``train.head_lr_multiplier`` x the learning rate) with the run's loss, sampler, optimizer and
schedule (``features.train_head``), and evaluates it once. The cache key hashes the data settings, the
backbone's model settings (not ``embedding_dim``, ``freeze_bn``, ``freeze_backbone``: a protocol may tune
the embedding size over one cache), views, seed and K.

``TopEmbedding(top, 1280, 64)`` with the untrained top reproduces the backbone's pooled features up to the
Linear layer (``pooled_reference``: the frozen-feature reference rows, on the same cache).
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import torch
from torch import nn

from ..config import Config
from ..metrics.evaluate import evaluate_as_configured
from ..models.head import PooledEmbeddingHead, global_pool
from .features import FeatureRunner, settings_key, train_head

__all__ = ["split_backbone", "TopEmbedding", "TopBlockRunner", "top_cache_key", "pooled_reference",
           "pca_init"]

_PARTS = ("conv_stem", "bn1", "blocks", "conv_head", "bn2")
# Model keys that change neither the backbone nor what is cached (a protocol may tune them over one cache).
_RUN_ONLY_MODEL_KEYS = ("embedding_dim", "freeze_bn", "freeze_backbone")


def split_backbone(model: nn.Module, cache_blocks: int) -> tuple[nn.Sequential, nn.Sequential]:
    """(bottom, top) of ``model.backbone`` (a timm EfficientNet) cut before its last ``cache_blocks`` blocks:
    images [B, 3, H, W] -> bottom -> [B, C, h, w] -> top -> the backbone's feature map [B, F, h', w'].
    Both share the model's modules (no copy)."""
    net = getattr(getattr(model, "backbone", None), "net", None)
    if net is None or not all(hasattr(net, part) for part in _PARTS):
        raise ValueError("trainer top_blocks needs a timm EfficientNet-style backbone "
                         f"({', '.join(_PARTS)}), got {type(net if net is not None else model).__name__}")
    flat = [block for stage in net.blocks for block in stage]
    if not 1 <= cache_blocks <= len(flat):
        raise ValueError(f"features.cache_blocks / trainable_blocks must be in 1..{len(flat)} (the "
                         f"backbone's blocks), got {cache_blocks}")
    bottom = nn.Sequential(net.conv_stem, net.bn1, *flat[:-cache_blocks])
    top = nn.Sequential(*flat[-cache_blocks:], net.conv_head, net.bn2)
    return bottom, top


class TopEmbedding(nn.Module):
    """Cached maps [B, C, h, w] -> ``top`` (trainable blocks + conv_head + bn2) -> pooling -> Linear -> L2
    [B, embedding_dim]. BatchNorm layers of ``top`` stay in eval mode in ``train()`` (statistics frozen)."""

    def __init__(self, top: nn.Module, out_features: int, embedding_dim: int, pooling: str = "avg") -> None:
        super().__init__()
        self.top = top
        self.head = PooledEmbeddingHead(out_features, embedding_dim, pooling)
        for param in self.top.parameters():
            param.requires_grad_(True)
        self.train(self.training)

    def train(self, mode: bool = True) -> TopEmbedding:
        super().train(mode)
        for module in self.top.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.eval()
        return self

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.head(self.top(features))


def top_cache_key(config: Config, views: int, seed: int, cache_blocks: int) -> str:
    """16 hex digits hashing what the cache depends on (see the module docstring)."""
    return settings_key(config, _RUN_ONLY_MODEL_KEYS, trainer="top_blocks", views=views, seed=seed,
                        cache_blocks=cache_blocks)


@torch.inference_mode()
def _through(blocks: nn.Module, maps: torch.Tensor, chunk: int = 256) -> torch.Tensor:
    """float16 maps [N, (V,) C, h, w] through frozen ``blocks`` in eval mode, chunk by chunk."""
    blocks.eval()
    flat = maps.reshape(-1, *maps.shape[-3:])
    out = torch.cat([blocks(flat[i:i + chunk].float()).half() for i in range(0, len(flat), chunk)])
    return out.reshape(*maps.shape[:-3], *out.shape[1:])


class TopBlockRunner(FeatureRunner):
    """``runner(config, run_dir) -> metrics`` for protocols with ``trainer: top_blocks`` (module docstring);
    validation runs select the cached training images of the validation classes as ``FeatureRunner`` does."""

    KNOWN = ("views", "batch_size", "seed", "trainable_blocks", "cache_blocks", "head_init")
    HEAD_INITS = ("random", "pca", "pca_uncentered")

    def __init__(self, protocol, cache_dir: Path, final: Config, tuning: Config) -> None:
        options = dict(protocol.features)
        try:
            self.trainable = int(options.get("trainable_blocks", 1))
            self.cache_blocks = int(options.get("cache_blocks", self.trainable))
        except (TypeError, ValueError):
            raise ValueError(f"{protocol.path}: features.trainable_blocks / cache_blocks must be integers, "
                             f"got {options.get('trainable_blocks')!r} / {options.get('cache_blocks')!r}"
                             ) from None
        if not 1 <= self.trainable <= self.cache_blocks:
            raise ValueError(f"{protocol.path}: need 1 <= features.trainable_blocks <= cache_blocks, got "
                             f"{self.trainable} and {self.cache_blocks}")
        self.head_init = options.get("head_init", "random")
        if self.head_init not in self.HEAD_INITS:
            raise ValueError(f"{protocol.path}: features.head_init must be one of {self.HEAD_INITS}, got "
                             f"{self.head_init!r}")
        self._model: nn.Module | None = None
        super().__init__(protocol, cache_dir, final, tuning)  # options checked, leak check, cache built/read
        model = self.backbone_model(final)
        _, top = split_backbone(model, self.cache_blocks)
        frozen = self.cache_blocks - self.trainable
        self.pooling = getattr(model.head, "pooling", "avg")
        self.out_features = int(model.backbone.out_features)
        # A fresh deep copy of it per run: every run starts from the pretrained top (renumbered from 0).
        self.top = nn.Sequential(*list(top)[frozen:])
        if frozen:  # blocks no run trains: once over the cache, not at every step
            self.cache = {**self.cache, "train": _through(top[:frozen], self.cache["train"]),
                          "eval": _through(top[:frozen], self.cache["eval"])}

    def key_of(self, config: Config) -> str:
        return top_cache_key(config, self.views, self.seed, self.cache_blocks)

    def backbone_model(self, config: Config) -> nn.Module:
        if self._model is None:  # built once (pretrained weights read once), shared by cache and top
            self._model = super().backbone_model(config).eval()
            self._check_split(self._model)
        return self._model

    def _check_split(self, model: nn.Module) -> None:
        """bottom -> top must give the backbone's own output (a cheap probe: catches an arch whose
        forward is not conv_stem, bn1, blocks, conv_head, bn2)."""
        bottom, top = split_backbone(model, self.cache_blocks)
        channels = int(self.final_splits.train.images.shape[1])
        probe = torch.randn(2, channels, 64, 64, generator=torch.Generator().manual_seed(0))
        with torch.inference_mode():
            if not torch.allclose(top(bottom(probe)), model.backbone(probe), rtol=1e-4, atol=1e-5):
                raise ValueError(f"trainer top_blocks: {type(model.backbone.net).__name__}'s forward is not "
                                 f"conv_stem -> bn1 -> blocks -> conv_head -> bn2; use trainer: features")

    def extractor(self, model: nn.Module):
        bottom, _ = split_backbone(model, self.cache_blocks)
        return bottom

    def new_model(self, embedding_dim: int) -> TopEmbedding:
        """The pretrained top (a deep copy) + a new Linear -> L2 head (seeded by the caller)."""
        return TopEmbedding(copy.deepcopy(self.top), self.out_features, embedding_dim, self.pooling)

    def train(self, config: Config, args: tuple, run_dir: Path, query_mask) -> dict[str, float]:
        torch.manual_seed(config.train.seed)  # the head's initial weights, as train_head seeds its own
        model = self.new_model(config.model.embedding_dim)
        if self.head_init != "random":  # from the run's own training images (evaluation view) only
            pca_init(model.head.linear, self.pooled(args[0][:, 0]), center=self.head_init == "pca")
        return train_head(config, *args, run_dir, eval_query_mask=query_mask, model=model)

    def __call__(self, config: Config, run_dir: Path) -> dict[str, float]:
        # The trainer's own options are not in the run's config: a run made with others is never reused.
        mine = {"trainable_blocks": self.trainable, "cache_blocks": self.cache_blocks,
                "head_init": self.head_init, "cache": self.key}
        path = Path(run_dir) / "top_blocks.json"
        if path.exists() and json.loads(path.read_text()) != mine:
            raise ValueError(f"{run_dir} holds a run made with other top_blocks options "
                             f"({path.read_text().strip()} vs {json.dumps(mine, sort_keys=True)}); choose "
                             "another output folder or delete that run")
        Path(run_dir).mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(mine, sort_keys=True) + "\n")
        return super().__call__(config, run_dir)

    def pooled(self, maps: torch.Tensor) -> torch.Tensor:
        """Pooled features [M, F] of the untrained top on cached maps [M, C, h, w] (float32)."""
        with torch.inference_mode():
            self.top.eval()
            return torch.cat([global_pool(self.top(maps[i:i + 256].float()), self.pooling)
                              for i in range(0, len(maps), 256)])

    def reference_features(self, validation: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """Pooled, L2-normalized features [M, F] of the untrained top on the evaluation view of a split (the
        validation classes of the tuning split, or the unseen classes) and their labels."""
        if validation:
            rows = self._select(self.tuning_splits.eval)
            maps, labels = self.cache["train"][rows, 0], self.cache["train_labels"][rows]
        else:
            maps, labels = self.cache["eval"], self.cache["eval_labels"]
        return nn.functional.normalize(self.pooled(maps), dim=1), labels


@torch.no_grad()
def pca_init(linear: nn.Linear, features: torch.Tensor, center: bool = True) -> None:
    """Set ``linear`` (F -> d, d <= F) to the projection onto the d leading principal directions of
    ``features`` [M, F] after centring (weight: orthonormal rows, bias: -weight @ mean), so the untrained head
    keeps as much of the pooled features' variance as d dimensions can. ``center=False``: directions of the
    uncentred features and bias 0 (the untrained head keeps their cosine geometry, not the centred one)."""
    d = linear.out_features
    if d > min(features.shape):
        raise ValueError(f"features.head_init: pca needs model.embedding_dim <= {min(features.shape)} "
                         f"(features / training images), got {d}")
    features = features.double()
    mean = features.mean(0) if center else torch.zeros_like(features[0])
    _, _, vh = torch.linalg.svd(features - mean, full_matrices=False)
    linear.weight.copy_(vh[:d].float())
    linear.bias.copy_(-(vh[:d] @ mean).float())


def pooled_reference(runner: TopBlockRunner, config: Config, validation: bool) -> dict[str, float]:
    """Metrics of the untrained backbone's pooled features (the frozen-feature reference rows) on the
    validation classes or the unseen classes, with ``config.eval``'s evaluation (query/gallery mask of the
    final split where it has one)."""
    features, labels = runner.reference_features(validation)
    mask = None if validation else runner.final_splits.eval.query_mask
    return evaluate_as_configured(features, labels, config.eval, query_mask=mask)

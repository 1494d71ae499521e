"""Resumable training of an embedding network with a metric-learning loss.

``train(config, run_dir, resume=False) -> dict`` runs (or continues) a run and returns the final evaluation
metrics. The run directory holds ``config.yaml``, ``metrics.jsonl``, ``last.pt``, ``best.pt`` and ``tb/``.

Resume exactness: the checkpoint holds the model, optimizer, per-iteration lr schedule (its step count),
sampler position (mid-epoch), the augmentation generator and the global RNG states, so a run stopped at any
step boundary and resumed ends with the same weights as an uninterrupted run (on CPU; GPU kernels may be
non-deterministic). Evaluation touches neither the training RNGs nor the weights.
"""

from __future__ import annotations

import itertools
import json
import math
import signal
import threading
import time
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from . import distributed
from .checkpoint import (
    capture_rng_state,
    load_backbone,
    load_resumable,
    load_weights,
    remove_stale_temp_files,
    restore_rng_state,
    save_checkpoint,
)
from .config import Config, save_config
from .run_lock import run_lock
from .schedule import IterationSchedule, build_optimizer, margin_decay_of, margin_multiplier_at
from .utils.devices import resolve_device
from .utils.files import atomic_write_text


class NonFiniteError(RuntimeError):
    """The loss or a gradient became NaN/Inf; the last good checkpoint was left untouched."""


class TrainingInterrupted(RuntimeError):
    """SIGTERM/SIGINT arrived; a checkpoint was saved at the current step. ``signum`` says which."""

    def __init__(self, message: str, signum: int) -> None:
        super().__init__(message)
        self.signum = signum


class Trainer:
    """Owns the objects of one run; ``fit()`` trains to ``config.train.epochs`` and returns eval metrics."""

    def __init__(self, config: Config, run_dir: str | Path, resume: bool = False,
                 resume_from: tuple[dict[str, Any], Path] | None = None) -> None:
        from .data.loader import DeviceBatchLoader
        from .data.protocols import splits_from_config
        from .data.sampler import ClassBalancedBatchSampler
        from .losses import build_loss
        from .models import build_model_from_config, input_normalization

        t = config.train
        self.config, self.run_dir = config, Path(run_dir)
        if t.mallopt:
            from .malloc_tuning import tune_malloc
            tune_malloc()
        if t.num_threads > 0:
            torch.set_num_threads(t.num_threads)
        device = resolve_device(t.device)
        if distributed.launched_by_torchrun():
            device = distributed.init_from_env(device.type)
        self.device, self.rank, self.world = device, distributed.rank(), distributed.world_size()
        self.main = self.rank == 0
        torch.manual_seed(t.seed)  # same init on every rank (DDP also broadcasts rank 0's weights)

        d = config.data
        with distributed.node_leader_first():  # a dataset cache (ImageNet) is built once per node
            self.splits = splits_from_config(d)
        train_labels = self.splits.train.labels
        classes = torch.unique(train_labels)
        # Losses see contiguous ids 0..C-1 (proxy_anchor needs them; the others are indifferent).
        self.label_map = torch.full((int(classes.max()) + 1,), -1, dtype=torch.int64)
        self.label_map[classes] = torch.arange(len(classes))
        self.label_map = self.label_map.to(device)
        self.in_channels = int(self.splits.train.images.shape[1])

        self.sampler = ClassBalancedBatchSampler(train_labels, t.batch_classes, t.batch_samples, seed=t.seed,
                                                 rank=self.rank, world_size=self.world)
        self.augment_rng = torch.Generator(device=device)
        self.augment_rng.manual_seed(t.seed * 1_000_003 + self.rank)
        m = config.model
        # Weights are read here (before the loader) because a pretrained backbone brings its own input
        # normalization (model.preprocessing), used instead of the training images' statistics.
        self.model = build_model_from_config(m, in_channels=self.in_channels, load_weights=not resume)
        self.norm_mean, self.norm_std = input_normalization(self.model, self.splits.mean, self.splits.std)
        self.loader = DeviceBatchLoader(self.splits.train, self.sampler, device, self.norm_mean,
                                        self.norm_std, augment=d.augment, padding=d.padding,
                                        generator=self.augment_rng, augmentation=d.augmentation)
        self.steps_per_epoch = len(self.sampler)
        if t.steps_per_epoch is not None:
            if not 1 <= t.steps_per_epoch <= len(self.sampler):
                raise ValueError(f"train.steps_per_epoch must be in [1, {len(self.sampler)}] (one pass of "
                                 f"the sampler), got {t.steps_per_epoch}")
            self.steps_per_epoch = t.steps_per_epoch
        self.total_steps = self.steps_per_epoch * t.epochs

        if t.init_from and not resume:
            load_backbone(self.model, t.init_from)
        self.memory_format = torch.channels_last if t.channels_last else torch.contiguous_format
        self.model.to(device, memory_format=self.memory_format)
        loss_options = dict(config.loss.options)
        if config.loss.name == "facility_location":
            loss_options = {"margin_multiplier": config.loss.margin_multiplier,
                            "margin_type": config.loss.margin_type,
                            "pam_iterations": config.loss.pam_iterations, **loss_options}
        self.loss_fn = build_loss(config.loss.name, m.embedding_dim, len(classes), **loss_options).to(device)
        # gamma_t of loss.margin_decay_*, recomputed from the global step before every step (resume-exact)
        self.margin_decay = margin_decay_of(config.loss, self.steps_per_epoch)
        self.margin_multiplier = config.loss.margin_multiplier
        self.net: nn.Module = self.model
        if t.sync_bn and device.type != "cuda":
            raise ValueError("train.sync_bn needs CUDA devices (PyTorch's SyncBatchNorm does not run on "
                             "CPU); drop it, or train on GPUs")
        if self.world > 1:
            if t.sync_bn:  # BatchNorm statistics over the global batch, as one process would compute them
                self.model = nn.SyncBatchNorm.convert_sync_batchnorm(self.model)
            self.net = nn.parallel.DistributedDataParallel(
                self.model, device_ids=[device.index] if device.type == "cuda" else None)
        self.optimizer = build_optimizer(t.optimizer, self.model, self.loss_fn, t.lr, t.momentum, t.nesterov,
                                         t.weight_decay, t.no_decay_bn_bias, config.loss.param_lr_multiplier,
                                         t.head_lr_multiplier)
        self.schedule = IterationSchedule(self.optimizer, self.total_steps, t.schedule, t.milestones,
                                          t.lr_decay, round(t.warmup_epochs * self.steps_per_epoch),
                                          t.min_lr / t.lr)
        self.amp_dtype = {"none": None, "bf16": torch.bfloat16, "fp16": torch.float16}[t.amp]
        self.scaler = torch.amp.GradScaler(device.type, enabled=t.amp == "fp16")

        self.epoch, self.step = 0, 0
        self.best: dict[str, Any] = {"metric": config.eval.best_metric, "value": -math.inf, "epoch": -1}
        self.last_eval: dict[str, float] = {}
        self._stop_signal: int | None = None
        if resume:
            self._resume(resume_from)
        self.writer = None
        if self.main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            save_config(config, self.run_dir / "config.yaml")
            if not resume:  # a run that crashed before its first checkpoint left records of steps never kept
                _truncate_metrics(self.run_dir / "metrics.jsonl", -1)
            from torch.utils.tensorboard import SummaryWriter
            self.writer = SummaryWriter(str(self.run_dir / "tb"), purge_step=self.step if resume else None)

    # -- checkpoints ---------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        rng = {"global": capture_rng_state(), "augment": self.augment_rng.get_state()}
        if self.world > 1:  # every rank's generators, so each continues its own stream after a resume
            ranks: list[Any] = [None] * self.world
            dist.all_gather_object(ranks, {k: _to_cpu(v) for k, v in rng.items()})
            rng = {"ranks": ranks}
        else:
            rng = {"ranks": [rng]}
        return {
            "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
            "scheduler": self.schedule.state_dict(), "scaler": self.scaler.state_dict(),
            "sampler": self.sampler.state_dict(), "rng": rng, "loss": self.loss_fn.state_dict(),
            "config": self.config.to_dict(), "epoch": self.epoch, "step": self.step,
            "in_channels": self.in_channels, "world_size": self.world, "best": dict(self.best),
            "data_stats": {"mean": [float(v) for v in self.norm_mean],  # the normalization used
                           "std": [float(v) for v in self.norm_std]},
        }

    def save(self, names: tuple[str, ...] = ("last.pt",)) -> None:
        state = self.state_dict()  # collective under DDP: every rank takes part
        if self.main:
            for name in names:
                # last.pt keeps the checkpoint it replaces as last.prev.pt: resume falls back to it.
                save_checkpoint(state, self.run_dir / name, keep_previous=name == "last.pt")

    def _resume(self, found: tuple[dict[str, Any], Path] | None = None) -> None:
        """Continue from the newest readable checkpoint (``last.pt``, else an older intact one)."""
        ckpt, path = found or load_resumable(self.run_dir, map_location="cpu")
        if ckpt.get("world_size", 1) != self.world:
            raise ValueError(f"{path} was written by {ckpt.get('world_size')} processes, now {self.world}; "
                             "resume with the same number of processes")
        load_weights(self.model, ckpt["model"], str(path))
        self.loss_fn.load_state_dict(ckpt["loss"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.schedule.load_state_dict(ckpt["scheduler"])
        self.scaler.load_state_dict(ckpt["scaler"])
        self.sampler.load_state_dict(ckpt["sampler"])
        rng = ckpt["rng"]["ranks"][self.rank]
        restore_rng_state(rng["global"])
        self.augment_rng.set_state(rng["augment"])
        self.epoch, self.step, self.best = int(ckpt["epoch"]), int(ckpt["step"]), dict(ckpt["best"])
        if self.main:
            _truncate_metrics(self.run_dir / "metrics.jsonl", self.step)

    # -- logging -------------------------------------------------------------------------------------
    def log(self, split: str, values: dict[str, float]) -> None:
        if not self.main:
            return
        record = {"epoch": self.epoch, "step": self.step, "split": split, **values}
        with open(self.run_dir / "metrics.jsonl", "a") as handle:
            handle.write(json.dumps(record) + "\n")
        if self.writer is not None:
            for key, value in values.items():
                if isinstance(value, (int, float)):
                    self.writer.add_scalar(f"{split}/{key}", value, self.step)

    # -- one iteration -------------------------------------------------------------------------------
    def _autocast(self):
        return torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.amp_dtype is not None)

    def train_step(self, images: torch.Tensor, labels: torch.Tensor) -> float:
        if self.margin_decay is not None:  # this step's gamma (self.step = its 0-based index)
            self.margin_multiplier = margin_multiplier_at(self.step, **self.margin_decay)
            self.loss_fn.set_margin_multiplier(self.margin_multiplier)
        images = images.contiguous(memory_format=self.memory_format)
        with self._autocast():
            embeddings = self.net(images)
        loss = self.loss_fn(embeddings.float(), self.label_map[labels])
        value = float(loss.detach())
        if not math.isfinite(value):
            raise NonFiniteError(self._nonfinite_message(f"loss is {value}"))
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self._sync_loss_grads()
        if not self.scaler.is_enabled():  # with fp16 the scaler skips inf/nan steps by design
            grads = [p.grad for g in self.optimizer.param_groups for p in g["params"] if p.grad is not None]
            if grads and not torch.isfinite(torch.stack(torch._foreach_norm(grads)).sum()):
                raise NonFiniteError(self._nonfinite_message("a gradient is NaN/Inf"))
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.schedule.step()
        return value

    def _sync_loss_grads(self) -> None:
        # The loss's own parameters (proxies) are outside DDP: average their gradients across ranks.
        if self.world == 1:
            return
        for p in self.loss_fn.parameters():
            if p.grad is not None:
                dist.all_reduce(p.grad, op=dist.ReduceOp.SUM)
                p.grad /= self.world

    def _nonfinite_message(self, what: str) -> str:
        last = self.run_dir / "last.pt"
        kept = f"the last good checkpoint {last} is untouched" if last.exists() else "no checkpoint yet"
        return (f"{what} at step {self.step + 1} (epoch {self.epoch + 1}); stopping. {kept}. Try a lower "
                "train.lr, train.amp=none, or warm-up (train.warmup_epochs).")

    # -- evaluation ----------------------------------------------------------------------------------
    def embed_eval_split(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Embeddings [N, D] (float32, CPU) of the eval split in dataset order, and its labels [N]."""
        from .inference import embed_dataset

        embeddings = embed_dataset(self.model, self.splits.eval, self.norm_mean, self.norm_std,
                                   batch_size=self.config.eval.batch_size, device=self.device,
                                   amp_dtype=self.amp_dtype, memory_format=self.memory_format)
        return embeddings, self.splits.eval.labels

    def evaluate(self) -> dict[str, float]:
        from .metrics.evaluate import evaluate_embeddings

        embeddings, labels = self.embed_eval_split()
        # In-Shop-style splits carry a query mask: queries are searched against the gallery only.
        metrics = evaluate_embeddings(embeddings, labels, ks=tuple(self.config.eval.ks),
                                      kmeans_seeds=tuple(self.config.eval.kmeans_seeds),
                                      kmeans_iterations=self.config.eval.kmeans_iterations,
                                      query_mask=getattr(self.splits.eval, "query_mask", None))
        metrics.update(self._fewshot(embeddings, labels))
        # An undefined score stays None (JSON null, with its reason under "undefined"), never NaN.
        return {k: float(v) if isinstance(v, (int, float)) else v for k, v in metrics.items()}

    def _fewshot(self, embeddings: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
        """Few-shot episodes (``eval.episodes``) and the official Omniglot one-shot runs."""
        from .metrics.fewshot_eval import fewshot_metrics, model_embedder

        embed = model_embedder(self.model, self.norm_mean, self.norm_std, self.device,
                               self.config.eval.batch_size, amp_dtype=self.amp_dtype,
                               memory_format=self.memory_format)
        return fewshot_metrics(self.config, embeddings, labels, embed)[0]

    # -- the loop ------------------------------------------------------------------------------------
    def _handle_signal(self, signum, frame) -> None:
        self._stop_signal = signum

    def _stop_requested(self) -> bool:
        flag = self._stop_signal is not None
        if self.world > 1:  # all ranks must stop at the same step
            t = torch.tensor([float(flag)], device=self.device)
            dist.all_reduce(t)
            flag = bool(t.item() > 0)
        return flag

    def fit(self) -> dict[str, Any]:
        t, ev = self.config.train, self.config.eval
        previous = {}
        if threading.current_thread() is threading.main_thread():  # handlers can only be set there
            previous = {s: signal.signal(s, self._handle_signal) for s in (signal.SIGTERM, signal.SIGINT)}
        try:
            self.model.train()
            while self.epoch < t.epochs:
                self._run_epoch()
                self.epoch += 1
                last_epoch = self.epoch == t.epochs
                names: tuple[str, ...] = ("last.pt",)
                if last_epoch or (ev.every_epochs and self.epoch % ev.every_epochs == 0):
                    if self.main:
                        self.last_eval = self.evaluate()
                        self.log("eval", self.last_eval)
                        value = self.last_eval.get(ev.best_metric)
                        value = value if isinstance(value, (int, float)) else -math.inf
                        if value > self.best["value"]:
                            self.best = {"metric": ev.best_metric, "value": value, "epoch": self.epoch}
                            names = ("last.pt", "best.pt")
                    if self.world > 1:
                        flags = [names]
                        dist.broadcast_object_list(flags, src=0)
                        names = flags[0]
                self.save(names)
                # A stop asked for during the last epoch has nothing left to interrupt: the run is complete.
                if self._stop_requested() and self.epoch < t.epochs:
                    self._interrupt()
            if not self.last_eval and self.main:  # resumed a run that had already finished
                self.last_eval = self.evaluate()
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)
            if self.writer is not None:
                self.writer.close()
        return {**self.last_eval, "epoch": self.epoch, "step": self.step}

    def _run_epoch(self) -> None:
        t = self.config.train
        self.loader.set_epoch(self.epoch)
        done = self.step - self.epoch * self.steps_per_epoch  # > 0 when resuming mid-epoch
        batches = itertools.islice(self.loader, self.steps_per_epoch - done)
        bar = None
        if self.main and t.progress:
            from tqdm import tqdm
            bar = tqdm(total=self.steps_per_epoch, initial=done, desc=f"epoch {self.epoch + 1}/{t.epochs}",
                       dynamic_ncols=True, leave=False)
        start, images_seen, losses, margins = time.perf_counter(), 0, [], []
        for images, labels in batches:
            lr = self.optimizer.param_groups[0]["lr"]
            losses.append(self.train_step(images, labels))
            margin = loss_margin_stats(self.loss_fn)  # facility location only: its margin's share
            if margin is not None:
                margins.append(margin)
            self.step += 1
            images_seen += images.shape[0] * self.world
            rate = images_seen / max(time.perf_counter() - start, 1e-9)
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{losses[-1]:.4f}", lr=f"{lr:.3g}", img_s=f"{rate:.0f}")
            if t.log_every_steps and self.step % t.log_every_steps == 0:
                recent = losses[-t.log_every_steps:]
                values = {"loss": sum(recent) / len(recent), "lr": lr, "images_per_s": rate}
                window = margins[-t.log_every_steps:]
                for key in ("margin", "margin_share") if window else ():
                    values[key] = sum(m[key] for m in window) / len(window)
                if self.margin_decay is not None:  # gamma of the window's last step, as lr
                    values["margin_multiplier"] = self.margin_multiplier
                self.log("train", values)
            if t.checkpoint_every_steps and self.step % t.checkpoint_every_steps == 0:
                self.save()
            if self._stop_requested() and self.step < (self.epoch + 1) * self.steps_per_epoch:
                self.save()
                self._interrupt()
        if bar is not None:
            bar.close()

    def _interrupt(self) -> None:
        name = signal.Signals(self._stop_signal).name if self._stop_signal else "a stop request"
        message = (f"{name} received: saved {self.run_dir / 'last.pt'} after step {self.step} ({self.epoch} "
                   f"epochs complete); continue with `clusterloss train --resume {self.run_dir}`")
        raise TrainingInterrupted(message, self._stop_signal or signal.SIGTERM)


def loss_margin_stats(loss_fn: nn.Module) -> dict[str, float] | None:
    """The facility-location margin of the last batch and its share of the hinge's argument,
    ``margin / (margin + |F(S*) - F~(y)|)`` in [0, 1] (= margin / loss when the energy gap is >= 0), from
    the loss module's ``last_stats`` (``{"margin", "energy_gap"}``); None for losses without them."""
    inner = getattr(loss_fn, "loss", None)
    stats = getattr(loss_fn, "last_stats", None) or getattr(inner, "last_stats", None)
    if not stats:
        return None
    margin, gap = float(stats["margin"]), abs(float(stats["energy_gap"]))
    return {"margin": margin, "margin_share": margin / (margin + gap) if margin + gap > 0 else 0.0}


def _to_cpu(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.cpu()
    if isinstance(value, dict):
        return {k: _to_cpu(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_to_cpu(v) for v in value]
    return value


def _truncate_metrics(path: Path, step: int) -> None:
    """Drop metrics.jsonl lines written after the checkpoint we resume from (the killed run's tail)."""
    if not path.exists():
        return
    kept = []
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:  # a line cut short when the run was killed mid-write
            continue
        if isinstance(record, dict) and record.get("step", math.inf) <= step:
            kept.append(line)
    atomic_write_text(path, "".join(line + "\n" for line in kept))


def train(config: Config | None, run_dir: str | Path, resume: bool = False) -> dict[str, Any]:
    """Run (or, with ``resume``, continue from ``run_dir/last.pt``) a training run; return final eval metrics.

    With ``resume`` and ``config=None`` the configuration stored in the checkpoint is used.
    """
    run_dir = Path(run_dir)
    if not distributed.is_main_process():  # rank 0 holds the run directory's lock for all ranks
        return _train_locked(config, run_dir, resume)
    with run_lock(run_dir, "train --resume" if resume else "train", create=not resume):
        return _train_locked(config, run_dir, resume)


def _train_locked(config: Config | None, run_dir: Path, resume: bool) -> dict[str, Any]:
    found = None
    if distributed.is_main_process():  # we hold the lock: no save is running, leftovers are a killed one's
        remove_stale_temp_files(run_dir)
    if resume:
        found = load_resumable(run_dir)  # last.pt, or an older intact checkpoint when it is unreadable
        if config is None:
            config = Config.from_dict(found[0]["config"])
    elif config is None:
        raise ValueError("train() needs a config unless resume=True")
    elif (run_dir / "last.pt").exists():
        raise ValueError(f"{run_dir} already holds a run (last.pt); resume it with --resume or pick a new "
                         "--run-dir")
    metrics = Trainer(config, run_dir, resume=resume, resume_from=found).fit()
    if distributed.launched_by_torchrun() and distributed.is_distributed():
        # Only after success: a failed rank just exits and torchrun stops the others.
        dist.barrier()  # no rank tears the group down while another still talks to it
        dist.destroy_process_group()
    return metrics

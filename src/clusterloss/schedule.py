"""Optimizers (SGD with Nesterov momentum, Adam, AdamW, RMSprop; a separate head lr), the learning-rate
schedules, stepped once per iteration, and the facility-location margin multiplier's decay.

The schedule is a pure function of the global step (``lr_factor``), so resuming restores it exactly from the
step count alone. Milestones are fractions of the run: ``[0.5, 0.75]`` of 100 epochs divides the lr by 10 at
the first iteration of epochs 50 and 75, as the per-epoch schedule of the original recipe did.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import torch
from torch import nn


def lr_factor(step: int, total_steps: int, schedule: str = "step", milestones: Sequence[float] = (0.5, 0.75),
              decay: float = 0.1, warmup_steps: int = 0, min_factor: float = 0.0) -> float:
    """Multiplier of the base lr at iteration ``step`` (0-based) of ``total_steps``.

    ``step``: ``decay ** (number of milestones m with step >= m * total_steps)``. ``cosine``: from 1 after
    warm-up down to ``min_factor`` at the end. ``constant``: 1. Warm-up (any schedule) ramps linearly
    ``(step + 1) / warmup_steps`` over the first ``warmup_steps`` iterations.
    """
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    if schedule == "constant":
        return 1.0
    if schedule == "step":
        return decay ** sum(step >= round(m * total_steps) for m in milestones)
    if schedule == "cosine":
        span = max(total_steps - warmup_steps, 1)
        progress = min((step - warmup_steps) / span, 1.0)
        return min_factor + (1 - min_factor) * 0.5 * (1 + math.cos(math.pi * progress))
    raise ValueError(f"unknown schedule {schedule!r}; use 'step', 'cosine' or 'constant'")


def margin_multiplier_at(step: int, initial: float, rate: float = 1.0, period_steps: float = 1.0,
                         staircase: bool = False) -> float:
    """The facility-location margin multiplier gamma used at iteration ``step`` (0-based).

    ``initial * rate ** (step / period_steps)``, TensorFlow's ``tf.train.exponential_decay`` rule (Song et
    al. 2017 decay gamma exponentially, rate 0.94); ``staircase``: ``rate ** floor(step / period_steps)``,
    gamma constant within each period. ``rate`` 1 keeps gamma constant. A pure function of the global step,
    so a resumed run uses exactly the gamma an uninterrupted one would.
    """
    if not 0 < rate <= 1:
        raise ValueError(f"the margin decay rate must be in (0, 1], got {rate}")
    if not (period_steps > 0 and math.isfinite(period_steps)):
        raise ValueError(f"the margin decay period must be > 0 steps, got {period_steps}")
    if rate == 1:
        return float(initial)
    exponent = step / period_steps
    return float(initial) * rate ** (math.floor(exponent) if staircase else exponent)


def margin_decay_of(loss_config, steps_per_epoch: int) -> dict[str, float | bool] | None:
    """The keyword arguments of :func:`margin_multiplier_at` (but ``step``) for a ``LossConfig``'s
    ``margin_decay_*`` keys, the period in steps; None for a loss without a margin multiplier (the config
    refuses a decay rate < 1 there). One rule for every training loop (trainer, frozen-feature heads)."""
    if loss_config.name != "facility_location":
        return None
    return {"initial": loss_config.margin_multiplier, "rate": loss_config.margin_decay_rate,
            "period_steps": loss_config.margin_decay_epochs * steps_per_epoch,
            "staircase": loss_config.margin_decay_staircase}


class IterationSchedule:
    """Sets every param group's lr to ``group["base_lr"] * lr_factor(step)``; state is the step count."""

    def __init__(self, optimizer: torch.optim.Optimizer, total_steps: int, schedule: str = "step",
                 milestones: Sequence[float] = (0.5, 0.75), decay: float = 0.1, warmup_steps: int = 0,
                 min_factor: float = 0.0) -> None:
        self.optimizer = optimizer
        self.kwargs = dict(total_steps=total_steps, schedule=schedule, milestones=tuple(milestones),
                           decay=decay, warmup_steps=warmup_steps, min_factor=min_factor)
        lr_factor(0, **self.kwargs)  # validate the schedule name now
        self.step_count = 0
        self._apply()

    def _apply(self) -> None:
        factor = lr_factor(self.step_count, **self.kwargs)
        for group in self.optimizer.param_groups:
            group["lr"] = group["base_lr"] * factor

    def step(self) -> None:
        self.step_count += 1
        self._apply()

    def get_last_lr(self) -> list[float]:
        return [group["lr"] for group in self.optimizer.param_groups]

    def state_dict(self) -> dict:
        return {"step": self.step_count}

    def load_state_dict(self, state: dict) -> None:
        self.step_count = int(state["step"])
        self._apply()


def _is_no_decay(name: str, param: nn.Parameter, module_types: dict[str, type]) -> bool:
    owner = name.rsplit(".", 1)[0] if "." in name else ""
    return param.dim() <= 1 or name.endswith(".bias") or issubclass(module_types.get(owner, object),
                                                                       nn.modules.batchnorm._NormBase)


def param_groups(model: nn.Module, loss: nn.Module, lr: float, weight_decay: float = 1e-4,
                 no_decay_bn_bias: bool = False, loss_lr_multiplier: float = 1.0,
                 head_lr_multiplier: float = 1.0) -> list[dict]:
    """The optimizer's parameter groups, in a fixed order (so optimizer state loads back).

    ``model`` (trainable parameters only: a frozen backbone has none), split off ``head.*`` at
    ``lr * head_lr_multiplier`` when that is not 1; with ``no_decay_bn_bias`` BatchNorm weights/biases and
    all biases go to groups without weight decay; the loss's own parameters (e.g. proxies) at
    ``lr * loss_lr_multiplier``, no decay. Each group carries ``base_lr`` for ``IterationSchedule``.
    """
    module_types = {name: type(m) for name, m in model.named_modules()}
    split_head = head_lr_multiplier != 1.0
    buckets: dict[str, list[nn.Parameter]] = {name: [] for name in
                                              ("model", "model_no_decay", "head", "head_no_decay")}
    for name, param in model.named_parameters():
        if param.requires_grad:
            part = "head" if split_head and name.startswith("head.") else "model"
            exempt = no_decay_bn_bias and _is_no_decay(name, param, module_types)
            buckets[part + ("_no_decay" if exempt else "")].append(param)
    groups: list[dict] = []
    for name, params in buckets.items():
        if params or name == "model":
            head = name.startswith("head")
            decay = 0.0 if name.endswith("no_decay") else weight_decay
            groups.append({"params": params, "weight_decay": decay,
                           "base_lr": lr * (head_lr_multiplier if head else 1.0), "name": name})
    if not groups[0]["params"]:  # everything trainable went to the head groups
        groups.pop(0)
    loss_params: Iterable[nn.Parameter] = [p for p in loss.parameters() if p.requires_grad]
    if loss_params:
        groups.append({"params": list(loss_params), "weight_decay": 0.0, "base_lr": lr * loss_lr_multiplier,
                       "name": "loss"})
    if not any(g["params"] for g in groups):
        raise ValueError("nothing to train: every parameter is frozen (model.freeze_backbone with no head?)")
    return groups


OPTIMIZERS = ("sgd", "adam", "adamw", "rmsprop")


def build_optimizer(name: str, model: nn.Module, loss: nn.Module, lr: float, momentum: float = 0.9,
                    nesterov: bool = True, weight_decay: float = 1e-4, no_decay_bn_bias: bool = False,
                    loss_lr_multiplier: float = 1.0, head_lr_multiplier: float = 1.0,
                    betas: tuple[float, float] = (0.9, 0.999)) -> torch.optim.Optimizer:
    """``sgd`` (``momentum``, ``nesterov``; weight decay as L2), ``adam`` (weight decay as L2, like the
    original Adam), ``adamw`` (decoupled weight decay, Loshchilov & Hutter) or ``rmsprop`` (``momentum``;
    TensorFlow 1.x's defaults: decay 0.9, epsilon 1e-10, which the original TF implementations ran with;
    torch's own are 0.99 and 1e-8) over ``param_groups(...)``."""
    groups = param_groups(model, loss, lr, weight_decay, no_decay_bn_bias, loss_lr_multiplier,
                          head_lr_multiplier)
    if name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=momentum, nesterov=nesterov and momentum > 0,
                               weight_decay=weight_decay)
    if name == "adam":
        return torch.optim.Adam(groups, lr=lr, betas=betas, weight_decay=weight_decay)
    if name == "adamw":
        return torch.optim.AdamW(groups, lr=lr, betas=betas, weight_decay=weight_decay)
    if name == "rmsprop":
        return torch.optim.RMSprop(groups, lr=lr, alpha=0.9, eps=1e-10, momentum=momentum,
                                   weight_decay=weight_decay)
    raise ValueError(f"unknown optimizer {name!r}; use one of {OPTIMIZERS}")


def build_sgd(model: nn.Module, loss: nn.Module, lr: float, momentum: float = 0.9, nesterov: bool = True,
              weight_decay: float = 1e-4, no_decay_bn_bias: bool = False,
              loss_lr_multiplier: float = 1.0, head_lr_multiplier: float = 1.0) -> torch.optim.SGD:
    """SGD over the model's parameters (and the loss's, e.g. proxies, at ``lr * loss_lr_multiplier``).

    With ``no_decay_bn_bias`` BatchNorm weights/biases and all biases go to a group without weight decay.
    Groups carry ``base_lr`` for ``IterationSchedule``. Group order is fixed, so optimizer state loads back.
    """
    return build_optimizer("sgd", model, loss, lr, momentum, nesterov, weight_decay, no_decay_bn_bias,
                           loss_lr_multiplier, head_lr_multiplier)

"""``clusterloss train``: start a run from a config, or resume one."""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from pathlib import Path

from .checkpoint import RESUME_CANDIDATES, load_checkpoint
from .config import Config, apply_overrides, load_config
from .config_files import find_config
from .distributed import is_main_process
from .train import NonFiniteError, TrainingInterrupted, train


def add_subcommands(subparsers) -> None:
    p = subparsers.add_parser(
        "train", help="train an embedding network (or resume a run)",
        description="Train from a YAML config (configs/*.yaml) or resume a stopped run. Under torchrun "
                    "(torchrun --nproc_per_node=N -m clusterloss train ...) it trains with DDP.")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--config", help="YAML config file, or the name of a packaged config "
                        "(digits_convnet, cifar10_densenet_bc40, ...)")
    source.add_argument("--resume", type=Path, metavar="RUN_DIR",
                        help="continue the run in RUN_DIR from its last.pt (or an older intact checkpoint); "
                             "--set may only change how it runs (device, threads, epochs to train longer)")
    p.add_argument("--run-dir", type=Path, help="run directory (default runs/<config name>-<time>)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key, e.g. --set train.epochs=3 (repeatable)")
    p.add_argument("--init-from", metavar="CKPT", help="initialize the backbone from this checkpoint")
    p.set_defaults(func=run_train)


# Keys --resume may change: how the run is executed, not what is trained (the model, data, loss and recipe
# stay those the checkpoint was trained with). train.epochs may only grow (train longer).
RESUME_SAFE_KEYS = {
    "train.epochs", "train.device", "train.num_threads", "train.progress", "train.mallopt",
    "train.log_every_steps", "train.checkpoint_every_steps", "eval.batch_size",
    "data.root", "data.cache_dir", "data.download",
}


def _stored_config(run_dir: Path) -> dict:
    """The config of the newest readable checkpoint of ``run_dir`` (quietly: train() reports a fallback)."""
    problems = []
    for name in RESUME_CANDIDATES:
        if (run_dir / name).exists():
            try:
                return load_checkpoint(run_dir / name)["config"]
            except (ValueError, KeyError) as err:
                problems.append(str(err))
    raise ValueError(f"cannot resume: {run_dir} holds no readable checkpoint"
                     + (f" ({'; '.join(problems)})" if problems else " (last.pt does not exist)"))


def resume_config(run_dir: Path, overrides: list[str]) -> Config:
    """The stored config with ``overrides``, refusing any that would change what the checkpoint trained."""
    stored = _stored_config(run_dir)
    before = Config.from_dict(copy.deepcopy(stored)).to_dict()
    after = Config.from_dict(apply_overrides(copy.deepcopy(stored), overrides)).to_dict()
    changed = sorted(f"{section}.{key}" for section, values in after.items() for key, value in values.items()
                     if before[section].get(key) != value)
    refused = [key for key in changed if key not in RESUME_SAFE_KEYS]
    if refused:
        shown = ", ".join(f"{k} ({before[k.split('.')[0]][k.split('.')[1]]!r} -> "
                          f"{after[k.split('.')[0]][k.split('.')[1]]!r})" for k in refused)
        raise ValueError(f"--resume cannot change {shown}: the checkpoint in {run_dir} was trained with the "
                         f"stored value; start a new run (--config ... --run-dir NEW) instead. --resume may "
                         f"only set: {', '.join(sorted(RESUME_SAFE_KEYS))}")
    if "train.epochs" in changed and after["train"]["epochs"] < before["train"]["epochs"]:
        raise ValueError(f"--set train.epochs={after['train']['epochs']}: the run in {run_dir} was trained "
                         f"for {before['train']['epochs']} epochs; --resume can only train longer (its "
                         "config.yaml and checkpoints stay as they are)")
    return Config.from_dict(after)


def run_train(args: argparse.Namespace) -> int:
    overrides = list(args.overrides)
    if args.init_from:
        if args.resume:
            print("error: --init-from applies to new runs, not --resume", file=sys.stderr)
            return 2
        overrides.append(f"train.init_from={args.init_from}")
    try:
        if args.resume:
            run_dir = args.resume
            if args.run_dir is not None and args.run_dir.resolve() != run_dir.resolve():
                raise ValueError(f"--resume {run_dir} continues the run in that folder; --run-dir "
                                 f"{args.run_dir} cannot move it (copy the folder and resume the copy)")
            config = resume_config(run_dir, overrides) if overrides else None
        else:
            config_path = find_config(args.config)
            config = load_config(config_path, overrides)
            run_dir = args.run_dir or Path("runs") / f"{config_path.stem}-{time.strftime('%Y%m%d-%H%M%S')}"
        metrics = train(config, run_dir, resume=bool(args.resume))
    except TrainingInterrupted as stop:
        if is_main_process():
            print(stop, file=sys.stderr)
        return 128 + int(stop.signum)
    except NonFiniteError as err:  # bad input (ValueError, missing data) is reported by cli.main
        print(f"error: {err}", file=sys.stderr)
        return 1
    if is_main_process():
        shown = {k: round(v, 4) if isinstance(v, float) else v for k, v in metrics.items()}
        print(f"run {run_dir} finished: {json.dumps(shown)}")
    return 0

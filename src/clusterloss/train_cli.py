"""``clusterloss train``: start a run from a config, or resume one."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from .checkpoint import load_checkpoint
from .config import Config, apply_overrides, load_config
from .distributed import is_main_process
from .train import NonFiniteError, TrainingInterrupted, train


def add_subcommands(subparsers) -> None:
    p = subparsers.add_parser(
        "train", help="train an embedding network (or resume a run)",
        description="Train from a YAML config (configs/*.yaml) or resume a stopped run. Under torchrun "
                    "(torchrun --nproc_per_node=N -m clusterloss train ...) it trains with DDP.")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--config", type=Path, help="YAML config file")
    source.add_argument("--resume", type=Path, metavar="RUN_DIR",
                        help="continue the run in RUN_DIR from its last.pt")
    p.add_argument("--run-dir", type=Path, help="run directory (default runs/<config name>-<time>)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key, e.g. --set train.epochs=3 (repeatable)")
    p.add_argument("--init-from", metavar="CKPT", help="initialize the backbone from this checkpoint")
    p.set_defaults(func=run_train)


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
            config = None
            if overrides:
                stored = load_checkpoint(run_dir / "last.pt")["config"]
                config = Config.from_dict(apply_overrides(stored, overrides))
        else:
            config = load_config(args.config, overrides)
            run_dir = args.run_dir or Path("runs") / f"{args.config.stem}-{time.strftime('%Y%m%d-%H%M%S')}"
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

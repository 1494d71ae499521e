"""``clusterloss`` command line: each command module contributes ``add_subcommands(subparsers)``.

Every sub-command stores its handler as ``func`` (called with the parsed namespace, returning an exit code).
"""

from __future__ import annotations

import argparse
import importlib
import sys

# Command modules, in the order their commands appear in --help. Each defines add_subcommands(subparsers).
COMMAND_MODULES = [
    "clusterloss.train_cli",  # train
    "clusterloss.analysis",      # extract / evaluate / tsne / retrieval / report
    "clusterloss.experiments",   # quickstart / compare
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="clusterloss", description="Deep metric learning via facility "
                                     "location (Song et al., CVPR 2017): train, evaluate, visualize.")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    subparsers.required = True
    for name in COMMAND_MODULES:
        importlib.import_module(name).add_subcommands(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run a command; bad input (a config, a path, a missing dataset) ends in one ``error:`` line, exit 1."""
    import pickle

    from .data.download import DownloadError

    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (ValueError, FileNotFoundError, DownloadError, pickle.UnpicklingError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())

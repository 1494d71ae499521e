"""``clusterloss`` command line: each command module contributes ``add_subcommands(subparsers)``.

Every sub-command stores its handler as ``func`` (called with the parsed namespace, returning an exit code).
"""

from __future__ import annotations

import argparse
import errno
import importlib
import re
import shutil
import sys
from pathlib import Path

# Command modules, in the order their commands appear in --help. Each defines add_subcommands(subparsers).
COMMAND_MODULES = [
    "clusterloss.train_cli",  # train
    "clusterloss.analysis",      # extract / evaluate / tsne / retrieval / report
    "clusterloss.experiments",   # quickstart / compare
]


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("clusterloss")
    except PackageNotFoundError:  # running from a source tree that was never installed
        return "unknown (not installed)"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="clusterloss", description="Deep metric learning via facility "
                                     "location (Song et al., CVPR 2017): train, evaluate, visualize.")
    parser.add_argument("--version", action="version", version=f"clusterloss {_version()}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    subparsers.required = True
    for name in COMMAND_MODULES:
        importlib.import_module(name).add_subcommands(subparsers)
    return parser


def _os_error_line(err: OSError) -> str:
    """A file-system error as one line naming the file and what to do (full disk, read-only, missing)."""
    where = err.filename or "a file"
    if err.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)):
        folder = Path(str(where)).parent
        free = shutil.disk_usage(folder).free if folder.exists() else 0
        return (f"cannot write {where}: no space left on the device ({free / 2**20:.1f} MiB free); free some "
                "space there")
    if err.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        return (f"cannot write {where}: {err.strerror}; make {Path(str(where)).parent} writable or choose "
                "another output folder (--run-dir / --out)")
    if err.errno == errno.EISDIR:
        return f"{where} is a folder; give a file path"
    return f"{where}: {err.strerror or err}"


def main(argv: list[str] | None = None) -> int:
    """Run a command; bad input (a config, a path, a missing dataset, a damaged file, a full disk or a
    read-only folder) ends in one ``error:`` line and exit status 1."""
    import pickle

    from .data.download import DownloadError

    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (ValueError, FileNotFoundError, DownloadError, pickle.UnpicklingError) as err:
        print(f"error: {_one_line(err)}", file=sys.stderr)
        return 1
    except OSError as err:
        print(f"error: {_os_error_line(err)}", file=sys.stderr)
        return 1


def _one_line(err: BaseException) -> str:
    text = str(err).strip() or type(err).__name__
    if "weights_only" in text:  # PyTorch's advice to turn weights_only off is unsafe: never pass it on
        detail = re.search(r"WeightsUnpickler error: ([^\n]*)", text)
        text = ("refusing to load a file that asks for code to run"
                + (f" ({detail.group(1).strip()})" if detail else "") + "; load only files written by "
                "clusterloss or trusted state dicts")
    return " ".join(line.strip() for line in text.splitlines() if line.strip())


if __name__ == "__main__":
    sys.exit(main())

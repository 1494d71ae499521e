"""Small helpers shared by the photo-dataset readers: safe relative paths and official text tables."""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath

__all__ = ["safe_relative", "read_table"]


def safe_relative(relative: str, root: Path, where: str) -> str:
    """``relative`` as a normalized POSIX path that stays inside ``root``; else a ValueError naming ``where``.

    Refuses absolute paths, drive letters, ``..`` components and symlinks that lead outside ``root``.
    """
    text = relative.strip().replace("\\", "/")
    path = PurePosixPath(text)
    if not text or path.is_absolute() or ".." in path.parts or (len(text) > 1 and text[1] == ":"):
        raise ValueError(f"{where}: path {relative!r} escapes the dataset folder {root}; refusing it")
    resolved = os.path.realpath(root / text)
    base = os.path.realpath(root)
    if os.path.commonpath([resolved, base]) != base:
        raise ValueError(f"{where}: path {relative!r} leads outside the dataset folder {root} (a link?); "
                         "refusing it")
    return str(path)


def read_table(path: Path, columns: int, header: str | None = None, skip_lines: int = 0,
               last_column_rest: bool = False) -> list[list[str]]:
    """Whitespace-separated rows of exactly ``columns`` fields (``last_column_rest``: the last field may
    contain spaces). ``header``: the expected first line after ``skip_lines`` (compared word by word).
    Blank lines are skipped; anything else malformed is a ValueError naming the file and line."""
    if not path.is_file():
        raise FileNotFoundError(f"missing {path}")
    lines = path.read_text(encoding="utf-8-sig").splitlines()
    rows: list[list[str]] = []
    start = skip_lines
    if header is not None:
        if len(lines) <= skip_lines or lines[skip_lines].split() != header.split():
            found = lines[skip_lines].strip() if len(lines) > skip_lines else "nothing"
            raise ValueError(f"{path}:{skip_lines + 1}: expected the header {header!r}, found {found!r}")
        start += 1
    for number, line in enumerate(lines[start:], start + 1):
        if not line.strip():
            continue
        fields = line.split(maxsplit=columns - 1) if last_column_rest else line.split()
        if len(fields) != columns:
            raise ValueError(f"{path}:{number}: expected {columns} fields, found {len(fields)}: "
                             f"{line.strip()!r}")
        rows.append(fields)
    return rows

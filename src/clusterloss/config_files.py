"""Where configs are found: a path as given, else a name from ``configs/`` here or from the installed package.

The configs ship inside the package (``clusterloss/configs/*.yaml``, package data of the wheel), so
``clusterloss train --config digits_convnet`` and ``clusterloss quickstart`` work from a ``pip install``
outside any checkout. In a checkout, ``configs/`` at the top is a symlink to the same folder.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

__all__ = ["PACKAGED_CONFIGS", "find_config", "packaged_config_names"]

PACKAGED_CONFIGS = Path(str(resources.files("clusterloss") / "configs"))


def packaged_config_names() -> list[str]:
    """Names (file stems) of the configs shipped with the package, e.g. ``["digits_convnet", ...]``."""
    return sorted(p.stem for p in PACKAGED_CONFIGS.glob("*.yaml"))


def find_config(name_or_path: str | Path) -> Path:
    """A config file path as given, or a bare name (``digits_convnet`` or ``digits_convnet.yaml``) looked up
    in ``./configs/`` and then among the packaged configs. Raises ValueError naming the choices."""
    path = Path(name_or_path)
    if path.is_dir():
        raise ValueError(f"config {str(path)!r} is a folder; give a YAML file (e.g. {path}/<name>.yaml) or "
                         f"a packaged config name: {', '.join(packaged_config_names())}")
    if path.is_file():
        return path
    if path.parent == Path(".") and path.suffix in ("", ".yaml", ".yml"):
        for folder in (Path("configs"), PACKAGED_CONFIGS):
            for suffix in (".yaml", ".yml"):
                candidate = folder / f"{path.stem}{suffix}"
                if candidate.is_file():
                    return candidate
    raise ValueError(f"config {str(name_or_path)!r} not found; give a YAML file path, or a packaged config "
                     f"name: {', '.join(packaged_config_names())}")

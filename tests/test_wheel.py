"""The built wheel works outside the checkout: configs, bundled data and LICENSE are inside it.

What this proves: a wheel built from the working tree, installed (``--no-deps``) into a fresh virtual
environment, runs ``clusterloss --version``, ``train --config <packaged name>`` and ``quickstart`` from a
folder that is not the checkout, importing clusterloss from that environment (asserted), not from ``src/``.
What it does not prove: that pip can resolve and download the dependencies (no network here). The fresh
environment sees this project's installed dependencies through a ``.pth`` line naming the dev venv's
site-packages; ``.pth`` files inside that folder (the editable install's pointer to ``src/``) are not
processed, so ``src/`` is not on its path.
"""

import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
IGNORED = shutil.ignore_patterns(".git", ".venv", "runs", "build", "dist", "*.egg-info", "__pycache__",
                                 ".pytest_cache", ".ruff_cache", "results", "data", "*.pyc")


def _copy_tree(dest: Path) -> Path:
    """The working tree without venvs, runs and build outputs (bundled data under src/ is kept)."""
    shutil.copytree(ROOT, dest, symlinks=True, ignore=lambda folder, names: (
        set() if "src" in Path(folder).relative_to(ROOT).parts else IGNORED(folder, names)))
    return dest


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    setuptools = pytest.importorskip("setuptools", reason="building offline needs setuptools in this venv "
                                     "(the dev extra installs it)")
    if int(setuptools.__version__.split(".")[0]) < 77:
        pytest.skip(f"setuptools {setuptools.__version__} < 77 (pyproject's build requirement)")
    tree = _copy_tree(tmp_path_factory.mktemp("tree") / "clusterloss")
    out = tmp_path_factory.mktemp("wheelhouse")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                    str(out), str(tree)], check=True, timeout=600)
    (built,) = out.glob("clusterloss-*.whl")
    return built


@pytest.mark.slow
def test_wheel_holds_configs_data_and_license(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    configs = sorted(p.stem for p in (ROOT / "src" / "clusterloss" / "configs").glob("*.yaml"))
    assert configs and all(f"clusterloss/configs/{c}.yaml" in names for c in configs)
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names)
    data = ROOT / "src" / "clusterloss" / "data"
    bundled = [p.relative_to(ROOT / "src").as_posix() for p in data.rglob("*")
               if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"]
    missing = [p for p in bundled if p not in names]
    assert not missing, f"bundled files left out of the wheel: {missing}"
    license_text = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith("licenses/LICENSE")))
    assert b"Apache License" in license_text and b"Version 2.0, January 2004" in license_text


@pytest.mark.slow
def test_installed_wheel_trains_and_runs_quickstart_outside_the_checkout(wheel, tmp_path):
    env_dir = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(env_dir)], check=True, timeout=120)
    python = env_dir / "bin" / "python"
    purelib = "import sysconfig; print(sysconfig.get_paths()['purelib'])"
    site = Path(subprocess.run([str(python), "-c", purelib], capture_output=True, text=True,
                               check=True).stdout.strip())
    (site / "_clusterloss_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "-q",
                    str(wheel)], check=True, timeout=300)
    work = tmp_path / "elsewhere"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.update(OMP_NUM_THREADS="1", PYTHONDONTWRITEBYTECODE="1")

    def run(*args, timeout=900):
        done = subprocess.run([str(env_dir / "bin" / "clusterloss"), *args], cwd=work, env=env,
                              capture_output=True, text=True, timeout=timeout)
        assert done.returncode == 0, f"{args}: {done.stderr[-2000:]}"
        return done

    where = subprocess.run([str(python), "-c", "import clusterloss; print(clusterloss.__file__)"], cwd=work,
                           env=env, capture_output=True, text=True, check=True).stdout.strip()
    assert where.startswith(str(site)), f"clusterloss imported from {where}, not the fresh environment"
    assert run("--version").stdout.strip() == "clusterloss 0.1.0"
    fast = ["--set", "train.epochs=1", "--set", "train.progress=false", "--set", "train.num_threads=1"]
    run("train", "--config", "digits_convnet", "--run-dir", str(work / "train"), *fast)
    assert (work / "train" / "last.pt").is_file()
    first = run("quickstart", "--run-dir", str(work / "qs"), *fast, "--set", "eval.kmeans_seeds=[0]")
    assert (work / "qs" / "report.html").is_file(), first.stdout
    again = run("quickstart", "--run-dir", str(work / "qs"), *fast, "--set", "eval.kmeans_seeds=[0]")
    assert "reused the finished run" in again.stdout
    assert not (work / "configs").exists() and not list(work.glob("*.yaml"))  # nothing from a checkout

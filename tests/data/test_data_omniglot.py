import hashlib
import io
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from clusterloss.config import load_config
from clusterloss.data import omniglot
from clusterloss.data.download import DownloadError
from clusterloss.data.omniglot import load_omniglot, load_oneshot_runs
from clusterloss.data.omniglot_protocol import split_by_groups, with_rotation_classes
from clusterloss.data.protocols import splits_from_config
from clusterloss.data.registry import load_dataset

SHARED = Path(__file__).resolve().parents[3] / "shared" / "data" / "omniglot"


def _png(ink: np.ndarray) -> bytes:
    """An official-style PNG: 1 bit, white background (True = white), black strokes."""
    buffer = io.BytesIO()
    Image.fromarray(~ink).convert("1").save(buffer, format="PNG")
    return buffer.getvalue()


def _ink(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    ink = np.zeros((105, 105), dtype=bool)
    r, c = rng.integers(10, 80, size=2)
    ink[r:r + 20, c:c + 3] = True  # a stroke somewhere
    return ink


def _background(alphabets: dict[str, int], drawers: int = 3) -> dict[str, np.ndarray]:
    files, seed = {}, 0
    for alphabet, characters in alphabets.items():
        for ch in range(1, characters + 1):
            for d in range(1, drawers + 1):
                files[f"{alphabet}/character{ch:02d}/{ch:02d}{seed:02d}_{d:02d}.png"] = _ink(seed)
                seed += 1
    return files


def _write_zip(path: Path, folder: str, files: dict[str, np.ndarray]) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        for name, ink in files.items():
            archive.writestr(f"{folder}/{name}" if folder else name, _png(ink))
    return path


def _write_folder(root: Path, files: dict[str, np.ndarray]) -> None:
    for name, ink in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(_png(ink))


def test_zip_and_extracted_folder_read_the_same(tmp_path):
    files = _background({"Greek": 2, "Aurek": 3})
    _write_zip(tmp_path / "images_background_small1.zip", "images_background_small1", files)
    folder_root = tmp_path / "folder"
    _write_folder(folder_root / "images_background_small1", files)
    a = load_omniglot("train", tmp_path, image_size=105)
    b = load_omniglot("train", folder_root, image_size=105)
    assert torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels)
    assert a.class_names == ["Aurek/character01", "Aurek/character02", "Aurek/character03",
                             "Greek/character01", "Greek/character02"]
    assert a.coarse_class_names == ["Aurek", "Greek"]
    assert a.labels.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3, 4, 4, 4]
    assert a.coarse_labels.tolist() == [0] * 9 + [1] * 6
    # Ink is 255, background 0: image 0 is the first Aurek drawing (seed 6 in file order).
    expected = torch.from_numpy(files["Aurek/character01/0106_01.png"].astype(np.uint8) * 255)
    assert torch.equal(a.images[0, 0], expected)


def test_resize_keeps_ink_bright_and_shapes(tmp_path):
    _write_zip(tmp_path / "images_background_small1.zip", "images_background_small1", _background({"A": 2}))
    small = load_omniglot("train", tmp_path)  # 28 px by default
    assert small.images.shape == (6, 1, 28, 28) and small.images.dtype == torch.uint8
    big = load_omniglot("train", tmp_path, image_size=105).images.float()
    # Area-like antialiased resizing keeps the ink fraction.
    assert float(small.images.float().mean()) == pytest.approx(float(big.mean()), rel=0.1)
    with pytest.raises(ValueError, match="image_size"):
        load_omniglot("train", tmp_path, image_size=0)


def test_bundled_copy_without_root_and_registry():
    data = load_dataset("omniglot", "train")
    assert data.images.shape == (2720, 1, 28, 28) and data.num_classes == 136
    assert data.coarse_class_names == ["Balinese", "Early_Aramaic", "Greek", "Korean", "Latin"]
    counts = torch.bincount(data.labels)
    assert (counts == 20).all()  # 20 drawers per character
    assert data.default_augmentation == "affine"
    for label, alphabet in zip(data.labels.tolist()[::97], data.coarse_labels.tolist()[::97], strict=True):
        assert data.class_names[label].split("/")[0] == data.coarse_class_names[alphabet]
    runs = load_oneshot_runs()
    assert runs.train.shape == (20, 20, 1, 28, 28) and runs.answers.shape == (20, 20)
    assert all(sorted(r) == list(range(20)) for r in runs.answers.tolist())  # each run a permutation


@pytest.mark.skipif(not SHARED.is_dir(), reason="../shared/data/omniglot (the official zips) is absent")
def test_bundle_equals_the_official_zips():
    bundled = load_omniglot("train", None, image_size=105)
    official = load_omniglot("train", SHARED, image_size=105)
    assert torch.equal(bundled.images, official.images) and torch.equal(bundled.labels, official.labels)
    assert bundled.class_names == official.class_names
    a, b = load_oneshot_runs(None, 105), load_oneshot_runs(SHARED, 105)
    assert torch.equal(a.train, b.train) and torch.equal(a.test, b.test) and torch.equal(a.answers, b.answers)
    with zipfile.ZipFile(SHARED / "all_runs.zip") as archive:
        first = archive.read("run01/class_labels.txt").decode().split()
    assert first[:2] == ["run01/test/item01.png", "run01/training/class08.png"] and a.answers[0, 0] == 7


def _runs_zip(path: Path, runs: int = 2, ways: int = 3) -> np.ndarray:
    answers = np.array([np.roll(np.arange(ways), r + 1) for r in range(runs)])
    with zipfile.ZipFile(path, "w") as archive:
        for r in range(runs):
            base = f"run{r + 1:02d}"
            lines = [f"{base}/test/item{j + 1:02d}.png {base}/training/class{answers[r, j] + 1:02d}.png"
                     for j in range(ways)]
            archive.writestr(f"{base}/class_labels.txt", "\n".join(lines) + "\n")
            for c in range(ways):
                archive.writestr(f"{base}/training/class{c + 1:02d}.png", _png(_ink(100 * r + c)))
                archive.writestr(f"{base}/test/item{c + 1:02d}.png", _png(_ink(100 * r + 50 + c)))
    return answers


def test_runs_from_a_zip_with_their_answers(tmp_path):
    answers = _runs_zip(tmp_path / "all_runs.zip")
    runs = load_oneshot_runs(tmp_path, image_size=105)
    assert runs.answers.tolist() == answers.tolist()
    assert runs.num_runs == 2 and runs.train.shape == (2, 3, 1, 105, 105)
    assert torch.equal(runs.train[1, 2, 0], torch.from_numpy(_ink(102).astype(np.uint8) * 255))


def test_bad_class_labels_file_is_an_error(tmp_path):
    with zipfile.ZipFile(tmp_path / "all_runs.zip", "w") as archive:
        archive.writestr("run01/class_labels.txt", "run01/test/item01.png\n")
    with pytest.raises(ValueError, match="bad line"):
        load_oneshot_runs(tmp_path)


def test_missing_sets_name_the_file_and_the_way_to_get_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="images_evaluation.zip.*data.download=true"):
        load_omniglot("test", tmp_path)
    with pytest.raises(FileNotFoundError, match="images_background_small2"):
        load_dataset("omniglot_small2", "train", tmp_path)
    with pytest.raises(ValueError, match="split"):
        load_omniglot("all", tmp_path)


def test_download_verifies_md5_and_is_atomic(tmp_path, monkeypatch, archive_server):
    files = _background({"Tengwar": 2}, drawers=2)
    archive = _write_zip(tmp_path / "src.zip", "images_evaluation", files).read_bytes()
    archive_server.files["/images_evaluation.zip"] = archive
    monkeypatch.setattr(omniglot, "URL_PREFIX", archive_server.url("").rstrip("/"))
    root = tmp_path / "data"
    monkeypatch.setitem(omniglot.DOWNLOADS, "images_evaluation", "0" * 32)
    with pytest.raises(DownloadError, match="MD5 mismatch"):
        load_omniglot("test", root, download=True)
    assert not root.exists() or sorted(p.name for p in root.iterdir()) == []
    monkeypatch.setitem(omniglot.DOWNLOADS, "images_evaluation", hashlib.md5(archive).hexdigest())
    archive_server.cut_after = len(archive) // 2
    with pytest.raises(DownloadError):
        load_omniglot("test", root, download=True)
    assert sorted(p.name for p in root.iterdir()) == []  # nothing half-written left
    archive_server.cut_after = None
    test = load_omniglot("test", root, download=True)
    assert len(test) == 4 and test.coarse_class_names == ["Tengwar"]
    assert sorted(p.name for p in root.iterdir()) == ["images_evaluation.zip"]
    requests = archive_server.requests
    assert torch.equal(load_omniglot("test", root).images, test.images)
    assert archive_server.requests == requests


def test_split_by_alphabet_and_validation():
    data = load_omniglot("train")
    train, evaluation = split_by_groups(data, ["Latin"])
    assert set(evaluation.coarse_labels.tolist()) == {4} and 4 not in set(train.coarse_labels.tolist())
    assert len(train) + len(evaluation) == len(data) and len(evaluation) == 520
    fit, val = split_by_groups(data, ["Latin"], validation=True)
    assert set(val.coarse_labels.tolist()) == {3}  # Korean: the last of the 4 training alphabets
    assert set(fit.coarse_labels.tolist()) == {0, 1, 2} and val.split == "train-validation"
    half_train, half_eval = split_by_groups(data)  # zero_shot default: first ceil(5 / 2) alphabets train
    assert set(half_train.coarse_labels.tolist()) == {0, 1, 2}
    assert set(half_eval.coarse_labels.tolist()) == {3, 4}
    with pytest.raises(ValueError, match="not an alphabet.*Balinese"):
        split_by_groups(data, ["Klingon"])
    with pytest.raises(ValueError, match="each side"):
        split_by_groups(data, data.coarse_class_names)


def test_splits_from_config_never_reads_the_evaluation_set_when_holding_out_alphabets(tmp_path):
    config = load_config(None, ["data.name=omniglot", f"data.root={tmp_path}", "data.eval_groups=[Greek]"])
    splits = splits_from_config(config.data)  # tmp_path is empty: bundled copy, no images_evaluation needed
    assert len(splits.eval) == 480 and splits.mean.shape == (1,)
    config = load_config(None, ["data.name=omniglot", f"data.root={tmp_path}", "data.protocol=closed"])
    with pytest.raises(FileNotFoundError, match="images_evaluation"):
        splits_from_config(config.data)


def test_rotation_classes_add_three_rotated_copies():
    data = load_omniglot("train").of_classes([0, 1])
    rotated = with_rotation_classes(data)
    assert len(rotated) == 4 * len(data) and rotated.num_classes == 4 * data.num_classes
    first = int(torch.nonzero(rotated.labels == 0)[0])
    again = int(torch.nonzero(rotated.labels == data.num_classes)[0])  # class 0 rotated by 90 degrees
    assert torch.equal(rotated.images[again], torch.rot90(rotated.images[first], 1, dims=(1, 2)))
    assert rotated.class_names[data.num_classes] == data.class_names[0] + " (rot90)"
    config = load_config(None, ["data.name=omniglot", "data.root=", "data.eval_groups=[Latin]",
                                "data.rotation_classes=true"])
    splits = splits_from_config(config.data)
    assert len(splits.train) == 4 * 2200 and len(splits.eval) == 520
    assert splits.eval.num_classes == splits.train.num_classes

"""imagefolder and cub200 readers, the decoded-image cache, bad images; fixtures in the official formats."""

import os
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from clusterloss.data import build_splits, load_dataset
from clusterloss.data.image_cache import PhotoOptions
from clusterloss.data.image_decode import BadImageError, decode_square

SHARED_CUB = Path(__file__).resolve().parents[3] / "shared" / "data" / "CUB_200_2011_subset"


def _options(tmp_path, **kw):
    return PhotoOptions(image_size=24, cache_dir=str(tmp_path / "cache"), workers=2, **kw)


def _reference(path, size=28):
    return decode_square(path, size, int(round(size * 0.875)))


def test_imagefolder_classes_sorted_labels_and_pixels(tmp_path, official):
    root = tmp_path / "photos"
    written = official.image_folder(root, {"zebra": 2, "ant": 3, "moth": 2})
    (root / "ant" / "notes.txt").write_text("not an image")
    (root / ".hidden").mkdir()
    data = load_dataset("imagefolder", "all", root, options=_options(tmp_path))
    assert data.class_names == ["ant", "moth", "zebra"]
    assert data.labels.tolist() == [0, 0, 0, 1, 1, 2, 2]
    assert data.paths == sorted(written, key=lambda p: (["ant", "moth", "zebra"].index(p.split("/")[0]), p))
    assert data.images.shape == (7, 3, 27, 27) and data.view_size == 24
    assert data.default_augmentation == "random_resized_crop"
    for i, relative in enumerate(data.paths):
        assert np.array_equal(data.images[i].numpy(), decode_square(root / relative, 27, 24))


@pytest.mark.parametrize("mode", ["L", "P", "RGBA", "CMYK", "LA", "I;16"])
def test_colour_modes_become_rgb(tmp_path, official, mode):
    path = tmp_path / f"x_{mode.replace(';', '')}.{'jpg' if mode == 'CMYK' else 'png'}"
    official.photo(path, 3, (32, 32), mode=mode if mode != "I;16" else "L")
    if mode == "I;16":  # a 16-bit grey PNG: values scaled by 257 (full range)
        grey = np.asarray(Image.open(path))
        Image.fromarray(grey.astype(np.uint16) * 257).save(path)
    out = decode_square(path, 32)
    assert out.shape == (3, 32, 32) and out.dtype == np.uint8
    with Image.open(path) as image:
        if mode == "I;16":
            expected = np.repeat((np.asarray(image, dtype=np.float64) / 257).round()[None], 3, 0)
        else:
            expected = np.asarray(image.convert("RGB")).transpose(2, 0, 1)
    assert np.abs(out.astype(int) - expected.astype(int)).max() <= 1


def _bad_folder(tmp_path, official, kind):
    root = tmp_path / "photos"
    official.image_folder(root, {"a": 3, "b": 3})
    bad = root / "b" / "001.png"
    if kind == "garbage":
        bad.write_bytes(b"this is not an image at all")
    elif kind == "truncated":
        bad.write_bytes(bad.read_bytes()[: len(bad.read_bytes()) // 2])
    return root, bad


@pytest.mark.parametrize("kind", ["garbage", "truncated"])
def test_bad_image_is_one_error_line_naming_the_file(tmp_path, official, kind):
    root, bad = _bad_folder(tmp_path, official, kind)
    with pytest.raises(BadImageError) as caught:
        load_dataset("imagefolder", "all", root, options=_options(tmp_path))
    message = str(caught.value)
    assert str(bad) in message and "\n" not in message and "skip_bad_images" in message


def test_decompression_bomb_is_refused(tmp_path, official, monkeypatch):
    root = tmp_path / "photos"
    official.image_folder(root, {"a": 2, "b": 2}, size=(40, 30))
    official.photo(root / "b" / "huge.png", 9, (80, 60))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 3000)  # 40x30 = 1200 fine, 80x60 = 4800 a "bomb"
    with pytest.raises(BadImageError, match=r"huge\.png.*MAX_IMAGE_PIXELS"):
        load_dataset("imagefolder", "all", root, options=_options(tmp_path))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # 2x over: PIL's own DecompressionBombError
    with pytest.raises(BadImageError, match="decompression bomb"):
        decode_square(root / "b" / "huge.png", 16)


def test_skip_bad_images_reports_the_count(tmp_path, official):
    root, bad = _bad_folder(tmp_path, official, "garbage")
    (root / "a" / "000.png").write_bytes(b"\x89PNG broken")
    with pytest.warns(UserWarning, match=r"skipped 2 image"):
        data = load_dataset("imagefolder", "all", root, options=_options(tmp_path, skip_bad_images=True))
    assert len(data) == 4 and "b/001.png" not in data.paths and "a/000.png" not in data.paths
    assert data.labels.tolist() == [0, 0, 1, 1]
    for i, relative in enumerate(data.paths):  # the good images, from a compacted map on disk
        assert np.array_equal(data.images[i].numpy(), decode_square(root / relative, 27, 24))
    assert len(list((tmp_path / "cache").glob("*-good.npy"))) == 1
    # the same cache without the flag: still an error, never a silent skip
    with pytest.raises(BadImageError, match="1 more bad files"):
        load_dataset("imagefolder", "all", root, options=_options(tmp_path))


def test_single_image_class_is_reported(tmp_path, official):
    root = tmp_path / "photos"
    official.image_folder(root, {"a": 3, "lonely": 1})
    with pytest.warns(UserWarning, match=r"1 class\(es\) have a single image.*lonely"):
        load_dataset("imagefolder", "all", root, options=_options(tmp_path))


def test_empty_class_folder_and_missing_root_are_errors(tmp_path, official):
    root = tmp_path / "photos"
    official.image_folder(root, {"a": 2})
    (root / "empty").mkdir()
    with pytest.raises(ValueError, match="empty holds no image files"):
        load_dataset("imagefolder", "all", root, options=_options(tmp_path))
    with pytest.raises(FileNotFoundError, match="not found"):
        load_dataset("imagefolder", "all", tmp_path / "nowhere", options=_options(tmp_path))


def test_zero_shot_and_closed_fraction_splits(tmp_path, official):
    root = tmp_path / "photos"
    official.image_folder(root, {f"c{i}": 5 for i in range(5)})
    opts = _options(tmp_path, train_fraction=0.6)
    splits = build_splits("imagefolder", root, protocol="zero_shot", options=opts)
    assert sorted(set(splits.train.labels.tolist())) == [0, 1, 2] and len(splits.train) == 15
    assert sorted(set(splits.eval.labels.tolist())) == [3, 4] and len(splits.eval) == 10
    closed = build_splits("imagefolder", root, protocol="closed", options=opts)
    train, test = set(closed.train.paths), set(closed.eval.paths)
    assert not train & test and len(train | test) == 25
    assert np.bincount(closed.train.labels.numpy()).tolist() == [3] * 5  # round(0.6 * 5) per class
    again = build_splits("imagefolder", root, protocol="closed", options=opts)
    assert set(again.train.paths) == train  # a fixed order (SHA-1 of the path), not a random draw
    chosen = build_splits("imagefolder", root, protocol="closed", train_classes=[1, 4], options=opts)
    assert sorted(set(chosen.train.labels.tolist())) == [1, 4] and len(chosen.train) == 10


def test_split_file(tmp_path, official):
    root = tmp_path / "photos"
    official.image_folder(root, {"a": 3, "b": 3})
    split_file = tmp_path / "split.txt"
    split_file.write_text("# comment\na/000.png train\na/001.png test\nb/000.png train\n\nb/002.png test\n")
    opts = _options(tmp_path, split_file=str(split_file))
    with pytest.warns(UserWarning, match="2 image"):
        splits = build_splits("imagefolder", root, protocol="closed", options=opts)
    assert splits.train.paths == ["a/000.png", "b/000.png"]
    assert splits.eval.paths == ["a/001.png", "b/002.png"]
    for text, message in [("a/000.png validation\n", "expected '<relative path> <train|test>'"),
                          ("a/000.png\n", "expected '<relative path> <train|test>'"),
                          ("../photos/a/000.png train\n", "escapes the dataset folder"),
                          ("/etc/passwd train\n", "escapes the dataset folder"),
                          ("a/999.png train\n", "is not an image found"),
                          ("a/000.png train\na/000.png test\n", "listed twice")]:
        split_file.write_text(text)
        with pytest.raises(ValueError, match=message), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            build_splits("imagefolder", root, protocol="closed", options=opts)


def test_cache_is_reused_rebuilt_on_change_and_class_ranges_are_views(tmp_path, official, capfd):
    root = tmp_path / "photos"
    official.image_folder(root, {"a": 3, "b": 2, "c": 2})
    opts = _options(tmp_path)
    first = load_dataset("imagefolder", "all", root, options=opts)
    assert "decoded 7 images" in capfd.readouterr().err
    second = load_dataset("imagefolder", "all", root, options=opts)
    assert "decoded" not in capfd.readouterr().err and torch.equal(first.images, second.images)
    assert list((tmp_path / "cache").glob(".*")) == []  # no temporary files left
    sub = second.of_classes([1, 2])
    assert sub.images.untyped_storage().data_ptr() == second.images.untyped_storage().data_ptr()
    official.photo(root / "b" / "001.png", 99, (50, 30))  # content, size and mtime change
    os.utime(root / "b" / "001.png", ns=(1, 1))
    third = load_dataset("imagefolder", "all", root, options=opts)
    assert "decoded 7 images" in capfd.readouterr().err
    assert np.array_equal(third.images[4].numpy(), decode_square(root / "b" / "001.png", 27, 24))
    assert len(list((tmp_path / "cache").glob("*.npy"))) == 1  # the stale cache was removed


def test_read_only_data_falls_back_to_the_user_cache(tmp_path, official, monkeypatch, capfd):
    from clusterloss.data import image_cache

    root = tmp_path / "photos"
    official.image_folder(root, {"a": 2, "b": 2})
    monkeypatch.setenv("CLUSTERLOSS_CACHE", str(tmp_path / "user-cache"))
    monkeypatch.setattr(image_cache, "_writable", lambda folder: False)  # as for read-only shared data
    data = load_dataset("imagefolder", "all", root, options=PhotoOptions(image_size=24, workers=1))
    assert len(data) == 4 and len(list((tmp_path / "user-cache").glob("imagefolder-*.npy"))) == 1
    assert "is not writable" in capfd.readouterr().err
    assert not (root / ".clusterloss_cache").exists()


def test_data_folder_without_write_bits_is_left_alone_even_for_root(tmp_path, official, monkeypatch, capfd):
    # A shared, chmod a-w copy of a dataset: root could still write into it, but its owner said read-only.
    root = tmp_path / "photos"
    official.image_folder(root, {"a": 2, "b": 2})
    root.chmod(0o555)
    monkeypatch.setenv("CLUSTERLOSS_CACHE", str(tmp_path / "user-cache"))
    try:
        data = load_dataset("imagefolder", "all", root, options=PhotoOptions(image_size=24, workers=1))
    finally:
        root.chmod(0o755)
    assert len(data) == 4 and len(list((tmp_path / "user-cache").glob("imagefolder-*.npy"))) == 1
    assert "is not writable" in capfd.readouterr().err
    assert not (root / ".clusterloss_cache").exists()


# ------------------------------------------------------------------------------------------- CUB-200-2011


@pytest.mark.parametrize("point_at_folder", [False, True])
def test_cub_official_format_and_zero_shot_protocol(tmp_path, official, point_at_folder):
    info = official.cub(tmp_path / "cub", class_ids=(1, 2, 100, 101, 150, 200), per_class=3)
    root = tmp_path / "cub" / "CUB_200_2011" if point_at_folder else tmp_path / "cub"
    opts = _options(tmp_path)
    data = load_dataset("cub200", "all", root, options=opts)
    assert data.class_names == [f"{c:03d}.Species_{c}" for c in (1, 2, 100, 101, 150, 200)]
    assert data.zero_shot_train_classes == [0, 1, 2]
    assert data.paths == ["images/" + p for p in info["paths"]]
    splits = build_splits("cub200", root, protocol="zero_shot", options=opts)
    assert sorted(set(splits.train.labels.tolist())) == [0, 1, 2] and len(splits.train) == 9
    assert sorted(set(splits.eval.labels.tolist())) == [3, 4, 5] and len(splits.eval) == 9
    closed = build_splits("cub200", root, protocol="closed", options=opts)
    expected_train = ["images/" + p for p, t in zip(info["paths"], info["is_train"], strict=True) if t]
    assert closed.train.paths == expected_train and len(closed.eval) == 6
    folder = tmp_path / "cub" / "CUB_200_2011"
    assert np.array_equal(data.images[0].numpy(), decode_square(folder / "images" / info["paths"][0], 27, 24))


@pytest.mark.parametrize("damage, message", [
    (("images.txt", "1 001.Species_1/Species_1_0000_1.jpg", "1"), "expected 2 fields"),
    (("image_class_labels.txt", "1 1", "1 7"), "which classes.txt does not list"),
    (("images.txt", "1 001.Species_1/", "1 ../../"), "escapes the dataset folder"),
    (("train_test_split.txt", "2 1", "2 yes"), "expected 0 or 1"),
    (("train_test_split.txt", "3 0\n", ""), "list different image ids"),
])
def test_cub_malformed_files_are_refused(tmp_path, official, damage, message):
    official.cub(tmp_path / "cub", class_ids=(1, 101), per_class=3)
    name, old, new = damage
    path = tmp_path / "cub" / "CUB_200_2011" / name
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new, 1))
    with pytest.raises(ValueError, match=message):
        load_dataset("cub200", "all", tmp_path / "cub", options=_options(tmp_path))


def test_cub_missing_image_and_missing_release(tmp_path, official):
    info = official.cub(tmp_path / "cub", class_ids=(1, 101), per_class=2)
    (tmp_path / "cub" / "CUB_200_2011" / "images" / info["paths"][1]).unlink()
    with pytest.raises(FileNotFoundError, match="listed in images.txt but missing"):
        load_dataset("cub200", "all", tmp_path / "cub", options=_options(tmp_path))
    with pytest.raises(FileNotFoundError, match=r"data\.caltech\.edu.*97eceeb196236b17998738112f37df78"):
        load_dataset("cub200", "train", tmp_path / "nothing", options=_options(tmp_path))


@pytest.mark.slow
@pytest.mark.skipif(not SHARED_CUB.is_dir(), reason="../shared/data/CUB_200_2011_subset is not here")
def test_shared_cub_subset_reads_unchanged(tmp_path):
    opts = PhotoOptions(image_size=224, cache_dir=str(tmp_path / "cache"))
    splits = build_splits("cub200", SHARED_CUB, protocol="zero_shot", options=opts)
    assert splits.train.num_classes == 100
    assert len(set(splits.train.labels.tolist())) == 58 and len(splits.train) == 3428
    assert len(set(splits.eval.labels.tolist())) == 42 and len(splits.eval) == 2474
    assert all(int(splits.eval.class_names[c][:3]) > 100 for c in set(splits.eval.labels.tolist()))
    assert splits.train.images.shape[1:] == (3, 256, 256)
    # both sides are views of one memory map: nothing copied into RAM
    assert splits.train.images.untyped_storage().data_ptr() == splits.eval.images.untyped_storage().data_ptr()


def test_cub_refuses_a_listed_image_that_links_outside(tmp_path, official):
    info = official.cub(tmp_path / "cub", class_ids=(1, 101), per_class=2)
    outside = tmp_path / "outside.jpg"
    official.photo(outside, 1, fmt="JPEG")
    linked = tmp_path / "cub" / "CUB_200_2011" / "images" / info["paths"][0]
    linked.unlink()
    linked.symlink_to(outside)
    with pytest.raises(ValueError, match="leads outside the dataset folder"):
        load_dataset("cub200", "all", tmp_path / "cub", options=_options(tmp_path))

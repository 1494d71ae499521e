import json
import tracemalloc

import numpy as np
import pytest
import torch

from clusterloss.data import imagenet, load_dataset


@pytest.mark.parametrize("npz", [False, True])
def test_official_layout_loads_in_file_order(tmp_path, official, npz):
    written = official.imagenet(tmp_path, side=16, per_batch=5, npz=npz)
    folder = f"Imagenet16_train{'_npz' if npz else ''}"
    data = np.concatenate([written[f"{folder}/train_data_batch_{i}"][0] for i in range(1, 11)])
    labels = sum((written[f"{folder}/train_data_batch_{i}"][1] for i in range(1, 11)), [])
    train = load_dataset("imagenet16", "train", tmp_path)
    assert train.images.shape == (50, 3, 16, 16)
    assert np.array_equal(train.images.reshape(50, -1).numpy(), data)
    assert train.labels.tolist() == [v - 1 for v in labels]
    assert (tmp_path / folder / "train_uint8_cache.npy").is_file()


def test_imagenet32_train_and_val_and_cache_reuse(tmp_path, official, monkeypatch):
    written = official.imagenet(tmp_path, side=32, per_batch=4)
    (tmp_path / "map_clsloc.txt").write_text("n01440764 1 tench\nn01443537 2 goldfish\n")
    train = load_dataset("imagenet32", "train", tmp_path)
    val = load_dataset("imagenet32", "test", tmp_path)
    assert train.images.shape == (40, 3, 32, 32) and train.images.dtype == torch.uint8
    assert val.images.shape == (7, 3, 32, 32)
    data, labels = written["Imagenet32_val/val_data"]
    # planar rows: red plane, green plane, blue plane
    assert val.images[2, 2, 31, 0] == data[2, 2048 + 31 * 32]
    assert val.labels.tolist() == [v - 1 for v in labels] and val.labels.dtype == torch.int64
    assert train.class_names[:3] == ["tench", "goldfish", "label 3"] and len(train.class_names) == 1000

    def fail(*args):
        raise AssertionError("the source files were read again although the cache is current")

    monkeypatch.setattr(imagenet, "_read_batch", fail)
    again = load_dataset("imagenet32", "train", tmp_path)
    assert torch.equal(again.images, train.images) and torch.equal(again.labels, train.labels)
    again.images[0, 0, 0, 0] = 7  # copy-on-write map: the cache file is not modified
    assert load_dataset("imagenet32", "train", tmp_path).images[0, 0, 0, 0] == train.images[0, 0, 0, 0]


def test_changed_source_or_broken_cache_triggers_rebuild(tmp_path, official):
    official.imagenet(tmp_path, side=16, per_batch=3)
    first = load_dataset("imagenet16", "test", tmp_path)
    meta = tmp_path / "Imagenet16_val" / "val_cache.json"
    meta.unlink()  # as after an interrupted build: the marker is written last
    assert torch.equal(load_dataset("imagenet16", "test", tmp_path).images, first.images)
    official.imagenet(tmp_path, side=16, per_batch=3, seed=5)  # new content, same names
    assert json.loads(meta.read_text())["count"] == 6
    assert not torch.equal(load_dataset("imagenet16", "test", tmp_path).images, first.images)
    leftovers = [p.name for p in (tmp_path / "Imagenet16_val").iterdir() if p.name.startswith(".")]
    assert leftovers == []


def test_cache_build_streams_with_small_peak_memory(tmp_path, official):
    per_batch = 400
    official.imagenet(tmp_path, side=32, per_batch=per_batch)
    folder, files = imagenet._source_files(tmp_path, 32, "train")
    total_bytes = 10 * per_batch * 3072
    tracemalloc.start()
    try:
        imagenet.build_cache(files, folder, "train", 32)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak <= 1.3 * total_bytes  # the requirement
    assert peak <= 0.5 * total_bytes  # and in fact about two source files at a time
    assert (folder / "train_uint8_cache.npy").stat().st_size == 256 + total_bytes


def test_missing_files_and_download_explain_the_login(tmp_path):
    for download in (False, True):
        with pytest.raises(FileNotFoundError) as info:
            load_dataset("imagenet64", "train", tmp_path, download=download)
        assert imagenet.LOGIN_URL in str(info.value) and "Imagenet64_train" in str(info.value)
    with pytest.raises(ValueError, match="sizes 16, 32, 64"):
        imagenet.load_imagenet(48, "train", tmp_path)


def test_bad_labels_are_rejected(tmp_path, official):
    official.imagenet(tmp_path, side=16, per_batch=2)
    path = tmp_path / "Imagenet16_val" / "val_data"
    official.write_pickle(
        path, {"data": np.zeros((2, 768), np.uint8), "labels": [0, 5], "mean": np.zeros(768)}, 3
    )
    with pytest.raises(ValueError, match="1..1000"):
        load_dataset("imagenet16", "test", tmp_path)

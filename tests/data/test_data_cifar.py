import pickletools

import numpy as np
import pytest
import torch

from clusterloss.data import build_splits, load_dataset
from clusterloss.data.safe_pickle import safe_load


def _opcodes(data: bytes):
    return [
        (op.name, arg if not isinstance(arg, bytes | str) or len(arg) < 64 else len(arg))
        for op, arg, _ in pickletools.genops(data)
    ]


def test_fixture_writer_reproduces_the_real_files_byte_for_byte(cifar10_root, official):
    folder = cifar10_root / "cifar-10-batches-py"
    for name in ["batches.meta", "data_batch_1"]:
        raw = (folder / name).read_bytes()
        rewritten = official.pickle_bytes(safe_load(folder / name))
        assert _opcodes(rewritten)[:40] == _opcodes(raw)[:40]
        assert rewritten == raw


def test_fixture_files_have_the_python2_form(tmp_path, official):
    official.cifar10(tmp_path, per_batch=3)
    raw = (tmp_path / "cifar-10-batches-py" / "data_batch_1").read_bytes()
    ops = _opcodes(raw)
    assert ops[0] == ("PROTO", 2)
    assert ("GLOBAL", "numpy.core.multiarray _reconstruct") in ops
    assert ("SHORT_BINSTRING", "data") in ops and not any(
        name == "BINUNICODE" and arg == "data" for name, arg in ops
    )


def test_load_small_official_cifar10(tmp_path, official):
    written = official.cifar10(tmp_path, per_batch=6)
    train = load_dataset("cifar10", "train", tmp_path)
    test = load_dataset("cifar10", "test", tmp_path)
    assert train.images.shape == (30, 3, 32, 32) and test.images.shape == (6, 3, 32, 32)
    assert train.images.dtype == torch.uint8 and train.labels.dtype == torch.int64
    data, labels = written["data_batch_2"]
    # row layout: 1024 red, 1024 green, 1024 blue values, each a row-major 32x32 plane
    assert train.images[6 + 1, 1, 2, 5] == data[1, 1024 + 2 * 32 + 5]
    assert train.labels[6:12].tolist() == labels
    assert train.class_names[0] == "airplane" and test.split == "test"
    assert train.coarse_labels is None


def test_load_small_official_cifar100(tmp_path, official):
    written = official.cifar100(tmp_path)
    train = load_dataset("cifar100", "train", tmp_path)
    data, fine, coarse = written["train"]
    assert train.images.shape == (30, 3, 32, 32)
    assert torch.equal(train.images.reshape(30, -1), torch.from_numpy(data))
    assert train.labels.tolist() == fine and train.coarse_labels.tolist() == coarse
    assert len(train.class_names) == 100 and len(train.coarse_class_names) == 20
    assert train.class_names[3] == "fine_3" and train.coarse_class_names[19] == "coarse_19"
    zero_shot = build_splits("cifar100", tmp_path, protocol="zero_shot")
    assert int(zero_shot.train.labels.max()) < 50 and int(zero_shot.eval.labels.min()) >= 50
    assert zero_shot.eval.split == "test"


def test_missing_files_error_says_what_to_put_where(tmp_path):
    with pytest.raises(FileNotFoundError) as info:
        load_dataset("cifar100", "train", tmp_path)
    message = str(info.value)
    assert "cifar-100-python.tar.gz" in message and str(tmp_path / "cifar-100-python") in message
    assert "download=True" in message


def test_corrupt_content_is_rejected(tmp_path, official):
    official.cifar10(tmp_path, per_batch=4)
    official.write_pickle(
        tmp_path / "cifar-10-batches-py" / "data_batch_3",
        {b"labels": [0, 1], b"data": np.zeros((2, 100), np.uint8)},
    )
    with pytest.raises(ValueError, match="data_batch_3.*uint8 array"):
        load_dataset("cifar10", "train", tmp_path)


def test_real_cifar10(cifar10_root):
    train = load_dataset("cifar10", "train", cifar10_root)
    test = load_dataset("cifar10", "test", cifar10_root)
    assert train.images.shape == (50000, 3, 32, 32) and test.images.shape == (10000, 3, 32, 32)
    assert train.labels[:10000].bincount().tolist() == [
        1005,
        974,
        1032,
        1016,
        999,
        937,
        1030,
        1001,
        1025,
        981,
    ]
    assert test.labels.bincount().tolist() == [1000] * 10
    assert test.labels[:1000].eq(0).all()  # this copy's test set is ordered by class (see its README)
    # official row 0 starts [59 43 50 ...]; this JPEG copy has [61 48 56 ...]
    assert train.images[0, 0, 0, :3].tolist() == [61, 48, 56]
    assert train.class_names[3] == "cat"

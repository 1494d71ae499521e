import pytest
import torch

from clusterloss.data import build_splits, load_dataset, split_datasets
from clusterloss.data.dataset import ImageDataset


def test_digits_shapes_values_and_fixed_split():
    from sklearn.datasets import load_digits

    train, test = load_dataset("digits", "train"), load_dataset("digits", "test")
    assert train.images.shape == (1262, 1, 8, 8) and test.images.shape == (535, 1, 8, 8)
    assert train.images.dtype == torch.uint8 and train.labels.dtype == torch.int64
    assert train.class_names == [str(d) for d in range(10)]
    bunch = load_digits()
    # the split is: per class, the first ceil(0.7 n) images in file order are train, the rest test
    seen = {d: 0 for d in range(10)}
    train_rows, test_rows = [], []
    for row, d in enumerate(bunch.target.tolist()):
        n = int((bunch.target == d).sum())
        (train_rows if seen[d] < -(-7 * n // 10) else test_rows).append(row)
        seen[d] += 1
    scaled = torch.from_numpy((bunch.images * 255 / 16).round()).to(torch.uint8)
    assert torch.equal(train.images[:, 0], scaled[train_rows])
    assert torch.equal(test.images[:, 0], scaled[test_rows])
    assert torch.equal(test.labels, torch.from_numpy(bunch.target[test_rows]))
    assert int(train.images.max()) == 255 and int(train.images.min()) == 0


def _toy(split, n_per_class=6, classes=6):
    labels = torch.arange(classes).repeat_interleave(n_per_class)
    images = (
        (labels * 10 + (1 if split == "train" else 2)).to(torch.uint8).view(-1, 1, 1, 1).expand(-1, 1, 2, 2)
    )
    return ImageDataset(images.contiguous(), labels, [f"c{c}" for c in range(classes)], "toy", split)


def test_closed_zero_shot_and_explicit_classes():
    train, test = _toy("train"), _toy("test")
    a, b = split_datasets(train, test, "closed")
    assert a is train and b is test
    a, b = split_datasets(train, test, "zero_shot")
    assert a.labels.unique().tolist() == [0, 1, 2] and b.labels.unique().tolist() == [3, 4, 5]
    assert (a.images == a.labels.view(-1, 1, 1, 1) * 10 + 1).all()  # train-split images
    assert (b.images == b.labels.view(-1, 1, 1, 1) * 10 + 2).all()  # test-split images
    assert b.class_names == train.class_names  # original ids keep their names
    a, b = split_datasets(train, test, train_classes=[4, 1])
    assert a.labels.unique().tolist() == [1, 4] and b.labels.unique().tolist() == [0, 2, 3, 5]
    with pytest.raises(ValueError, match="not class ids"):
        split_datasets(train, test, train_classes=[9])
    with pytest.raises(ValueError, match="unknown protocol"):
        split_datasets(train, test, "open")


@pytest.mark.parametrize("protocol,fit,val", [("closed", [0, 1, 2, 3], [4, 5]), ("zero_shot", [0, 1], [2])])
def test_validation_carves_classes_from_training_split_only(protocol, fit, val):
    train, test = _toy("train"), _toy("test")
    a, b = split_datasets(train, test, protocol, validation=True)
    assert a.labels.unique().tolist() == fit and b.labels.unique().tolist() == val
    assert (b.images % 10 == 1).all() and (a.images % 10 == 1).all()  # never a test image
    assert b.split == "train-validation"


def test_build_splits_statistics_come_from_training_images():
    splits = build_splits("digits", protocol="zero_shot")
    assert set(splits.train.labels.tolist()) == {0, 1, 2, 3, 4}
    assert set(splits.eval.labels.tolist()) == {5, 6, 7, 8, 9}
    assert len(splits.eval) == int((load_dataset("digits", "test").labels >= 5).sum())
    pixels = splits.train.images.double() / 255
    assert torch.allclose(splits.mean.double(), pixels.mean().view(1), atol=1e-6)
    assert torch.allclose(splits.std.double(), pixels.std(unbiased=False).view(1), atol=1e-6)
    val = build_splits("digits", validation=True)
    assert set(val.eval.labels.tolist()) == {7, 8, 9} and set(val.train.labels.tolist()) == set(range(7))


def test_unknown_dataset_and_split():
    with pytest.raises(ValueError, match="Did you mean 'digits'"):
        load_dataset("digit", "train")
    with pytest.raises(ValueError, match="split"):
        load_dataset("digits", "val")

"""Cars196, Stanford Online Products and In-Shop readers on fixture releases in the official formats."""

import numpy as np
import pytest

from clusterloss.data import build_splits, load_dataset
from clusterloss.data.image_cache import PhotoOptions


def _options(tmp_path):
    return PhotoOptions(image_size=24, cache_dir=str(tmp_path / "cache"), workers=1)


# ------------------------------------------------------------------------------------------------- Cars196


def test_cars_official_mat_and_zero_shot_protocol(tmp_path, official):
    official.cars(tmp_path / "cars")
    data = load_dataset("cars196", "all", tmp_path / "cars", options=_options(tmp_path))
    assert data.num_classes == 196 and data.class_names[0] == "Make1 Model 2000"
    assert sorted(set(data.labels.tolist())) == [0, 1, 97, 98, 149, 195]
    assert data.paths[0] == "car_ims/000001.jpg"
    splits = build_splits("cars196", tmp_path / "cars", protocol="zero_shot", options=_options(tmp_path))
    assert sorted(set(splits.train.labels.tolist())) == [0, 1, 97] and len(splits.train) == 6
    assert sorted(set(splits.eval.labels.tolist())) == [98, 149, 195] and len(splits.eval) == 6
    closed = build_splits("cars196", tmp_path / "cars", protocol="closed", options=_options(tmp_path))
    assert len(closed.train) == 6 and all(p.endswith(("1.jpg", "3.jpg", "5.jpg", "7.jpg", "9.jpg"))
                                          for p in closed.train.paths)


def test_cars_in_a_cars196_subfolder(tmp_path, official):
    official.cars(tmp_path / "data" / "cars196", class_ids=(1, 120), per_class=2)
    assert len(load_dataset("cars196", "all", tmp_path / "data", options=_options(tmp_path))) == 4


@pytest.mark.parametrize("kind, message", [
    ("missing field", r"lacks the field\(s\) \['test'\]"),
    ("bad class", r"class 200 is not in 1\.\.196"),
    ("bad test flag", "test must be 0 or 1"),
    ("escaping path", "escapes the dataset folder"),
])
def test_cars_malformed_annotations_are_refused(tmp_path, official, kind, message):
    root = tmp_path / "cars"
    if kind == "missing field":
        official.cars(root, fields=("relative_im_path", "bbox_x1", "bbox_y1", "bbox_x2", "bbox_y2", "class"))
    else:
        change = {"bad class": {"class": np.array([[200]], np.uint8)},
                  "bad test flag": {"test": np.array([[2]], np.uint8)},
                  "escaping path": {"relative_im_path": np.array(["../outside.jpg"])}}[kind]
        official.cars(root, override={1: change})
    with pytest.raises(ValueError, match=message):
        load_dataset("cars196", "all", root, options=_options(tmp_path))


def test_cars_missing_release_says_where_to_get_it(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"cars_annos\.mat.*cannot fetch it.*Get the Cars196"):
        load_dataset("cars196", "train", tmp_path, download=True, options=_options(tmp_path))


# -------------------------------------------------------------------------------- Stanford Online Products


def test_sop_official_lists_superclasses_and_protocol(tmp_path, official):
    official.sop(tmp_path, train_classes=(1, 2, 3), test_classes=(4, 5, 6))
    for root in (tmp_path, tmp_path / "Stanford_Online_Products"):
        data = load_dataset("sop", "all", root, options=_options(tmp_path))
        assert data.class_names == ["1", "2", "3", "4", "5", "6"] and len(data) == 12
        assert data.coarse_class_names == ["bicycle", "cabinet"]
        assert data.coarse_labels.tolist() == [(c % 2) for c in (1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6)]
        assert data.zero_shot_train_classes == [0, 1, 2]
    for protocol in ("zero_shot", "closed"):  # the official split is class-disjoint: both are the same
        splits = build_splits("sop", tmp_path, protocol=protocol, options=_options(tmp_path))
        assert sorted(set(splits.train.labels.tolist())) == [0, 1, 2] and len(splits.train) == 6
        assert sorted(set(splits.eval.labels.tolist())) == [3, 4, 5] and len(splits.eval) == 6
        assert splits.train.paths[0] == "cabinet_final/111001_0.JPG"


@pytest.mark.parametrize("extra, message", [
    (["99 7 1"], "expected 4 fields"),
    (["99 x 1 bicycle_final/111001_0.JPG"], "must be positive integers"),
    (["99 7 1 ../../etc/passwd"], "escapes the dataset folder"),
    (["99 1 2 cabinet_final/111001_0.JPG"], "in both Ebay_train.txt and Ebay_test.txt"),
    (["1 9 1 bicycle_final/111001_0.JPG"], "appears twice"),
])
def test_sop_malformed_lists_are_refused(tmp_path, official, extra, message):
    official.sop(tmp_path, lines={"Ebay_test.txt": extra})
    with pytest.raises(ValueError, match=message):
        load_dataset("sop", "all", tmp_path, options=_options(tmp_path))


def test_sop_wrong_header_and_missing_release(tmp_path, official):
    folder = official.sop(tmp_path)
    text = (folder / "Ebay_train.txt").read_text()
    (folder / "Ebay_train.txt").write_text(text.replace("image_id class_id super_class_id", "id class"))
    with pytest.raises(ValueError, match="expected the header"):
        load_dataset("sop", "all", tmp_path, options=_options(tmp_path))
    with pytest.raises(FileNotFoundError, match=r"lifted_struct.*7f73d41a2f44250d4779881525aea32e"):
        load_dataset("sop", "all", tmp_path / "elsewhere", options=_options(tmp_path))


# ------------------------------------------------------------------------------------------------- In-Shop


def test_inshop_partition_query_mask_and_protocol(tmp_path, official):
    official.inshop(tmp_path, train_items=2, test_items=3, per_item=3)
    data = load_dataset("inshop", "all", tmp_path, options=_options(tmp_path))
    assert data.class_names == [f"id_{i:08d}" for i in range(1, 6)] and data.zero_shot_train_classes == [0, 1]
    test = load_dataset("inshop", "test", tmp_path, options=_options(tmp_path))
    assert len(test) == 9 and test.query_mask.tolist() == [True, False, False] * 3
    train = load_dataset("inshop", "train", tmp_path, options=_options(tmp_path))
    assert len(train) == 6 and train.query_mask is None
    for protocol in ("zero_shot", "closed"):
        splits = build_splits("inshop", tmp_path, protocol=protocol, options=_options(tmp_path))
        assert splits.train.query_mask is None and len(splits.train) == 6
        assert splits.eval.query_mask.tolist() == [True, False, False] * 3
    validation = build_splits("inshop", tmp_path, protocol="zero_shot", validation=True,
                              options=_options(tmp_path))
    assert validation.eval.query_mask is None and len(validation.eval) == 3  # all against all


def test_inshop_accepts_img_under_Img(tmp_path, official):  # noqa: N802 (the release's folder name)
    official.inshop(tmp_path / "release", train_items=1, test_items=1, per_item=2)
    (tmp_path / "release" / "Img").mkdir()
    (tmp_path / "release" / "img").rename(tmp_path / "release" / "Img" / "img")
    assert len(load_dataset("inshop", "all", tmp_path / "release", options=_options(tmp_path))) == 4


@pytest.mark.parametrize("extra, message", [
    (["img/WOMEN/Dresses/id_00000001/09_1_front.jpg id_00000001 validation"], "unknown evaluation_status"),
    (["img/WOMEN/Dresses/id_00000001/09_1_front.jpg id_00000001"], "expected 3 fields"),
    (["../../secret.jpg id_00000009 gallery"], "escapes the dataset folder"),
    (["img/WOMEN/Dresses/id_00000001/01_1_front.jpg id_00000001 query"], "both a training item"),
])
def test_inshop_malformed_partition_is_refused(tmp_path, official, extra, message):
    official.inshop(tmp_path, extra=extra)
    with pytest.raises(ValueError, match=message):
        load_dataset("inshop", "all", tmp_path, options=_options(tmp_path))


def test_inshop_wrong_count_line(tmp_path, official):
    official.inshop(tmp_path)
    path = tmp_path / "Eval" / "list_eval_partition.txt"
    path.write_text("7\n" + path.read_text().split("\n", 1)[1])
    with pytest.raises(ValueError, match="the first line must be the number of images"):
        load_dataset("inshop", "all", tmp_path, options=_options(tmp_path))


@pytest.mark.parametrize("recipe", ["cars196_resnet50", "sop_resnet50", "inshop_resnet50"])
def test_recipes_load_their_benchmark(tmp_path, official, recipe):
    from pathlib import Path

    from clusterloss.config import load_config
    from clusterloss.data.protocols import splits_from_config

    root = tmp_path / "release"
    {"cars196_resnet50": lambda: official.cars(root), "sop_resnet50": lambda: official.sop(root),
     "inshop_resnet50": lambda: official.inshop(root)}[recipe]()
    configs = Path(__file__).resolve().parents[2] / "configs"
    config = load_config(configs / f"{recipe}.yaml", [f"data.root={root}", "data.image_size=24",
                                                       f"data.cache_dir={tmp_path / 'cache'}"])
    splits = splits_from_config(config.data)
    assert len(splits.train) and len(splits.eval) and splits.train.view_size == 24
    assert not set(splits.train.labels.tolist()) & set(splits.eval.labels.tolist())
    assert (splits.eval.query_mask is not None) == (recipe == "inshop_resnet50")

"""Checkpoints: atomic writes, weights_only loads, RNG capture, rebuilding models, backbone-only init."""

import random

import numpy as np
import pytest
import torch

from clusterloss.checkpoint import (
    capture_rng_state,
    load_backbone,
    load_checkpoint,
    model_from_checkpoint,
    restore_rng_state,
    save_checkpoint,
)
from clusterloss.config import Config
from clusterloss.models import build_model


def _draws():
    return torch.rand(3), np.random.rand(3), [random.random() for _ in range(3)]  # noqa: NPY002


def test_rng_round_trip_through_a_weights_only_file(tmp_path):
    torch.manual_seed(1)
    np.random.seed(1)  # noqa: NPY002
    random.seed(1)
    save_checkpoint({"rng": capture_rng_state()}, tmp_path / "r.pt")
    first = _draws()
    restore_rng_state(load_checkpoint(tmp_path / "r.pt")["rng"])
    second = _draws()
    assert torch.equal(first[0], second[0])
    np.testing.assert_array_equal(first[1], second[1])
    assert first[2] == second[2]


def test_optimizer_and_model_state_load_with_weights_only(tmp_path):
    model = build_model("convnet", embedding_dim=4, in_channels=1, width=4)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, nesterov=True)
    model(torch.randn(4, 1, 8, 8)).sum().backward()
    opt.step()
    save_checkpoint({"model": model.state_dict(), "optimizer": opt.state_dict(), "epoch": 1,
                     "config": Config().to_dict()}, tmp_path / "c.pt")
    loaded = load_checkpoint(tmp_path / "c.pt")
    opt2 = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, nesterov=True)
    opt2.load_state_dict(loaded["optimizer"])
    for key, value in model.state_dict().items():
        assert torch.equal(value, loaded["model"][key])


def test_failed_write_keeps_the_previous_file_and_leaves_no_temp(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    save_checkpoint({"step": 1}, path)

    def broken_save(obj, handle):
        handle.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint({"step": 2}, path)
    monkeypatch.undo()
    assert load_checkpoint(path)["step"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]


def test_atomic_text_write_replaces_whole_files_and_keeps_the_old_one_on_failure(tmp_path):
    from clusterloss.utils.files import atomic_write_text

    path = tmp_path / "metrics.json"
    atomic_write_text(path, "first\n")
    atomic_write_text(path, "second\n")
    assert path.read_text() == "second\n"

    class Unencodable(str):
        def encode(self, *args):
            raise UnicodeEncodeError("utf-8", "x", 0, 1, "refused")

    with pytest.raises(UnicodeEncodeError):
        atomic_write_text(path, Unencodable("third"))
    assert path.read_text() == "second\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.json"]

    plain = tmp_path / "plain.txt"
    plain.write_text("x")  # atomic files get the same permissions as any file the user writes
    assert path.stat().st_mode & 0o777 == plain.stat().st_mode & 0o777


def test_unsafe_objects_are_refused(tmp_path):
    import datetime

    torch.save({"x": datetime.date(2020, 1, 1)}, tmp_path / "evil.pt")  # any non-allow-listed class
    with pytest.raises(ValueError, match="refusing to load it") as err:
        load_checkpoint(tmp_path / "evil.pt")
    message = str(err.value)
    assert "datetime.date" in message and "\n" not in message
    # PyTorch's own advice (weights_only=False, add_safe_globals) would run the file's code: never passed on
    assert "weights_only" not in message and "safe_globals" not in message and "trust" not in message


def test_model_from_checkpoint_reproduces_outputs(tmp_path):
    config = Config.from_dict({"model": {"name": "convnet", "embedding_dim": 6, "options": {"width": 4}}})
    model = build_model("convnet", embedding_dim=6, in_channels=1, width=4).eval()
    save_checkpoint({"model": model.state_dict(), "config": config.to_dict(), "in_channels": 1},
                    tmp_path / "m.pt")
    rebuilt, rebuilt_config = model_from_checkpoint(tmp_path / "m.pt")
    x = torch.randn(5, 1, 8, 8)
    with torch.no_grad():
        assert torch.equal(model(x), rebuilt(x))
    assert rebuilt_config == config and not rebuilt.training
    with pytest.raises(ValueError, match="not a clusterloss checkpoint"):
        model_from_checkpoint({"model": {}})


def test_load_backbone_copies_backbone_only():
    source = build_model("convnet", embedding_dim=4, in_channels=1, width=4)
    target = build_model("convnet", embedding_dim=4, in_channels=1, width=4)
    keys = load_backbone(target, {"model": source.state_dict()})
    assert keys and all(not k.startswith("head") for k in keys)
    for k, v in source.backbone.state_dict().items():
        assert torch.equal(v, target.backbone.state_dict()[k])
    assert not torch.equal(source.head.linear.weight, target.head.linear.weight)
    with pytest.raises(ValueError, match="does not fit"):
        load_backbone(build_model("convnet", in_channels=1, width=8), {"model": source.state_dict()})
    with pytest.raises(ValueError, match="no 'backbone"):
        load_backbone(target, {"model": {"head.linear.weight": torch.zeros(1)}})

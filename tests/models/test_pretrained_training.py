"""A pretrained timm backbone through the trainer: its own normalization is used for training batches,
evaluation, the checkpoint and extraction; a checkpoint rebuild never reads the weights file again."""

import pytest
import torch
import torchvision

from clusterloss.analysis import extract
from clusterloss.checkpoint import load_checkpoint, model_from_checkpoint
from clusterloss.config import load_config
from clusterloss.data.protocols import splits_from_config
from clusterloss.inference import embed_dataset
from clusterloss.train import train


@pytest.mark.slow
def test_trainer_uses_backbone_preprocessing_and_options(tmp_path):
    weights = tmp_path / "resnet18.pth"
    reference = torchvision.models.resnet18(weights=None)
    reference.conv1 = torch.nn.Conv2d(1, 64, 7, 2, 3, bias=False)  # digits are grey: a 1-channel stem
    torch.save(reference.state_dict(), weights)
    config = load_config("configs/digits_convnet.yaml", [
        "model.name=timm", "model.options={arch: resnet18}", f"model.pretrained={weights}",
        "model.preprocessing={mean: 0.25, std: 0.5}", "model.freeze_bn=true", "model.embedding_dim=16",
        "train.optimizer=adamw", "train.head_lr_multiplier=10", "train.epochs=1", "train.steps_per_epoch=2",
        "train.progress=false", "eval.kmeans_seeds=[0]"])
    run = tmp_path / "run"
    train(config, run)
    ckpt = load_checkpoint(run / "last.pt")
    assert ckpt["data_stats"] == {"mean": [0.25], "std": [0.5]}  # the backbone's, not the digits' statistics
    names = [g["name"] for g in ckpt["optimizer"]["param_groups"]]
    assert names == ["model", "head"]
    lrs = {g["name"]: g["lr"] for g in ckpt["optimizer"]["param_groups"]}
    assert lrs["head"] == pytest.approx(10 * lrs["model"])
    bn = {k: v for k, v in ckpt["model"].items() if k.startswith("backbone.net.bn1.running")}
    assert torch.equal(bn["backbone.net.bn1.running_mean"], reference.bn1.running_mean)  # frozen BN

    weights.unlink()  # rebuilding from the checkpoint must not need the pretrained file any more
    model, _ = model_from_checkpoint(ckpt)
    assert model.preprocessing["mean"] == [0.25]
    extracted = extract(run / "last.pt")
    splits = splits_from_config(config.data)
    expected = embed_dataset(model, splits.eval, [0.25], [0.5]).numpy()
    assert extracted.embeddings == pytest.approx(expected, abs=1e-5)
    other = embed_dataset(model, splits.eval, splits.mean, splits.std).numpy()
    assert abs(other - expected).max() > 1e-3  # the normalization matters, so the check above means something

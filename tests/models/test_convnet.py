"""The digits convnet and the model registry."""

import pytest
import torch

from clusterloss.models import MODELS, build_model


def test_convnet_digits_shape_norm_and_bf16():
    model = build_model("convnet", embedding_dim=32, in_channels=1).eval()
    x = torch.randn(5, 1, 8, 8)
    with torch.no_grad():
        out = model(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out_bf16 = model(x)
    assert out.shape == (5, 32) and out.dtype == torch.float32
    torch.testing.assert_close(out.norm(dim=1), torch.ones(5))
    assert out_bf16.dtype == torch.float32  # the head normalizes in fp32
    torch.testing.assert_close(out_bf16.norm(dim=1), torch.ones(5))


def test_convnet_parameter_count():
    w, d = 32, 64
    expected = (1 * w * 9 + 2 * w) + (w * w * 9 + 2 * w) + (w * 2 * w * 9 + 4 * w) + 2 * w * 2 * w * 9
    expected += 4 * w + 2 * w * d + d  # head BN + Linear
    assert sum(p.numel() for p in build_model("convnet", in_channels=1).parameters()) == expected


def test_rejects_non_image_input():
    with pytest.raises(ValueError, match="B, C, H, W"):
        build_model("convnet", in_channels=1)(torch.randn(4, 64))


# Models that need options (the pretrained-backbone families: a small member of each, random weights).
_REGISTRY_OPTIONS = {"timm": {"arch": "resnet18"}, "torchvision": {"arch": "googlenet"}}


@pytest.mark.parametrize("name", sorted(MODELS))
def test_registry_builds_every_model(name):
    in_channels = 1 if name == "convnet" else 3
    options = _REGISTRY_OPTIONS.get(name, {})
    model = build_model(name, embedding_dim=8, in_channels=in_channels, **options).eval()
    size = 8 if name == "convnet" else 32
    with torch.no_grad():
        out = model(torch.randn(2, in_channels, size, size).contiguous(memory_format=torch.channels_last))
    torch.testing.assert_close(out.norm(dim=1), torch.ones(2))

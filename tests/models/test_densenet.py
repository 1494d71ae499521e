"""DenseNet parameter counts against the architecture formula, shapes, unit norms, backbone/head split."""

import pytest
import torch

from clusterloss.models import build_model


def _bn(c: int) -> int:
    return 2 * c  # weight + bias (running stats are buffers)


def expected_densenet_params(depth: int, bottleneck: bool, compression: float, embedding_dim: int,
                             in_channels: int = 3, k: int = 12) -> int:
    """Count parameters from the paper's description, independently of the model code."""
    per_block = (depth - 4) // (6 if bottleneck else 3)
    c = 2 * k
    total = in_channels * c * 9  # stem conv, no bias
    for block in range(3):
        for _ in range(per_block):
            if bottleneck:
                total += _bn(c) + c * 4 * k + _bn(4 * k) + 4 * k * k * 9
            else:
                total += _bn(c) + c * k * 9
            c += k
        if block < 2:
            out = int(c * compression)
            total += _bn(c) + c * out
            c = out
    return total + _bn(c) + c * embedding_dim + embedding_dim


def n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("name, depth, bottleneck, compression, approx", [
    ("densenet40", 40, False, 1.0, 1.0e6),
    ("densenet_bc40", 40, True, 0.5, 0.18e6),
    ("densenet_bc100", 100, True, 0.5, 0.8e6),
])
def test_parameter_count_matches_formula(name, depth, bottleneck, compression, approx):
    model = build_model(name, embedding_dim=64)
    expected = expected_densenet_params(depth, bottleneck, compression, 64)
    assert n_params(model) == expected
    assert abs(expected - approx) / approx < 0.1  # the sizes the papers quote


def test_hand_count_of_head_channels():
    # 24 -> +72 = 96 -> 48 -> +72 = 120 -> 60 -> +72 = 132 channels into the head
    model = build_model("densenet_bc40")
    assert model.head.norm.num_features == 132
    # no compression: 24 + 3 blocks * 12 layers * 12 = 456
    assert build_model("densenet40").head.norm.num_features == 456


@pytest.mark.parametrize("name", ["densenet40", "densenet_bc40"])
def test_output_shape_and_unit_norm(name):
    model = build_model(name, embedding_dim=16).eval()
    with torch.no_grad():
        out = model(torch.randn(3, 3, 16, 16))
    assert out.shape == (3, 16)
    torch.testing.assert_close(out.norm(dim=1), torch.ones(3))


def test_backward_reaches_every_parameter_and_dropout_option():
    model = build_model("densenet_bc40", embedding_dim=8, dropout=0.2)
    assert any(isinstance(m, torch.nn.Dropout) for m in model.modules())
    assert not any(isinstance(m, torch.nn.Dropout) for m in build_model("densenet_bc40").modules())
    model(torch.randn(2, 3, 16, 16)).sum().backward()  # any size divisible by 4 works
    assert all(p.grad is not None for p in model.parameters())


def test_backbone_and_head_split_the_parameters():
    model = build_model("densenet_bc40")
    names = {n for n, _ in model.named_parameters()}
    assert names == {f"backbone.{n}" for n, _ in model.backbone.named_parameters()} | {
        f"head.{n}" for n, _ in model.head.named_parameters()}


def test_bad_depth_and_bad_name():
    from clusterloss.models.densenet import DenseNetBackbone
    with pytest.raises(ValueError, match="6n\\+4"):
        DenseNetBackbone(41, 12, True, 0.5)
    with pytest.raises(ValueError, match="densenet40"):
        build_model("densnet40")
    with pytest.raises(ValueError, match="bad options"):
        build_model("densenet40", widht=3)

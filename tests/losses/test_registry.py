"""The loss registry: every loss builds, runs forward/backward through the uniform signature."""

import pytest
import torch
import torch.nn.functional as F

from clusterloss.losses import LOSSES, build_loss


def _batch(classes=4, per_class=4, dim=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    embeddings = F.normalize(torch.randn(classes * per_class, dim, generator=g), dim=1).requires_grad_()
    return embeddings, torch.arange(classes).repeat_interleave(per_class)


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_every_loss_builds_runs_and_backpropagates(name):
    if name == "facility_location":
        pytest.importorskip("clusterloss.losses.facility_location")
    loss_fn = build_loss(name, embedding_dim=8, num_classes=4)
    embeddings, labels = _batch()
    value = loss_fn(embeddings, labels)
    assert value.dim() == 0 and torch.isfinite(value)
    value.backward()
    assert embeddings.grad is not None and torch.isfinite(embeddings.grad).all()
    value_2d = loss_fn(embeddings.detach(), labels[:, None])  # labels [B, 1] are accepted too
    torch.testing.assert_close(value_2d, value.detach())


def test_proxy_anchor_exposes_trainable_proxies_in_its_state_dict():
    loss_fn = build_loss("proxy_anchor", embedding_dim=8, num_classes=5)
    params = list(loss_fn.parameters())
    assert [p.shape for p in params] == [torch.Size([5, 8])] and params[0].requires_grad
    assert any(k.endswith("proxies") for k in loss_fn.state_dict())
    embeddings, labels = _batch(classes=5)
    loss_fn(embeddings, labels).backward()
    assert params[0].grad is not None and params[0].grad.abs().sum() > 0
    for name in ("contrastive", "triplet_semihard", "multi_similarity", "npairs", "lifted_structure"):
        assert not list(build_loss(name, 8, 4).parameters())


@pytest.mark.parametrize("name", ["normalized_softmax", "arcface"])
def test_classification_baselines_train_one_weight_vector_per_class(name):
    loss_fn = build_loss(name, embedding_dim=8, num_classes=5)
    params = list(loss_fn.parameters())
    assert [tuple(p.shape) for p in params] == [(8, 5)] and params[0].requires_grad
    embeddings, labels = _batch(classes=5)
    loss_fn(embeddings, labels).backward()
    assert params[0].grad is not None and params[0].grad.abs().sum() > 0
    with pytest.raises(ValueError, match="num_classes"):
        build_loss(name, 8)


def test_normalized_softmax_is_cross_entropy_of_scaled_cosines():
    # Independent reference: softmax cross-entropy over cos(embedding, class weight) / temperature.
    loss_fn = build_loss("normalized_softmax", embedding_dim=8, num_classes=4, temperature=0.1)
    embeddings, labels = _batch()
    weights = loss_fn.loss.W.detach()
    logits = F.normalize(embeddings.detach(), dim=1) @ F.normalize(weights, dim=0) / 0.1
    torch.testing.assert_close(loss_fn(embeddings.detach(), labels), F.cross_entropy(logits, labels))


def test_bad_names_and_options_are_value_errors():
    with pytest.raises(ValueError, match="Did you mean 'contrastive'"):
        build_loss("contrastiv", 8, 4)
    with pytest.raises(ValueError, match="num_classes"):
        build_loss("proxy_anchor", 8)
    with pytest.raises(ValueError, match="bad options"):
        build_loss("multi_similarity", 8, 4, alhpa=3)
    with pytest.raises(ValueError, match="labels"):
        build_loss("contrastive", 8, 4)(torch.randn(4, 8), torch.arange(3))

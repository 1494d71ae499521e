"""The O(B^2) lifted structured loss against pytorch-metric-learning's LiftedStructureLoss (value and
gradient) and against a brute-force loop over positive pairs of the 2016 paper's formula."""

import itertools
import math

import pytest
import torch
import torch.nn.functional as F
from pytorch_metric_learning import losses as pml_losses

from clusterloss.losses import build_loss
from clusterloss.losses.lifted_structure import lifted_structure_loss


def brute_force(x, y, neg_margin=1.0, pos_margin=0.0):
    """For each ordered positive pair: log of the sum of exp(m_- - D) over both anchors' negatives, + D_ij -
    m_+, hinged and squared over 2; the mean over pairs. Plain Python loops, float64."""
    x = F.normalize(x.double(), dim=1)
    n = len(y)
    losses = []
    for i, j in itertools.permutations(range(n), 2):
        if y[i] != y[j]:
            continue
        terms = [neg_margin - torch.dist(x[a], x[k]).item() for a in (i, j) for k in range(n) if y[k] != y[a]]
        if not terms:
            continue
        top = max(terms)
        j_ij = top + math.log(sum(math.exp(t - top) for t in terms)) + torch.dist(x[i], x[j]).item()
        losses.append(max(0.0, j_ij - pos_margin) ** 2 / 2)
    return sum(losses) / len(losses) if losses else 0.0


def _batch(labels, dim=6, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(len(labels), dim, generator=g, dtype=dtype), torch.as_tensor(labels)


BATCHES = {
    "4x4": [c for c in range(4) for _ in range(4)],
    "uneven_with_singletons": [0, 0, 0, 1, 1, 2, 3, 3, 3, 3, 4],
    "two_classes": [0, 1, 0, 1, 1, 0],
    "32x4": [c for c in range(32) for _ in range(4)],
}


@pytest.mark.parametrize("name", sorted(BATCHES))
@pytest.mark.parametrize("margins", [(1.0, 0.0), (0.5, 0.1)])
def test_equals_pml_value_and_gradient(name, margins):
    neg, pos = margins
    x, y = _batch(BATCHES[name])
    ours_x, pml_x = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    ours = lifted_structure_loss(ours_x, y, neg, pos)
    theirs = pml_losses.LiftedStructureLoss(neg_margin=neg, pos_margin=pos)(pml_x, y)
    torch.testing.assert_close(ours, theirs, rtol=1e-10, atol=1e-12)
    ours.backward()
    theirs.backward()
    torch.testing.assert_close(ours_x.grad, pml_x.grad, rtol=1e-8, atol=1e-12)


@pytest.mark.parametrize("name", ["4x4", "uneven_with_singletons", "two_classes"])
def test_equals_the_brute_force_formula(name):
    x, y = _batch(BATCHES[name], seed=3)
    assert lifted_structure_loss(x, y, 0.7, 0.05).item() == pytest.approx(brute_force(x, y, 0.7, 0.05),
                                                                            rel=1e-10, abs=1e-12)


def test_degenerate_batches_give_zero_with_a_gradient_path():
    one_class = _batch([2, 2, 2, 2])[0].requires_grad_(True)
    loss = lifted_structure_loss(one_class, torch.tensor([2, 2, 2, 2]))
    assert loss.item() == 0.0
    loss.backward()
    assert torch.equal(one_class.grad, torch.zeros_like(one_class))
    all_singletons, y = _batch([0, 1, 2, 3])
    assert lifted_structure_loss(all_singletons, y).item() == 0.0
    assert pml_losses.LiftedStructureLoss()(all_singletons, y).item() == 0.0


def test_registry_builds_it_and_checks_inputs():
    loss_fn = build_loss("lifted_structure", 6, 4, neg_margin=0.5)
    x, y = _batch(BATCHES["4x4"], dtype=torch.float32)
    torch.testing.assert_close(loss_fn(x, y), pml_losses.LiftedStructureLoss(neg_margin=0.5)(x, y))
    with pytest.raises(ValueError, match="NaN or Inf"):
        loss_fn(torch.full((4, 6), float("nan")), torch.tensor([0, 0, 1, 1]))
    with pytest.raises(ValueError, match="bad options"):
        build_loss("lifted_structure", 6, 4, margin=0.5)

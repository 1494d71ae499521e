"""Baselines equal pytorch-metric-learning used directly and hand-written brute-force oracles."""

import itertools

import pytest
import torch
import torch.nn.functional as F
from pytorch_metric_learning import losses as pml_losses
from pytorch_metric_learning import miners as pml_miners

from clusterloss.losses import build_loss


def _batch(classes=3, per_class=3, dim=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    embeddings = F.normalize(torch.randn(classes * per_class, dim, generator=g, dtype=torch.float64), dim=1)
    return embeddings, torch.arange(classes).repeat_interleave(per_class)


def brute_force_contrastive(x, y, neg_margin=1.0):
    """Mean over positive pairs with non-zero loss of d, plus the same for negatives of relu(m - d)."""
    pos, neg = [], []
    for i, j in itertools.permutations(range(len(y)), 2):
        d = torch.dist(x[i], x[j])
        if y[i] == y[j]:
            pos.append(d)
        else:
            neg.append(torch.relu(neg_margin - d))
    pos = [v for v in pos if v > 0]
    neg = [v for v in neg if v > 0]
    return (sum(pos) / len(pos) if pos else 0.0) + (sum(neg) / len(neg) if neg else 0.0)


def brute_force_semihard_triplet(x, y, margin):
    """Semi-hard triplets (d_ap < d_an < d_ap + margin); mean of the non-zero hinge losses."""
    losses = []
    for a, p, n in itertools.permutations(range(len(y)), 3):
        if y[a] != y[p] or y[a] == y[n]:
            continue
        d_ap, d_an = torch.dist(x[a], x[p]), torch.dist(x[a], x[n])
        if d_ap < d_an < d_ap + margin:
            losses.append(torch.relu(d_ap - d_an + margin))
    losses = [v for v in losses if v > 0]
    return sum(losses) / len(losses) if losses else torch.tensor(0.0)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_contrastive_matches_brute_force(seed):
    x, y = _batch(seed=seed)
    got = build_loss("contrastive", 5, 3)(x.float(), y)
    expected = torch.as_tensor(brute_force_contrastive(x, y)).float()
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_triplet_semihard_matches_brute_force(seed):
    x, y = _batch(classes=3, per_class=4, seed=seed)
    margin = 0.5  # large enough that several triplets are semi-hard
    got = build_loss("triplet_semihard", 5, 3, margin=margin)(x.float(), y)
    torch.testing.assert_close(got, torch.as_tensor(brute_force_semihard_triplet(x, y, margin)).float(),
                               rtol=1e-5, atol=1e-6)


def test_every_baseline_equals_pml_called_directly():
    x, y = _batch(classes=4, per_class=4, dim=8)
    x = x.float()
    direct = {
        "triplet_semihard": pml_losses.TripletMarginLoss(margin=0.2)(
            x, y, pml_miners.TripletMarginMiner(margin=0.2, type_of_triplets="semihard")(x, y)),
        "lifted_structure": pml_losses.LiftedStructureLoss(neg_margin=1.0, pos_margin=0.0)(x, y),
        "npairs": pml_losses.NPairsLoss()(x, y),
        "contrastive": pml_losses.ContrastiveLoss(pos_margin=0.0, neg_margin=1.0)(x, y),
        "multi_similarity": pml_losses.MultiSimilarityLoss(alpha=2, beta=50, base=0.5)(
            x, y, pml_miners.MultiSimilarityMiner(epsilon=0.1)(x, y)),
    }
    for name, expected in direct.items():
        torch.testing.assert_close(build_loss(name, 8, 4)(x, y), expected, msg=name)
    torch.manual_seed(3)
    ours = build_loss("proxy_anchor", 8, 4)
    torch.manual_seed(3)
    theirs = pml_losses.ProxyAnchorLoss(num_classes=4, embedding_size=8, margin=0.1, alpha=32)
    torch.testing.assert_close(ours(x, y), theirs(x, y))


def test_perfectly_separated_batch_has_zero_contrastive_and_triplet_loss():
    # Two classes at opposite poles: positives coincide, negatives are 2 apart (> every margin).
    x = torch.tensor([[1.0, 0.0]] * 3 + [[-1.0, 0.0]] * 3)
    y = torch.tensor([0, 0, 0, 1, 1, 1])
    assert build_loss("contrastive", 2, 2)(x, y) == 0
    assert build_loss("triplet_semihard", 2, 2)(x, y) == 0

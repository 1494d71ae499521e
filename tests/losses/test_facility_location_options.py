"""loss.options.energy_scale of the facility-location loss (issue 13) and the margin statistics it exposes."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from facility_oracle import facility_location_loss as oracle

from clusterloss.losses import build_loss, facility_location_loss


def _batch(classes=4, per_class=3, dim=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = F.normalize(torch.randn(classes * per_class, dim, generator=g, dtype=torch.float64), dim=1)
    return x, torch.arange(classes).repeat_interleave(per_class)


def test_sum_is_the_paper_loss_and_reports_its_margin():
    x, y = _batch()
    loss_fn = build_loss("facility_location", margin_multiplier=2.0)
    value = loss_fn(x, y)
    reference = oracle(x.numpy(), y.numpy(), gamma=2.0)
    assert float(value) == pytest.approx(reference["loss"], abs=1e-9)
    stats = loss_fn.last_stats
    assert stats["margin"] == pytest.approx(2.0 * (1 - reference["clustering_score"]), abs=1e-6)
    assert stats["energy_gap"] == pytest.approx(reference["score_pred"] - reference["score_gt"], abs=1e-9)
    torch.testing.assert_close(value, facility_location_loss(x, y, margin_multiplier=2.0))


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("gamma", [0.01, 0.1, 1.0])
def test_mean_energies_equal_the_oracle_at_gamma_times_b_divided_by_b(seed, gamma):
    x, y = _batch(seed=seed)
    b = x.shape[0]
    loss_fn = build_loss("facility_location", margin_multiplier=gamma, energy_scale="mean")
    value = loss_fn(x, y)
    reference = oracle(x.numpy(), y.numpy(), gamma=gamma * b)  # independent brute force at gamma * B
    assert float(value) == pytest.approx(reference["loss"] / b, abs=1e-9)
    stats = loss_fn.last_stats
    assert stats["margin"] == pytest.approx(gamma * (1 - reference["clustering_score"]), abs=1e-6)
    gap = (reference["score_pred"] - reference["score_gt"]) / b
    assert stats["energy_gap"] == pytest.approx(gap, abs=1e-9)


def test_mean_energies_hand_worked():
    # Two well-separated pairs on a line: the true clustering costs 1 + 1, the energies per point 2/4 = 0.5.
    # Any margin up to far beyond 1 leaves the search on the true medoids (score 1, margin 0): loss 0 for
    # "mean" at gamma = 1, while "sum" at gamma = 1 is 0 too; the energies then differ by B.
    x = torch.tensor([[0.0], [1.0], [10.0], [11.0]], dtype=torch.float64, requires_grad=True)
    y = torch.tensor([0, 0, 1, 1])
    mean = build_loss("facility_location", margin_multiplier=1.0, energy_scale="mean")
    assert mean(x, y).item() == 0.0
    assert mean.last_stats == {"margin": 0.0, "energy_gap": 0.0}
    # One class split wrongly by the labels: y = [0, 1, 0, 1] puts 0 and 10 together. F~ = -(10 + 10) = -20;
    # the medoids of the nearest-point clustering give F(S*) = -2 and score 0 (NMI of [0,0,1,1] vs
    # [0,1,0,1] is 0), so the hinge's argument is (-2 + 20) / 4 + gamma * 1 = 4.5 + gamma.
    y = torch.tensor([0, 1, 0, 1])
    value = mean(x, y)
    assert value.item() == pytest.approx(4.5 + 1.0)
    assert mean.last_stats == pytest.approx({"margin": 1.0, "energy_gap": 4.5})
    total = build_loss("facility_location", margin_multiplier=1.0)(x, y)
    assert total.item() == pytest.approx(18.0 + 1.0)  # the paper's sum: B times the energies, same margin
    value.backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()


def test_bad_energy_scale_is_a_value_error():
    with pytest.raises(ValueError, match="energy_scale"):
        build_loss("facility_location", energy_scale="per_point")
    assert np.isfinite(float(build_loss("facility_location", energy_scale="sum")(*_batch())))

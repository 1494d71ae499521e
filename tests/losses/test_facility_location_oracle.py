"""The loss (its one search) against the brute-force NumPy + scikit-learn oracle on many random batches."""

import numpy as np
import pytest
import torch
from oracle_cache import cached_oracle

from clusterloss.losses.facility_location import facility_location_details

KINDS = ("nmi", "ami", "ari", "vmeasure", "const")


def _random_case(rng: np.random.Generator, trial: int, max_b: int):
    b = int(rng.integers(1, max_b + 1))
    d = int(rng.integers(1, 6))
    style = trial % 4
    if style == 0:  # few classes
        labels = rng.integers(0, max(1, b // 3), b)
    elif style == 1:  # many classes, some singletons
        labels = rng.integers(0, b, b)
    elif style == 2:  # balanced P x K batch, as in training
        per = int(rng.integers(1, 4))
        labels = np.repeat(np.arange((b + per - 1) // per), per)[:b]
    else:
        labels = rng.integers(0, int(rng.integers(1, b + 1)), b)
    labels = labels * 3 - 5  # negative, non-contiguous ids
    if trial % 3 == 0:
        # Dyadic coordinates make the expanded-form distances exact, so duplicates are exact ties
        # (zero distances) in both implementations.
        x = rng.integers(-4, 5, size=(b, d)) / 4.0
        if b > 2:
            x[rng.integers(0, b, b // 3)] = x[0]
    else:
        x = rng.normal(size=(b, d))
    kind = KINDS[trial % len(KINDS)]
    gamma = float(rng.choice([0.0, 0.1, 0.5, 1.0, 3.0]))
    pam = int(rng.choice([0, 1, 2, 5]))
    return x, labels, kind, gamma, pam


def _check_case(x, labels, kind, gamma, pam):
    expected = cached_oracle(x, labels, gamma, kind, pam)
    xt = torch.tensor(x, dtype=torch.float64, requires_grad=True)
    details = facility_location_details(
        xt, torch.tensor(labels), margin_multiplier=gamma, margin_type=kind, pam_iterations=pam
    )
    loss = details.loss
    loss.backward()
    where = f"kind={kind} gamma={gamma} pam={pam} labels={labels.tolist()} x={x.tolist()}"
    assert details.greedy_medoids.tolist() == expected["greedy_medoids"], where
    assert details.medoids.tolist() == expected["medoids"], where
    assert details.assignment.tolist() == expected["assignment"].tolist(), where
    assert loss.item() == pytest.approx(expected["loss"], abs=1e-5), where
    assert details.clustering_score == pytest.approx(expected["clustering_score"], abs=1e-6), where
    assert details.score_pred.item() == pytest.approx(expected["score_pred"], abs=1e-6), where
    assert details.score_gt.item() == pytest.approx(expected["score_gt"], abs=1e-6), where
    if abs(expected["loss"]) > 1e-9:  # at loss == 0 round-off decides whether the hinge passes
        np.testing.assert_allclose(xt.grad.numpy(), expected["grad"], atol=1e-5, err_msg=where)


@pytest.mark.parametrize("seed", range(4))
def test_matches_oracle_on_small_random_batches(seed):
    rng = np.random.default_rng(seed)
    for trial in range(25):
        _check_case(*_random_case(rng, trial, max_b=10))


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(100, 105))
def test_matches_oracle_on_random_sweep(seed):
    rng = np.random.default_rng(seed)
    for trial in range(40):
        _check_case(*_random_case(rng, trial, max_b=20))


@pytest.mark.slow
def test_matches_oracle_on_a_training_sized_batch():
    rng = np.random.default_rng(7)
    x = rng.normal(size=(48, 8))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    labels = np.repeat(np.arange(12), 4)
    for kind in ("nmi", "ami"):
        _check_case(x, labels, kind, 1.0, 2)


def test_float32_input_matches_oracle_on_well_separated_batches():
    rng = np.random.default_rng(11)
    for trial in range(10):
        x, labels, kind, gamma, pam = _random_case(rng, 3 * trial + 1, max_b=10)
        expected = cached_oracle(x.astype(np.float32), labels, gamma, kind, pam)
        details = facility_location_details(
            torch.tensor(x, dtype=torch.float32),
            torch.tensor(labels),
            margin_multiplier=gamma,
            margin_type=kind,
            pam_iterations=pam,
        )
        assert details.loss.dtype == torch.float32
        assert details.medoids.tolist() == expected["medoids"]
        assert details.loss.item() == pytest.approx(expected["loss"], abs=1e-4)


@pytest.mark.parametrize("seed", range(200, 202))
def test_matches_oracle_on_medium_random_batches(seed):
    rng = np.random.default_rng(seed)
    for trial in range(20):
        _check_case(*_random_case(rng, trial, max_b=16))

"""The compiled CPU search (numba) against the batched tensor search and the partition scores."""

import numpy as np
import pytest
import torch
from sklearn import metrics as skm

from clusterloss.losses import facility_search_kernel as kernel
from clusterloss.losses.facility_search import facility_location_search, pairwise_distances
from clusterloss.metrics.partition_scores import contingency_statistics, scores_from_statistics

KINDS = ("nmi", "ami", "ari", "vmeasure", "const")


def _both(dist, y, k, kind, gamma, pam, round32):
    with torch.inference_mode():
        tensor = facility_location_search(dist, y, k, kind, gamma, pam, round32, search="tensor")
        compiled = facility_location_search(dist, y, k, kind, gamma, pam, round32, search="compiled")
    return tensor, compiled


def test_compiled_and_tensor_searches_choose_the_same_medoids_on_random_batches():
    rng = np.random.default_rng(0)
    for trial in range(250):
        b = int(rng.integers(1, 40))
        raw = rng.integers(0, int(rng.integers(1, b + 1)), b)
        y = torch.unique(torch.tensor(raw), return_inverse=True)[1]
        k = int(y.max()) + 1
        d = int(rng.integers(1, 6))
        if trial % 3 == 0:  # dyadic grid with duplicates: exact ties and zero distances
            x = torch.tensor(rng.integers(-4, 5, size=(b, d)) / 4.0)
            if b > 2:
                x[torch.tensor(rng.integers(0, b, b // 3))] = x[0].clone()
        else:
            x = torch.tensor(rng.normal(size=(b, d)))
        kind = KINDS[trial % len(KINDS)]
        gamma = float(rng.choice([0.0, 0.1, 0.5, 1.0, 3.0]))
        pam = int(rng.choice([0, 1, 2, 5]))
        tensor, compiled = _both(pairwise_distances(x), y, k, kind, gamma, pam, trial % 2 == 0)
        where = f"trial {trial}: b={b} k={k} kind={kind} gamma={gamma} pam={pam}"
        assert compiled.greedy_medoids.tolist() == tensor.greedy_medoids.tolist(), where
        assert compiled.medoids.tolist() == tensor.medoids.tolist(), where
        assert compiled.greedy_medoids.dtype == torch.long and compiled.medoids.dtype == torch.long


@pytest.mark.slow
@pytest.mark.parametrize("kind", KINDS)
def test_same_medoids_on_benchmark_batches(kind):
    # The benchmark's batches (normalized Gaussian, K = B/4 classes of 4): the tensor search takes its dense
    # path at B = 128 and the sparse update at B = 384, so the kernel is checked against both.
    for b in (128, 384):
        gen = torch.Generator().manual_seed(b)
        x = torch.nn.functional.normalize(torch.randn(b, 64, generator=gen, dtype=torch.float64), dim=1)
        y = torch.arange(b // 4).repeat_interleave(4)
        tensor, compiled = _both(pairwise_distances(x), y, b // 4, kind, 1.0, 5, True)
        assert torch.equal(compiled.greedy_medoids, tensor.greedy_medoids)
        assert torch.equal(compiled.medoids, tensor.medoids)


def _kernel_args(stats):
    """The statistics of ``contingency_statistics`` in the order of ``kernel._score`` (after the kind)."""
    names = ("sum_f_cells", "sum_f_rows", "sum_f_cols", "sum_sq_cells", "sum_sq_rows", "sum_sq_cols")
    return (stats["n"], stats["n_rows"], stats["n_cols"], *(float(stats[k]) for k in names),
            float(stats["emi"]))


def test_kernel_scores_equal_partition_scores_and_scikit_learn():
    rng = np.random.default_rng(3)
    for trial in range(300):
        n = int(rng.integers(1, 30))
        true = rng.integers(0, int(rng.integers(1, n + 1)), n)
        pred = rng.integers(0, int(rng.integers(1, n + 1)), n) if trial % 4 else true.copy()
        stats = contingency_statistics(torch.tensor(true), torch.tensor(pred))
        for kind in KINDS:
            ours = float(scores_from_statistics(kind, **stats).clamp_min(0.0))
            compiled = kernel._score(kernel.KIND_CODES[kind], *_kernel_args(stats), False)
            assert compiled == pytest.approx(ours, abs=1e-12), (kind, true.tolist(), pred.tolist())
        nmi = kernel._score(kernel.KIND_CODES["nmi"], *_kernel_args(stats), False)
        assert nmi == pytest.approx(skm.normalized_mutual_info_score(true, pred), abs=1e-9)


def test_round32_rounds_the_score_to_float32():
    stats = contingency_statistics(torch.tensor([0, 0, 1, 1, 2]), torch.tensor([0, 1, 1, 1, 2]))
    exact = kernel._score(kernel.KIND_CODES["nmi"], *_kernel_args(stats), False)
    rounded = kernel._score(kernel.KIND_CODES["nmi"], *_kernel_args(stats), True)
    assert rounded == float(np.float32(exact)) and rounded != exact


def test_compiled_search_is_deterministic_and_leaves_its_inputs_alone():
    torch.manual_seed(4)
    x = torch.randn(40, 5, dtype=torch.float64)
    y = torch.arange(40) % 7
    dist = pairwise_distances(x)
    before = dist.clone()
    with torch.inference_mode():
        runs = [facility_location_search(dist, y, 7, "ami", 1.0, 5, False, search="compiled")
                for _ in range(3)]
    assert torch.equal(dist, before)
    assert all(torch.equal(r.medoids, runs[0].medoids) for r in runs)
    assert all(torch.equal(r.greedy_medoids, runs[0].greedy_medoids) for r in runs)

"""k-means clustering scores: assignments, NMI/AMI equal to scikit-learn on the same assignment."""

import numpy as np
import pytest
from sklearn.metrics import adjusted_mutual_info_score, normalized_mutual_info_score

from clusterloss.metrics import clustering
from clusterloss.metrics.clustering import clustering_scores, kmeans

BACKENDS = ["sklearn", "torch"] + (["faiss"] if clustering.faiss is not None else [])


def blobs(n_per=30, classes=6, d=5, spread=1.0, seed=0):
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(classes), n_per)
    centers = rng.normal(size=(classes, d)) * 20
    return (centers[y] + spread * rng.normal(size=(len(y), d))).astype(np.float32), y


# The torch backend (random initial points, no re-seeding) can start two centroids in one blob, a local
# optimum Lloyd cannot leave; it is held to an exact Lloyd oracle below instead.
@pytest.mark.parametrize("backend", [b for b in BACKENDS if b != "torch"])
def test_kmeans_recovers_well_separated_blobs_and_is_deterministic(backend):
    x, y = blobs()
    a = kmeans(x, 6, seed=3, backend=backend)
    assert a.shape == (len(y),) and a.dtype == np.int64 and a.min() >= 0 and a.max() < 6
    assert normalized_mutual_info_score(y, a) == pytest.approx(1.0)
    assert np.array_equal(a, kmeans(x, 6, seed=3, backend=backend))


@pytest.mark.parametrize("backend", BACKENDS)
def test_scores_equal_sklearn_on_the_same_assignments(backend):
    x, y = blobs(spread=12.0, seed=1)  # overlapping blobs: imperfect, seed-dependent clusterings
    seeds = (0, 1, 2, 3)
    got = clustering_scores(x, y, seeds=seeds, backend=backend)
    assignments = [kmeans(x, 6, seed=s, backend=backend) for s in seeds]
    nmis = [normalized_mutual_info_score(y, a) for a in assignments]
    amis = [adjusted_mutual_info_score(y, a) for a in assignments]
    assert got["nmi"] == pytest.approx(np.mean(nmis), abs=1e-6)
    assert got["nmi_std"] == pytest.approx(np.std(nmis), abs=1e-6)
    assert got["ami"] == pytest.approx(np.mean(amis), abs=1e-6)
    assert got["ami_std"] == pytest.approx(np.std(amis), abs=1e-6)
    assert 0.0 < got["nmi"] < 1.0


def test_single_class_and_explicit_cluster_count():
    x, y = blobs(classes=2)
    one = clustering_scores(x, np.zeros(len(y), dtype=int), seeds=(0,))
    assert one["nmi"] == pytest.approx(normalized_mutual_info_score(np.zeros(len(y)), np.zeros(len(y))))
    assert kmeans(x, 1).max() == 0
    got = clustering_scores(x, y, seeds=(0,), num_clusters=4)
    want = normalized_mutual_info_score(y, kmeans(x, 4, seed=0))
    assert got["nmi"] == pytest.approx(want, abs=1e-6)


def test_bad_input_raises_value_error():
    x, y = blobs()
    with pytest.raises(ValueError, match="num_clusters"):
        kmeans(x, len(x) + 1)
    with pytest.raises(ValueError, match="seeds"):
        clustering_scores(x, y, seeds=())
    with pytest.raises(ValueError, match="one entry per embedding"):
        clustering_scores(x, y[:-1])
    with pytest.raises(ValueError, match="backend"):
        kmeans(x, 3, backend="magic")
    with pytest.raises(ValueError, match="NaN"):
        kmeans(np.full((4, 2), np.inf, dtype=np.float32), 2)


def test_torch_lloyd_equals_a_numpy_lloyd_from_the_same_start():
    # The GPU path (backend="torch", run here on CPU) against a plain NumPy Lloyd loop started from the same
    # points (torch.randperm with the same seed), float64, an empty cluster keeping its centroid.
    import torch

    x, _ = blobs(n_per=20, classes=5, spread=8.0, seed=2)
    k, seed, iterations = 7, 3, 6
    start = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))[:k].numpy()
    c = x[start].astype(np.float64)
    for _ in range(iterations + 1):
        a = ((x[:, None, :] - c[None]) ** 2).sum(axis=2).argmin(axis=1)
        for j in range(k):
            if (a == j).any():
                c[j] = x[a == j].mean(axis=0)
    got = kmeans(torch.from_numpy(x), k, seed=seed, backend="torch", iterations=iterations)
    np.testing.assert_array_equal(got, a)
    np.testing.assert_array_equal(kmeans(x, k, seed=seed, backend="torch", iterations=iterations), got)


def test_iterations_reach_the_k_means_call():
    x, y = blobs(spread=12.0, seed=4)
    one = clustering_scores(x, y, seeds=(0,), iterations=1)
    assert one["nmi"] == pytest.approx(normalized_mutual_info_score(y, kmeans(x, 6, seed=0, iterations=1)))
    with pytest.raises(ValueError, match="iterations"):
        kmeans(x, 3, iterations=0)

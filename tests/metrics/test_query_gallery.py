"""Query / gallery evaluation (In-Shop): a brute-force oracle, pytorch-metric-learning, hand-worked cases."""

import numpy as np
import pytest
import torch
from pytorch_metric_learning.utils.accuracy_calculator import AccuracyCalculator
from retrieval_oracle import add_query, empty_sums
from sklearn.metrics import adjusted_mutual_info_score, normalized_mutual_info_score

from clusterloss.metrics import clustering_scores, evaluate_embeddings, kmeans, retrieval
from clusterloss.metrics.retrieval import iter_knn, nearest_neighbors, retrieval_metrics

BACKENDS = ["torch", "blocked"] + (["faiss"] if retrieval.faiss is not None else [])


def brute_force(xq, yq, xg, yg, ks):
    """Independent oracle: float64 distances of each query to every gallery row, ordered by (distance,
    index), R = gallery rows of the query's label, queries with R = 0 left out."""
    xq, xg = np.asarray(xq, np.float64), np.asarray(xg, np.float64)
    sums = empty_sums(ks)
    scored = 0
    for q in range(len(xq)):
        r = int((yg == yq[q]).sum())
        if r == 0:
            continue
        scored += 1
        d = ((xg - xq[q]) ** 2).sum(axis=1)
        order = np.lexsort((np.arange(len(xg)), d))
        rel = [bool(yg[j] == yq[q]) for j in order]
        add_query(sums, rel, ks, r)
    return {key: value / scored for key, value in sums.items()}, scored


def make_split(nq=120, ng=200, d=8, classes=15, lone=5, seed=0):
    """Queries and gallery of the same classes; the first ``lone`` queries have labels absent from the
    gallery (no positive: excluded)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(classes + lone, d)) * 0.8
    yq = rng.integers(0, classes, nq)
    yq[:lone] = classes + np.arange(lone)
    yg = rng.integers(0, classes, ng)
    xq = (centres[yq] + rng.normal(size=(nq, d))).astype(np.float32)
    xg = (centres[yg] + rng.normal(size=(ng, d))).astype(np.float32)
    return xq, yq, xg, yg


@pytest.mark.parametrize("backend", BACKENDS)
def test_matches_brute_force_with_lone_queries_and_large_k(backend):
    xq, yq, xg, yg = make_split()
    ks = (1, 10, 20, 30, 40, 50, 1000)  # In-Shop's K, plus one above the gallery size (clamped)
    got = retrieval_metrics(xq, yq, ks, gallery=xg, gallery_labels=yg, backend=backend)
    want, scored = brute_force(xq, yq, xg, yg, ks)
    for key, value in want.items():
        assert got[key] == pytest.approx(value, abs=1e-12), key
    assert (got["queries"], got["excluded_queries"]) == (scored, 5)


@pytest.mark.parametrize("backend", BACKENDS)
def test_matches_pytorch_metric_learning_with_a_separate_reference(backend):
    xq, yq, xg, yg = make_split(nq=150, ng=260, classes=12, seed=1)
    calc = AccuracyCalculator(include=("precision_at_1", "r_precision", "mean_average_precision_at_r"),
                              k="max_bin_count", device=torch.device("cpu"))
    pml = calc.get_accuracy(xq, yq, xg, yg, ref_includes_query=False)
    got = retrieval_metrics(xq, yq, (1,), gallery=xg, gallery_labels=yg, backend=backend)
    assert got["precision@1"] == pytest.approx(pml["precision_at_1"], abs=1e-12)
    assert got["r_precision"] == pytest.approx(pml["r_precision"], abs=1e-12)
    assert got["map@r"] == pytest.approx(pml["mean_average_precision_at_r"], abs=1e-12)


def test_hand_worked_case_a_gallery_copy_of_the_query_is_its_nearest_neighbour():
    # 1-D. Query 0 (x=0, class A) has an exact copy in the gallery (index 1, class B) and a class-A image at
    # x=1 (index 0): in all-vs-all mode the copy would be itself, here it is a legitimate neighbour.
    xq = np.array([[0.0], [5.0]], np.float32)
    yq = np.array([0, 1])
    xg = np.array([[1.0], [0.0], [5.5], [4.0], [6.0]], np.float32)
    yg = np.array([0, 1, 1, 0, 1])
    for backend in BACKENDS:
        m = retrieval_metrics(xq, yq, (1, 2, 3), gallery=xg, gallery_labels=yg, backend=backend)
        # query 0 (A): distances 1, 0, 30.25, 16, 36 -> order 1(B), 0(A), 3(A), 2, 4; R = 2 (A in gallery):
        #   R-Prec 1/2, AP = (1/2) / 2 = 1/4, R@1 0, R@2 1.
        # query 1 (B): distances 16, 25, 0.25, 1, 1 -> the tie at 1 puts index 3 before 4: order 2(B), 3(A),
        #   4(B), 0, 1; R = 3: R-Prec 2/3, AP = (1 + 2/3) / 3 = 5/9, R@1 1.
        assert m["recall@1"] == pytest.approx(0.5)
        assert m["recall@2"] == pytest.approx(1.0)
        assert m["r_precision"] == pytest.approx((1 / 2 + 2 / 3) / 2)
        assert m["map@r"] == pytest.approx((1 / 4 + 5 / 9) / 2)
        _, idx = nearest_neighbors(xq, 3, gallery=xg, backend=backend)
        assert idx.tolist() == [[1, 0, 3], [2, 3, 4]]


@pytest.mark.parametrize("backend", BACKENDS)
def test_exact_ties_and_duplicates_are_broken_by_gallery_index(backend):
    rng = np.random.default_rng(2)
    xq = rng.integers(0, 3, size=(60, 2)).astype(np.float32)  # a 3x3 grid: many exact ties and copies
    xg = rng.integers(0, 3, size=(140, 2)).astype(np.float32)
    yq, yg = rng.integers(0, 5, 60), rng.integers(0, 5, 140)
    got = retrieval_metrics(xq, yq, (1, 3, 10), gallery=xg, gallery_labels=yg, backend=backend)
    want, _ = brute_force(xq, yq, xg, yg, (1, 3, 10))
    for key, value in want.items():
        assert got[key] == pytest.approx(value, abs=1e-12), key
    _, idx = nearest_neighbors(xq, 30, gallery=xg, backend=backend)
    for q in (0, 31, 59):
        d = ((xg - xq[q]) ** 2).sum(axis=1)
        np.testing.assert_array_equal(idx[q].numpy(), np.lexsort((np.arange(140), d))[:30])


def test_chunking_and_query_subsets_in_gallery_mode():
    xq, yq, xg, yg = make_split(seed=3)
    for backend in BACKENDS:
        full = torch.cat([c[2] for c in iter_knn(xq, 9, gallery=xg, backend=backend)])
        chunked = torch.cat([c[2] for c in iter_knn(xq, 9, gallery=xg, backend=backend, chunk_size=7)])
        assert torch.equal(full, chunked)
    sub = [7, 3, 50, 119]
    got = retrieval_metrics(xq, yq, (1, 4), query_indices=sub, gallery=xg, gallery_labels=yg)
    want, _ = brute_force(xq[sub], yq[sub], xg, yg, (1, 4))
    for key, value in want.items():
        assert got[key] == pytest.approx(value, abs=1e-12)


def test_query_mask_equals_separate_arrays_and_nmi_clusters_the_union():
    xq, yq, xg, yg = make_split(seed=4)
    x, y = np.concatenate([xq, xg]), np.concatenate([yq, yg])
    perm = np.random.default_rng(0).permutation(len(x))  # interleave queries and gallery
    mask = np.zeros(len(x), bool)
    mask[: len(xq)] = True
    x, y, mask = x[perm], y[perm], mask[perm]
    ks = (1, 10, 20)
    separate = evaluate_embeddings(xq, yq, ks, gallery_embeddings=xg, gallery_labels=yg)
    masked = evaluate_embeddings(x, y, ks, query_mask=torch.from_numpy(mask))
    # Retrieval does not depend on how the sets are handed over (gallery order differs: ties aside, equal).
    for key in ("recall@1", "recall@10", "recall@20", "precision@1", "r_precision", "map@r"):
        assert masked[key] == pytest.approx(separate[key], abs=1e-12), key
    want, _ = brute_force(xq, yq, xg, yg, ks)
    assert masked["map@r"] == pytest.approx(want["map@r"], abs=1e-12)
    # NMI / AMI: k-means of the union (K = labels of the union), exactly clustering_scores of the union.
    union = clustering_scores(x, y, seeds=(0, 1, 2))
    assert all(masked[k] == pytest.approx(union[k], abs=1e-12) for k in union)
    assert (masked["num_queries"], masked["num_gallery"], masked["num_samples"]) == (120, 200, 320)
    assert masked["num_classes"] == len(np.unique(y)) and masked["excluded_queries"] == 5
    only_gallery = evaluate_embeddings(x, y, ks, query_mask=mask, clustering_on="gallery")
    assert only_gallery["nmi"] == clustering_scores(x[~mask], y[~mask], seeds=(0, 1, 2))["nmi"]


def test_nmi_on_the_queries_equals_pytorch_metric_learning():
    # AccuracyCalculator clusters the queries with faiss k-means (20 iterations, seed 1234): our seed 0 is
    # the same call, so NMI and AMI agree exactly on the same embeddings.
    if retrieval.faiss is None:
        pytest.skip("faiss not installed: PML's k-means is faiss's")
    xq, yq, xg, yg = make_split(nq=300, ng=300, classes=10, lone=0, seed=5)
    calc = AccuracyCalculator(include=("NMI", "AMI"), device=torch.device("cpu"))
    pml = calc.get_accuracy(xq, yq, xg, yg, ref_includes_query=False)
    ours = evaluate_embeddings(xq, yq, (1,), (0,), gallery_embeddings=xg, gallery_labels=yg,
                               clustering_on="query")
    assignment = kmeans(xq, 10, seed=0)
    assert ours["nmi"] == pytest.approx(normalized_mutual_info_score(yq, assignment), abs=1e-6)
    assert ours["nmi"] == pytest.approx(pml["NMI"], abs=1e-6)
    assert ours["ami"] == pytest.approx(pml["AMI"], abs=1e-6)
    assert ours["ami"] == pytest.approx(adjusted_mutual_info_score(yq, assignment), abs=1e-6)


def test_no_query_label_in_the_gallery_makes_retrieval_undefined_not_nan():
    xq, yq, xg, yg = make_split(nq=10, ng=20, classes=3, lone=0, seed=6)
    m = evaluate_embeddings(xq, yq + 100, (1, 2), gallery_embeddings=xg, gallery_labels=yg)
    assert m["recall@1"] is None and m["map@r"] is None and "gallery" in m["undefined"]["recall@1"]
    assert m["excluded_queries"] == 10 and m["nmi"] is not None


def test_one_query_and_a_one_image_gallery_work():
    m = retrieval_metrics(np.zeros((1, 3), np.float32), [4], (1, 5), gallery=np.ones((1, 3), np.float32),
                          gallery_labels=[4])
    assert (m["recall@1"], m["recall@5"], m["map@r"], m["queries"]) == (1.0, 1.0, 1.0, 1)


def test_bad_query_gallery_input_names_the_problem():
    xq, yq, xg, yg = make_split(nq=10, ng=20, classes=3, lone=0)
    with pytest.raises(ValueError, match="gallery_labels"):
        retrieval_metrics(xq, yq, gallery=xg)
    with pytest.raises(ValueError, match="gallery embeddings"):
        retrieval_metrics(xq, yq, gallery_labels=yg)
    with pytest.raises(ValueError, match="D = 8 but gallery"):
        retrieval_metrics(xq, yq, gallery=xg[:, :4], gallery_labels=yg)
    with pytest.raises(ValueError, match="one entry per embedding"):
        retrieval_metrics(xq, yq, gallery=xg, gallery_labels=yg[:-1])
    with pytest.raises(ValueError, match="gallery size"):
        next(iter_knn(xq, 21, gallery=xg))
    x, y = np.concatenate([xq, xg]), np.concatenate([yq, yg])
    with pytest.raises(ValueError, match="query_mask must be bool"):
        evaluate_embeddings(x, y, query_mask=np.zeros(len(x), int))
    with pytest.raises(ValueError, match="needs one of each"):
        evaluate_embeddings(x, y, query_mask=np.ones(len(x), bool))
    with pytest.raises(ValueError, match="not both"):
        evaluate_embeddings(x, y, query_mask=np.ones(len(x), bool), gallery_embeddings=xg, gallery_labels=yg)
    with pytest.raises(ValueError, match="clustering_on"):
        evaluate_embeddings(xq, yq, gallery_embeddings=xg, gallery_labels=yg, clustering_on="both")
    with pytest.raises(ValueError, match="at least 2 are needed"):
        evaluate_embeddings(xq, np.zeros(10, int), gallery_embeddings=xg, gallery_labels=np.zeros(20, int))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_tensors_are_evaluated_on_the_gpu_with_the_cpu_numbers():
    # kNN (torch backend) and k-means (torch Lloyd) run on the GPU; retrieval must equal the oracle, and
    # the GPU k-means must equal the same torch Lloyd loop run on the CPU (same start points).
    xq, yq, xg, yg = make_split(seed=7)
    cuda = {name: torch.from_numpy(a).cuda() for name, a in {"xq": xq, "xg": xg}.items()}
    got = evaluate_embeddings(cuda["xq"], yq, (1, 10), (0,), gallery_embeddings=cuda["xg"], gallery_labels=yg)
    want, _ = brute_force(xq, yq, xg, yg, (1, 10))
    for key, value in want.items():
        assert got[key] == pytest.approx(value, abs=1e-9), key
    x = np.concatenate([xq, xg])
    on_gpu = kmeans(torch.from_numpy(x).cuda(), 15, seed=0, iterations=5)
    on_cpu = kmeans(torch.from_numpy(x), 15, seed=0, backend="torch", iterations=5)
    assert normalized_mutual_info_score(on_cpu, on_gpu) > 0.99  # float round-off may move a tie

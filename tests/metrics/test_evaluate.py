"""evaluate_embeddings: the flat metric dict of the design contract."""

import numpy as np
import torch

from clusterloss.metrics import clustering_scores, evaluate_embeddings, retrieval_metrics


def data(seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 8, 240)
    y[0] = 99  # one singleton class
    x = rng.normal(size=(240, 6)) + 2.0 * np.eye(6)[y % 6]
    return torch.from_numpy(x.astype(np.float32)), torch.from_numpy(y)


def test_contract_keys_and_consistency_with_the_parts():
    x, y = data()
    m = evaluate_embeddings(x, y)
    for key in ("nmi", "nmi_std", "ami", "ami_std", "recall@1", "recall@2", "recall@4", "recall@8",
                "precision@1", "r_precision", "map@r"):
        assert isinstance(m[key], float) and 0.0 <= m[key] <= 1.0, key
    assert (m["num_samples"], m["num_classes"], m["excluded_queries"]) == (240, 9, 1)
    r = retrieval_metrics(x, y)
    c = clustering_scores(x, y, seeds=(0, 1, 2))
    assert all(m[k] == r[k] for k in ("recall@1", "recall@8", "precision@1", "r_precision", "map@r"))
    assert all(m[k] == c[k] for k in c)
    assert m["recall@1"] <= m["recall@2"] <= m["recall@4"] <= m["recall@8"]


def test_configurable_ks_and_skipping_clustering():
    x, y = data(1)
    m = evaluate_embeddings(x, y, ks=(1, 10, 100), clustering=False)
    assert {"recall@1", "recall@10", "recall@100"} <= set(m) and "recall@2" not in m
    assert "nmi" not in m
    assert evaluate_embeddings(x.numpy(), y.numpy(), ks=(1, 10, 100), clustering=False) == m

import numpy as np
import pytest
import torch

from clusterloss.data import ClassBalancedBatchSampler


def _labels(sizes):
    return np.concatenate([np.full(n, c) for c, n in enumerate(sizes)]).astype(np.int64)


UNEQUAL = [200, 3, 1, 57, 9, 30, 2, 120, 5, 11]  # very unequal, several classes smaller than K


@pytest.mark.parametrize(
    "sizes,p,k", [([20] * 10, 4, 5), (UNEQUAL, 4, 4), (UNEQUAL, 3, 8), ([1, 1, 1], 3, 2)]
)
def test_batches_have_exactly_p_classes_times_k_images(sizes, p, k):
    labels = _labels(sizes)
    sampler = ClassBalancedBatchSampler(torch.from_numpy(labels), p, k, seed=3)
    batches = list(sampler)
    assert len(batches) == len(sampler) > 0
    for batch in batches:
        assert len(batch) == p * k
        batch_labels = labels[batch]
        classes, counts = np.unique(batch_labels, return_counts=True)
        assert len(classes) == p and (counts == k).all()
        # each class occupies K consecutive places
        assert (batch_labels.reshape(p, k) == batch_labels.reshape(p, k)[:, :1]).all()


@pytest.mark.parametrize("sizes,p,k", [([20] * 10, 4, 5), (UNEQUAL, 4, 4), (UNEQUAL, 2, 8), ([7, 300], 2, 3)])
def test_epoch_uses_every_image(sizes, p, k):
    labels = _labels(sizes)
    for seed in range(3):
        sampler = ClassBalancedBatchSampler(labels, p, k, seed=seed)
        used = np.unique(np.concatenate(list(sampler)))
        assert len(used) >= 0.9 * len(labels)
        assert len(used) == len(labels)  # the construction in fact uses all of them


def test_length_is_the_minimum_needed():
    labels = _labels(UNEQUAL)
    p, k = 4, 4
    chunks = [-(-n // k) for n in UNEQUAL]
    sampler = ClassBalancedBatchSampler(labels, p, k)
    assert len(sampler) == max(-(-sum(chunks) // p), max(chunks))
    # balanced classes: every image exactly once, no repeats
    equal = ClassBalancedBatchSampler(_labels([12] * 6), 3, 4)
    flat = np.concatenate(list(equal))
    assert len(equal) == 6 and sorted(flat.tolist()) == list(range(72))


def test_reproducible_from_seed_and_epoch():
    labels = _labels(UNEQUAL)
    a = ClassBalancedBatchSampler(labels, 4, 4, seed=7)
    b = ClassBalancedBatchSampler(labels, 4, 4, seed=7)
    a.set_epoch(2)
    b.set_epoch(2)
    assert list(a) == list(b)
    b.set_epoch(3)
    assert list(a) != list(b)
    c = ClassBalancedBatchSampler(labels, 4, 4, seed=8)
    c.set_epoch(2)
    assert list(a) != list(c)
    assert list(a) == list(a)  # iterating twice replays the same epoch


def test_resume_mid_epoch_continues_the_same_schedule():
    labels = _labels(UNEQUAL)
    full = ClassBalancedBatchSampler(labels, 4, 4, seed=1)
    full.set_epoch(5)
    expected = list(full)
    run = ClassBalancedBatchSampler(labels, 4, 4, seed=1)
    run.set_epoch(5)
    iterator = iter(run)
    first = [next(iterator) for _ in range(7)]
    state = run.state_dict()
    resumed = ClassBalancedBatchSampler(labels, 4, 4, seed=999)
    resumed.load_state_dict(state)
    resumed.set_epoch(5)  # the trainer re-selects the epoch in progress: must not restart it
    assert first + list(resumed) == expected
    assert resumed.state_dict()["position"] == 0  # a finished epoch starts from the beginning again
    with pytest.raises(ValueError, match="different dataset"):
        ClassBalancedBatchSampler(labels, 2, 4).load_state_dict(state)


@pytest.mark.parametrize("world_size", [2, 3])
def test_ranks_draw_disjoint_batches_of_one_global_schedule(world_size):
    labels = _labels(UNEQUAL)
    samplers = [
        ClassBalancedBatchSampler(labels, 4, 4, seed=2, rank=r, world_size=world_size)
        for r in range(world_size)
    ]
    per_rank = [list(s) for s in samplers]
    assert len({len(b) for b in per_rank}) == 1 and all(len(s) == len(per_rank[0]) for s in samplers)
    schedule = samplers[0].global_schedule(0)
    for rank, batches in enumerate(per_rank):
        assert np.array_equal(np.array(batches), schedule[rank::world_size])
    used = np.unique(np.concatenate([np.concatenate(b) for b in per_rank]))
    assert len(used) == len(labels)


def test_bad_arguments():
    labels = _labels([5, 5])
    with pytest.raises(ValueError, match="only 2 classes"):
        ClassBalancedBatchSampler(labels, 3, 2)
    with pytest.raises(ValueError, match="rank"):
        ClassBalancedBatchSampler(labels, 2, 2, rank=2, world_size=2)
    with pytest.raises(ValueError, match="integers"):
        ClassBalancedBatchSampler(np.array([0.5, 1.0]), 1, 2)
    with pytest.raises(ValueError, match=">= 1"):
        ClassBalancedBatchSampler(labels, 2, 0)


def test_non_contiguous_class_ids_and_column_labels():
    labels = np.array([10, 10, 42, 42, 42, 7])[:, None]
    sampler = ClassBalancedBatchSampler(labels, 3, 2)
    for batch in sampler:
        assert sorted(set(labels[batch, 0].tolist())) == [7, 10, 42]

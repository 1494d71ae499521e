"""The sampler's layout schedule for many classes (SOP: 11k classes of 2-12 images): same guarantees."""

import numpy as np
import pytest

from clusterloss.data import sampler as sampler_module
from clusterloss.data.sampler import ClassBalancedBatchSampler


def _sop_like(num_classes, seed=0):
    rng = np.random.default_rng(seed)
    return np.repeat(np.arange(num_classes), rng.integers(2, 13, num_classes))


def _check_epoch(sampler, labels, p, k):
    schedule = sampler.global_schedule()
    assert schedule.shape == (sampler.global_batches, p * k)
    for batch in schedule:
        classes, counts = np.unique(labels[batch], return_counts=True)
        assert len(classes) == p and (counts == k).all()
        assert (labels[batch].reshape(p, k) == labels[batch].reshape(p, k)[:, :1]).all()
    assert len(np.unique(schedule)) == len(labels)  # every image at least once
    # every class's own chunks (ceil(n_c / K)) are all in the epoch, in distinct batches
    per_batch_classes = [set(labels[b].tolist()) for b in schedule]
    appearances = np.bincount([c for s in per_batch_classes for c in s], minlength=labels.max() + 1)
    needed = -(-np.bincount(labels) // k)
    assert (appearances >= needed).all()
    return schedule


@pytest.mark.parametrize("k", [2, 3, 4])
def test_layout_schedule_at_sop_scale_keeps_the_guarantees(k):
    labels = _sop_like(5000)
    sampler = ClassBalancedBatchSampler(labels, 32, k, seed=1)
    assert len(np.unique(labels)) > sampler_module.LAYOUT_MIN_CLASSES
    schedule = _check_epoch(sampler, labels, 32, k)
    assert sampler.global_batches == -(-int((-(-np.bincount(labels) // k)).sum()) // 32)
    assert np.array_equal(schedule, sampler.global_schedule())  # a function of (seed, epoch)
    assert not np.array_equal(schedule, sampler.global_schedule(1))


def test_layout_path_on_small_unequal_classes_and_ranks(monkeypatch):
    monkeypatch.setattr(sampler_module, "LAYOUT_MIN_CLASSES", 3)  # force the layout on a small case
    labels = np.repeat(np.arange(10), [200, 3, 1, 57, 9, 30, 2, 120, 5, 11])
    for seed in range(3):
        _check_epoch(ClassBalancedBatchSampler(labels, 4, 4, seed=seed), labels, 4, 4)
    whole = ClassBalancedBatchSampler(labels, 4, 4, seed=0, world_size=2).global_schedule()
    rank0 = np.array(list(ClassBalancedBatchSampler(labels, 4, 4, seed=0, rank=0, world_size=2)))
    rank1 = np.array(list(ClassBalancedBatchSampler(labels, 4, 4, seed=0, rank=1, world_size=2)))
    assert np.array_equal(rank0, whole[0::2]) and np.array_equal(rank1, whole[1::2])

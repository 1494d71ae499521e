import math

import numpy as np
import pytest
import torch

from clusterloss.metrics.fewshot import (
    episode_accuracy,
    episode_metrics,
    fewshot_metric_names,
    oneshot_accuracy,
    sample_episodes,
)


def _brute_oneshot(train, test, answers):
    """One item at a time: the nearest training image by Euclidean distance, the first one on ties."""
    runs, ways, _ = train.shape
    correct = np.zeros((runs, ways))
    for r in range(runs):
        for j in range(ways):
            best, best_d = None, math.inf
            for c in range(ways):
                pairs = zip(test[r, j], train[r, c], strict=True)
                d = math.sqrt(sum((float(a) - float(b)) ** 2 for a, b in pairs))
                if d < best_d:
                    best, best_d = c, d
            correct[r, j] = best == answers[r, j]
    return correct


def test_oneshot_matches_brute_force():
    g = torch.Generator().manual_seed(0)
    train = torch.randn(4, 6, 5, generator=g)
    test = train[:, torch.randperm(6, generator=g)] + 0.8 * torch.randn(4, 6, 5, generator=g)
    answers = torch.stack([torch.randperm(6, generator=g) for _ in range(4)])
    result = oneshot_accuracy(train, test, answers)
    correct = _brute_oneshot(train.numpy(), test.numpy(), answers.numpy())
    assert result["oneshot"] == pytest.approx(correct.mean())
    assert result["per_run"] == pytest.approx(correct.mean(axis=1).tolist())


def test_oneshot_hand_made_run():
    # Training images at 0, 10, 20 on a line; test items at 9 (-> class 1), 1 (-> 0), 16 (-> 2).
    train = torch.tensor([[[0.0], [10.0], [20.0]]])
    test = torch.tensor([[[9.0], [1.0], [16.0]]])
    result = oneshot_accuracy(train, test, torch.tensor([[1, 0, 0]]))  # the last answer is wrong on purpose
    assert result["predictions"].tolist() == [[1, 0, 2]]
    assert result["oneshot"] == pytest.approx(2 / 3)
    # A tie (5 is as far from 0 as from 10) goes to the first training image.
    tie = oneshot_accuracy(train, torch.tensor([[[5.0], [15.0], [25.0]]]), torch.tensor([[0, 1, 2]]))
    assert tie["predictions"].tolist() == [[0, 1, 2]] and tie["oneshot"] == 1.0


def test_oneshot_rejects_bad_shapes():
    with pytest.raises(ValueError, match="runs, ways, dim"):
        oneshot_accuracy(torch.zeros(2, 3), torch.zeros(2, 3), torch.zeros(2, dtype=torch.int64))
    with pytest.raises(ValueError, match="answers"):
        oneshot_accuracy(torch.zeros(2, 3, 4), torch.zeros(2, 3, 4), torch.zeros(2, 2, dtype=torch.int64))


def test_sampled_episodes_are_valid_and_seeded():
    order = torch.randperm(84, generator=torch.Generator().manual_seed(1))
    labels = torch.arange(12).repeat_interleave(7)[order]
    support, query = sample_episodes(labels, ways=5, shots=2, queries=3, episodes=50, seed=3)
    assert support.shape == (50, 5, 2) and query.shape == (50, 5, 3)
    for e in range(50):
        both = torch.cat([support[e], query[e]], dim=1)  # [ways, shots + queries]
        assert len(set(both.flatten().tolist())) == 25  # no image twice
        classes = labels[both]
        assert (classes == classes[:, :1]).all()  # one class per row
        assert len(set(classes[:, 0].tolist())) == 5  # distinct classes
    again = sample_episodes(labels, ways=5, shots=2, queries=3, episodes=50, seed=3)
    assert torch.equal(again[0], support) and torch.equal(again[1], query)
    other = sample_episodes(labels, ways=5, shots=2, queries=3, episodes=50, seed=4)
    assert not torch.equal(other[0], support)


def test_episodes_need_enough_classes():
    labels = torch.tensor([0, 0, 1, 1, 2])  # class 2 has one image
    with pytest.raises(ValueError, match="3 classes with >= 2 images"):
        sample_episodes(labels, ways=3, shots=1, queries=1, episodes=1)
    assert episode_metrics(torch.randn(5, 2), labels, ways=[3], shots=[1], queries=1, episodes=5) == {}


def _brute_episodes(x, labels, support, query):
    """Per episode, per query, loops: nearest support image, and nearest class mean."""
    nn_acc, ncm_acc = [], []
    for e in range(support.shape[0]):
        ways, shots = support.shape[1:]
        hits_nn = hits_ncm = total = 0
        means = [x[support[e, c]].mean(axis=0) for c in range(ways)]
        for c in range(ways):
            for qi in query[e, c]:
                q = x[qi]
                dists = [np.linalg.norm(q - x[support[e, cc, s]]) for cc in range(ways) for s in range(shots)]
                hits_nn += int(np.argmin(dists)) // shots == c
                hits_ncm += int(np.argmin([np.linalg.norm(q - m) for m in means])) == c
                total += 1
        nn_acc.append(hits_nn / total)
        ncm_acc.append(hits_ncm / total)
    return np.array(nn_acc), np.array(ncm_acc)


@pytest.mark.parametrize("ways,shots,queries", [(5, 1, 1), (4, 3, 2), (10, 2, 4)])
def test_episode_accuracy_matches_brute_force(ways, shots, queries):
    g = torch.Generator().manual_seed(ways * 10 + shots)
    centres = torch.randn(15, 8, generator=g)
    labels = torch.arange(15).repeat_interleave(8)
    x = centres[labels] + 0.9 * torch.randn(120, 8, generator=g)
    result = episode_accuracy(x, labels, ways, shots, queries, episodes=40, seed=7, chunk=16)
    support, query = sample_episodes(labels, ways, shots, queries, 40, seed=7)
    nn_acc, ncm_acc = _brute_episodes(x.double().numpy(), labels.numpy(), support.numpy(), query.numpy())
    for rule, acc in (("nn", nn_acc), ("ncm", ncm_acc)):
        mean, ci = result[rule]
        assert mean == pytest.approx(acc.mean())
        assert ci == pytest.approx(1.959963984540054 * acc.std(ddof=1) / math.sqrt(40))
    if shots == 1:
        assert result["nn"] == result["ncm"]


def test_separable_classes_score_one_and_random_ones_near_chance():
    labels = torch.arange(20).repeat_interleave(6)
    separable = 100.0 * torch.nn.functional.one_hot(labels, 20).float()
    assert episode_accuracy(separable, labels, 20, 1, 5, episodes=30)["nn"] == (1.0, 0.0)
    noise = torch.randn(120, 16, generator=torch.Generator().manual_seed(0))
    mean, ci = episode_accuracy(noise, labels, 5, 1, 5, episodes=400)["nn"]
    assert abs(mean - 0.2) < 3 * ci + 0.02 and 0 < ci < 0.05


def test_episode_metrics_names_match_the_config_names():
    labels = torch.arange(6).repeat_interleave(8)
    metrics = episode_metrics(torch.randn(48, 4), labels, ways=[5], shots=[1, 2], queries=3, episodes=10)
    assert set(metrics) == {"5way1shot", "5way1shot_ci95", "5way1shot_ncm", "5way1shot_ncm_ci95",
                            "5way2shot", "5way2shot_ci95", "5way2shot_ncm", "5way2shot_ncm_ci95"}
    assert set(fewshot_metric_names([5], [1, 2], oneshot=False)) == {k for k in metrics if "ci95" not in k}

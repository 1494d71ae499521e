import pytest
import torch

from clusterloss.data import ClassBalancedBatchSampler, DeviceBatchLoader, iterate_in_order, load_dataset


def test_device_batch_loader_yields_normalized_balanced_batches():
    data = load_dataset("digits", "train")
    mean, std = torch.tensor([0.3]), torch.tensor([0.4])
    sampler = ClassBalancedBatchSampler(data.labels, 4, 3, seed=0)
    loader = DeviceBatchLoader(data, sampler, "cpu", mean, std, augment=False)
    batches = list(loader)
    assert len(batches) == len(loader) == len(sampler)
    expected_indices = list(sampler)
    for (images, labels), indices in zip(batches, expected_indices, strict=True):
        assert images.dtype == torch.float32 and images.shape == (12, 1, 8, 8)
        assert labels.dtype == torch.int64 and torch.equal(labels, data.labels[indices])
        assert torch.allclose(images, (data.images[indices].float() / 255 - 0.3) / 0.4, atol=1e-5)


def test_augmented_batches_are_crops_of_the_sampled_images():
    data = load_dataset("digits", "train")
    sampler = ClassBalancedBatchSampler(data.labels, 2, 2, seed=0)
    loader = DeviceBatchLoader(
        data, sampler, "cpu", [0.0], [1.0], padding=2, generator=torch.Generator().manual_seed(0)
    )
    images, labels = next(iter(loader))
    raw = (images * 255).round().to(torch.uint8)
    first = list(sampler)[0]
    # a crop keeps each image's pixel multiset up to the zero padding: total ink can only shrink
    assert (raw.flatten(1).sum(1) <= data.images[first].flatten(1).sum(1).to(torch.int64) + 1).all()
    loader.set_epoch(1)
    assert sampler.epoch == 1


def test_iterate_in_order_covers_the_dataset_in_order():
    data = load_dataset("digits", "test")
    batches = list(iterate_in_order(data, 100, "cpu", [0.5], [0.25]))
    assert [len(y) for _, y in batches] == [100] * 5 + [35]
    images = torch.cat([x for x, _ in batches])
    assert torch.equal(torch.cat([y for _, y in batches]), data.labels)
    assert torch.allclose(images, (data.images.float() / 255 - 0.5) / 0.25, atol=1e-5)


def test_cpu_thread_setting_is_restored_between_batches():
    data = load_dataset("digits", "train")
    before = torch.get_num_threads()
    loader = DeviceBatchLoader(data, ClassBalancedBatchSampler(data.labels, 2, 2), "cpu", [0.3], [0.4])
    for _ in loader:
        assert torch.get_num_threads() == before


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("cache_on_device", [True, False])
def test_batches_land_on_cuda(cache_on_device):
    data = load_dataset("digits", "train")
    sampler = ClassBalancedBatchSampler(data.labels, 4, 2)
    loader = DeviceBatchLoader(
        data, sampler, "cuda", [0.3], [0.4], augment=False, cache_on_device=cache_on_device
    )
    for (images, labels), indices in zip(loader, list(sampler), strict=True):
        assert images.device.type == "cuda" and labels.device.type == "cuda"
        assert torch.equal(labels.cpu(), data.labels[indices])
        assert torch.allclose(images.cpu(), (data.images[indices].float() / 255 - 0.3) / 0.4, atol=1e-5)

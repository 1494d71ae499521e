"""Images/s delivered by the training data path on CPU, next to a per-image torch DataLoader.

Ours: ClassBalancedBatchSampler indices (32 classes x 4; 8 x 16 with 10 classes) -> gather from the
in-memory uint8 tensor -> batched random crop (padding 4) + flip -> normalize, via DeviceBatchLoader on "cpu".
Baseline: torch.utils.data.DataLoader over a Dataset whose __getitem__ pads, crops, flips and normalizes
one image with plain torch ops (what torchvision transforms do), batch 128, shuffled.

Uses real CIFAR-10 (../shared/data or --root) when present, else synthetic uint8 data of the same shape.
Run: .venv/bin/python benchmarks/data_speed.py [--root DIR] [--batches N]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from clusterloss.data import (
    ClassBalancedBatchSampler,
    DeviceBatchLoader,
    ImageDataset,
    channel_stats,
    load_dataset,
)

REPO = Path(__file__).resolve().parents[1]


class PerImageDataset(Dataset):
    """The usual per-image pipeline: pad, random crop, random flip, to float, normalize."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, mean, std, padding: int = 4):
        self.images, self.labels, self.padding = images, labels, padding
        self.mean = torch.as_tensor(mean).view(-1, 1, 1)
        self.std = torch.as_tensor(std).view(-1, 1, 1)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int):
        image = self.images[index]
        _, h, w = image.shape
        p = self.padding
        padded = F.pad(image, (p, p, p, p))
        y, x = torch.randint(0, 2 * p + 1, (2,)).tolist()
        crop = padded[:, y : y + h, x : x + w]
        if torch.rand(()) < 0.5:
            crop = crop.flip(-1)
        return (crop.float() / 255 - self.mean) / self.std, self.labels[index]


def _images_per_second(iterable, max_batches: int) -> tuple[float, int]:
    iterator = iter(iterable)
    next(iterator)  # warm-up (worker start-up, first allocation) is not counted
    count, start = 0, time.perf_counter()
    for i, (images, _) in enumerate(iterator):
        count += images.shape[0]
        if i + 1 >= max_batches:
            break
    return count / (time.perf_counter() - start), count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default=str(REPO.parent / "shared" / "data"))
    parser.add_argument("--batches", type=int, default=300, help="batches timed for our loader")
    parser.add_argument("--baseline-batches", type=int, default=60, help="batches timed per baseline")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    try:
        data = load_dataset("cifar10", "train", args.root)
        images, labels, source = data.images, data.labels, f"real CIFAR-10 train ({args.root})"
    except FileNotFoundError:
        generator = torch.Generator().manual_seed(0)
        images = torch.randint(0, 256, (50000, 3, 32, 32), dtype=torch.uint8, generator=generator)
        labels = torch.arange(50000) % 10
        source = "synthetic uint8 [50000, 3, 32, 32]"
    mean, std = channel_stats(images)
    num_classes = int(labels.max()) + 1
    p = max(d for d in (1, 2, 4, 8, 16, 32) if d <= num_classes)  # 32 x 4 as in the recipe when possible
    k = 128 // p
    print(f"data: {source}; batch 128 ({p} classes x {k}) at 32x32; torch threads: {torch.get_num_threads()}")

    sampler = ClassBalancedBatchSampler(labels, p, k, seed=0)
    loader = DeviceBatchLoader(
        ImageDataset(images, labels, [str(i) for i in range(10)]),
        sampler,
        "cpu",
        mean,
        std,
        augment=True,
        padding=4,
    )
    rows = [
        (
            "ours: sampler -> gather -> batched crop+flip -> normalize",
            *_images_per_second(loader, args.batches),
        )
    ]
    per_image = PerImageDataset(images, labels, mean, std)
    for workers in (0, 2):
        baseline = DataLoader(per_image, batch_size=128, shuffle=True, num_workers=workers, drop_last=True)
        rows.append(
            (
                f"torch DataLoader, per-image transforms, num_workers={workers}",
                *_images_per_second(baseline, args.baseline_batches),
            )
        )

    ours = rows[0][1]
    print("\n| pipeline | images/s | images timed | ours / this |\n|---|---:|---:|---:|")
    for name, rate, count in rows:
        print(f"| {name} | {rate:,.0f} | {count:,} | {ours / rate:.1f}x |")
    print(f"\ngoal >= 20,000 images/s: {'met' if ours >= 20000 else 'NOT met'} ({ours:,.0f})")


if __name__ == "__main__":
    main()

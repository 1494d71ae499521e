"""Images/s delivered by the training data path on CPU, next to a per-image torch DataLoader.

Ours: ClassBalancedBatchSampler indices (32 classes x 4; 8 x 16 with 10 classes) -> gather from the
in-memory uint8 tensor -> batched random crop (padding 4) + flip -> normalize, via DeviceBatchLoader on "cpu".
Baseline: torch.utils.data.DataLoader over a Dataset whose __getitem__ pads, crops, flips and normalizes
one image with plain torch ops (what torchvision transforms do), batch 128, shuffled.

Uses real CIFAR-10 (../shared/data or --root) when present, else synthetic uint8 data of the same shape.

Photo row (``--cub DIR``, default ../shared/data/CUB_200_2011_subset; skipped when absent or ``--no-photos``):
the real CUB JPEGs decoded once into the image cache (built fresh in a temporary folder, so its build rate
is measured), then ours = sampler (32 x 4) -> random resized crop (scale 0.16-1, ratio 3/4-4/3) of each
image straight from the memory map to 224 + flip, normalized per crop (DeviceBatchLoader on ``--device``,
``--cpu-workers`` threads; float32 batches stored channels last; a line gives the rate with the same
crops written as [C, H, W]-contiguous batches, the layout torchvision's loader gives); against torchvision's
per-image pipeline (PIL decode + RandomResizedCrop(224) + RandomHorizontalFlip + ToTensor + Normalize,
DataLoader batch 128, ``num_workers=2``) over the same files, in the same run. The load average is printed
before and after, and the CPU time per image of both (threads and worker processes): under load the rates
and CPU times of the per-image pipeline suffer more than ours, so only idle runs decide the goals.
Run: .venv/bin/python benchmarks/data_speed.py [--root DIR] [--batches N] [--cub DIR] [--device cuda]
"""

from __future__ import annotations

import argparse
import os
import tempfile
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


def _endless(iterable):
    while True:
        empty = True
        for item in iterable:
            empty = False
            yield item
        if empty:
            return


def _cpu_seconds() -> float:
    """CPU time of this process and of its live child processes (DataLoader workers; read from /proc)."""
    total = time.process_time()
    ticks = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == os.getpid():  # fields after the name: state, ppid, ..., utime (12), stime (13)
            total += (int(fields[11]) + int(fields[12])) / ticks
    return total


def _images_per_second(iterable, max_batches: int, device: str = "cpu", cpu_time: list | None = None
                       ) -> tuple[float, int]:
    """(images/s, images timed) after two warm-up batches; ``cpu_time``: gets the CPU-seconds used meanwhile
    by this process and its worker processes. A short epoch is started again (tiny test data)."""
    iterator = _endless(iterable)
    for _ in range(2):  # warm-up (worker start-up, first allocations: two buffers alternate) is not counted
        next(iterator)
    count, start, cpu_start = 0, time.perf_counter(), _cpu_seconds()
    for i, (images, _) in enumerate(iterator):
        count += images.shape[0]
        if i + 1 >= max_batches:
            break
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    elapsed = time.perf_counter() - start
    if cpu_time is not None:
        cpu_time.append(_cpu_seconds() - cpu_start)
    iterator.close()  # DataLoader workers end here
    return count / elapsed, count


def _load() -> str:
    return "load average " + " ".join(f"{v:.2f}" for v in os.getloadavg()) + f" on {os.cpu_count()} CPUs"


class PerImagePhotos(Dataset):
    """torchvision's usual per-image photo pipeline over image files."""

    def __init__(self, paths: list[Path], labels: torch.Tensor, mean, std, size: int = 224):
        import torchvision.transforms as T

        self.paths, self.labels = paths, labels
        self.transform = T.Compose([
            T.RandomResizedCrop(size, scale=(0.16, 1.0), ratio=(3 / 4, 4 / 3)),
            T.RandomHorizontalFlip(),
            T.ToTensor(),
            T.Normalize(mean, std),
        ])

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int):
        from PIL import Image

        with Image.open(self.paths[index]) as image:
            return self.transform(image.convert("RGB")), self.labels[index]


class ContiguousBatches:
    """Our crops, written into reused [C, H, W]-contiguous float32 batches instead of channels-last ones."""

    def __init__(self, data, sampler, mean, std, workers: int, size: int = 224):
        from clusterloss.data.augment import normalization_affine

        self.data, self.sampler, self.workers, self.size = data, sampler, workers, size
        self.affine = normalization_affine(mean, std, 3, torch.device("cpu"))
        self.generator = torch.Generator().manual_seed(0)

    def __iter__(self):
        from clusterloss.data.augment import random_resized_crop

        buffers: dict[tuple[int, int], torch.Tensor] = {}
        for step, indices in enumerate(self.sampler):
            index = torch.as_tensor(indices)
            key = (len(index), step % 2)  # two buffers alternate: the caller drops each batch after use
            if key not in buffers:
                buffers[key] = torch.empty(len(index), 3, self.size, self.size)
            out = buffers[key]
            yield random_resized_crop(self.data.images, self.size, self.generator, workers=self.workers,
                                      index=index, affine=self.affine, out=out), self.data.labels[index]


def photo_rows(cub_root: str, batches: int, baseline_batches: int, device: str, cpu_workers: int | None
               ) -> list[tuple]:
    """The 224-px rows on real CUB photos (see the module docstring)."""
    from clusterloss.data.image_cache import PhotoOptions
    from clusterloss.utils.threads import torch_threads

    with tempfile.TemporaryDirectory(prefix="clusterloss-cache-") as cache_dir:
        start = time.perf_counter()
        options = PhotoOptions(image_size=224, cache_dir=cache_dir)
        data = load_dataset("cub200", "all", cub_root, options=options)
        build = time.perf_counter() - start
        print(f"photos: {len(data)} CUB images ({cub_root}); cache {tuple(data.images.shape[1:])} uint8 "
              f"built in {build:.1f} s = {len(data) / build:,.0f} images/s (decode + resize, "
              f"{data.images.numel() / 2**20:,.0f} MiB, memory-mapped)")
        start = time.perf_counter()
        checksum = sum(int(data.images[i : i + 256].sum()) for i in range(0, len(data), 256))
        print(f"photos: one sequential pass over the memory map (page-in, as after a first epoch): "
              f"{time.perf_counter() - start:.1f} s (checksum {checksum})")
        mean, std = channel_stats(data.images, max_images=2000)
        sampler = ClassBalancedBatchSampler(data.labels, 32, 4, seed=0)
        loader = DeviceBatchLoader(data, sampler, device, mean, std, augmentation="random_resized_crop",
                                   generator=torch.Generator(device=device).manual_seed(0),
                                   cpu_workers=cpu_workers)
        print(f"photos: {_load()}")
        cpu: list[float] = []
        rows = [("ours, photos: sampler -> random resized crop 224 + flip from the memory-mapped cache "
                 f"-> normalize ({device}, {loader.cpu_workers} thread(s); channels-last float32)",
                 *_images_per_second(loader, batches, device, cpu))]
        contiguous_rate = None
        if device == "cpu":
            with torch_threads(1):
                same_batches = ClassBalancedBatchSampler(data.labels, 32, 4, seed=0)
                contiguous = ContiguousBatches(data, same_batches, mean, std, loader.cpu_workers)
                contiguous_rate = _images_per_second(contiguous, batches)[0]
        folder = Path(cub_root) / "CUB_200_2011"
        folder = folder if folder.is_dir() else Path(cub_root)
        per_image = PerImagePhotos([folder / p for p in data.paths], data.labels, mean.tolist(), std.tolist())
        baseline = DataLoader(per_image, batch_size=128, shuffle=True, num_workers=2, drop_last=True)
        timed = _images_per_second(baseline, baseline_batches, cpu_time=cpu)
        rows.append(("torchvision per-image photos: PIL decode + RandomResizedCrop(224) + flip + normalize, "
                     "DataLoader num_workers=2", *timed))
        print(f"photos: {_load()}")
        ours_us, theirs_us = (seconds / row[2] * 1e6 for seconds, row in zip(cpu, rows, strict=True))
        print(f"photos: CPU time per image (all threads and worker processes): ours {ours_us:,.0f} us, "
              f"per-image pipeline {theirs_us:,.0f} us = {theirs_us / ours_us:.1f}x (both grow under load, "
              f"the per-image pipeline's more)")
        if contiguous_rate is not None:
            print(f"photos: ours with the same crops written as [C, H, W]-contiguous float32 batches (the "
                  f"layout torchvision's loader gives): {contiguous_rate:,.0f} images/s = "
                  f"{contiguous_rate / rows[-1][1]:.1f}x the per-image pipeline")
        del loader, data
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default=str(REPO.parent / "shared" / "data"))
    parser.add_argument("--batches", type=int, default=300, help="batches timed for our loader")
    parser.add_argument("--baseline-batches", type=int, default=60, help="batches timed per baseline")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    parser.add_argument("--cub", default=str(REPO.parent / "shared" / "data" / "CUB_200_2011_subset"),
                        help="CUB-200-2011 folder for the 224-px photo rows")
    parser.add_argument("--no-photos", action="store_true", help="skip the photo rows")
    parser.add_argument("--photo-batches", type=int, default=30, help="batches timed for our photo loader")
    parser.add_argument("--photo-baseline-batches", type=int, default=8, help="batches of the per-image one")
    parser.add_argument("--device", default="cpu", help="where our photo batches are produced (cpu, cuda)")
    parser.add_argument("--cpu-workers", type=int, default=None,
                        help="threads of our photo loader on the CPU (default: the loader's, up to 2)")
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

    if args.no_photos or not Path(args.cub).is_dir():
        print(f"\nphoto rows skipped ({'--no-photos' if args.no_photos else f'no CUB folder at {args.cub}'})")
        return
    rows = photo_rows(args.cub, args.photo_batches, args.photo_baseline_batches, args.device,
                      args.cpu_workers)
    ours = rows[0][1]
    print("\n| pipeline (224 px) | images/s | images timed | ours / this |\n|---|---:|---:|---:|")
    for name, rate, count in rows:
        print(f"| {name} | {rate:,.0f} | {count:,} | {ours / rate:.1f}x |")
    ratio = ours / rows[1][1]
    print(f"\ngoals: >= 2,000 images/s {'met' if ours >= 2000 else 'NOT met'} ({ours:,.0f}); >= 5x the "
          f"per-image pipeline {'met' if ratio >= 5 else 'NOT met'} ({ratio:.1f}x)")


if __name__ == "__main__":
    main()

"""A fixed number of training steps of an ImageNet backbone on real CUB photographs, timed per phase.

The trainer's own pieces: the decoded-image cache of ``data.name: cub200`` (built on first use), the batched
random-resized-crop loader on the training device, ``build_model_from_config`` (random weights: speed does
not depend on them, and the GPU machine has no internet), the facility-location loss (NMI margin, PAM),
AdamW with a 10x head. Prints images/s, the step time and each phase's share (data = sampler -> gather ->
crop/flip -> normalize; forward; loss; backward; optimizer) as medians over the timed steps, and the share of
data + loss.

Run: .venv/bin/python benchmarks/photo_train_steps.py --cub ../shared/data/CUB_200_2011_subset --device cuda
     [--arch resnet50] [--image-size 224] [--steps 20] [--warmup 5] [--batch-classes 32 --batch-samples 4]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from train_speed import PHASES, median_phase_seconds  # the same timed step as the DenseNet benchmark

REPO = Path(__file__).resolve().parents[1]


def measure(args: argparse.Namespace) -> dict:
    import torch

    from clusterloss.config import load_config
    from clusterloss.data.loader import DeviceBatchLoader
    from clusterloss.data.protocols import splits_from_config
    from clusterloss.data.sampler import ClassBalancedBatchSampler
    from clusterloss.losses import build_loss
    from clusterloss.models import build_model_from_config, input_normalization
    from clusterloss.schedule import build_optimizer

    config = load_config(None, [
        "data.name=cub200", f"data.root={args.cub}", f"data.image_size={args.image_size}",
        *([f"data.cache_dir={args.cache_dir}"] if args.cache_dir else []),
        "model.name=timm", f"model.options={{arch: {args.arch}}}", f"model.embedding_dim={args.dim}",
        "model.freeze_bn=true"])
    device = torch.device(args.device)
    torch.manual_seed(0)
    splits = splits_from_config(config.data)
    model = build_model_from_config(config.model, in_channels=3)
    mean, std = input_normalization(model, splits.mean, splits.std)
    sampler = ClassBalancedBatchSampler(splits.train.labels, args.batch_classes, args.batch_samples, seed=0)
    loader = DeviceBatchLoader(splits.train, sampler, device, mean, std, augment=True,
                               generator=torch.Generator(device=device).manual_seed(0))
    memory_format = torch.channels_last if args.channels_last else torch.contiguous_format
    model = model.to(device, memory_format=memory_format).train()
    classes = int(splits.train.labels.max()) + 1
    loss_fn = build_loss("facility_location", args.dim, classes, margin_multiplier=1.0, margin_type="nmi",
                         pam_iterations=5)
    opt = build_optimizer("adamw", model, loss_fn, lr=1e-4, weight_decay=1e-4, head_lr_multiplier=10)
    median = median_phase_seconds(loader, model, loss_fn, opt, steps=args.steps, warmup=args.warmup,
                                  memory_format=memory_format, bf16=args.amp == "bf16",
                                  device_type=device.type)
    step = sum(median.values())
    batch = args.batch_classes * args.batch_samples
    return {"img_s": batch / step, "step_ms": 1000 * step,
            **{f"{p}_pct": 100 * median[p] / step for p in PHASES},
            "data_loss_pct": 100 * (median["data"] + median["loss"]) / step}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cub", default=str(REPO.parent / "shared" / "data" / "CUB_200_2011_subset"),
                        help="folder holding CUB_200_2011/ (official text files + images/)")
    parser.add_argument("--cache-dir", default=None,
                        help="decoded-image cache folder (default: beside the data)")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--arch", default="resnet50", help="timm architecture (random weights)")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--batch-classes", type=int, default=32)
    parser.add_argument("--batch-samples", type=int, default=4)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--amp", choices=["none", "bf16"], default="bf16")
    parser.add_argument("--no-channels-last", dest="channels_last", action="store_false")
    args = parser.parse_args()
    if not (Path(args.cub) / "CUB_200_2011").is_dir() and not (Path(args.cub) / "images.txt").is_file():
        sys.exit(f"error: no CUB_200_2011 folder under {args.cub} (pass --cub)")
    row = measure(args)
    import torch

    name = torch.cuda.get_device_name() if args.device.startswith("cuda") else "CPU"
    print(f"{args.arch} at {args.image_size} px, batch {args.batch_classes}x{args.batch_samples}, "
          f"{args.amp}{' + channels_last' if args.channels_last else ''}, {args.steps} steps on {name} "
          f"(torch {torch.__version__})")
    print("| img/s | step ms | data % | forward % | loss % | backward % | optimizer % | data + loss % |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    print(f"| {row['img_s']:.1f} | {row['step_ms']:.1f} | " + " | ".join(
        f"{row[f'{p}_pct']:.1f}" for p in PHASES) + f" | {row['data_loss_pct']:.1f} |")


if __name__ == "__main__":
    main()

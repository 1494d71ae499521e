"""Training throughput of DenseNet-BC-40 and DenseNet-40 at batch 128 (32 classes x 4) on CPU.

Reports images/s and the share of step time spent in data (sampler -> gather -> crop/flip -> normalize),
forward, loss (facility location, NMI margin, PAM), backward and optimizer (SGD Nesterov), for fp32,
fp32 + channels_last and bf16 autocast, with glibc malloc tuning (mallopt) on and off. Each (model, mallopt)
pair runs in a fresh process, since mallopt cannot be undone inside one. Synthetic CIFAR-100-shaped data.

Run: .venv/bin/python benchmarks/train_speed.py [--models densenet_bc40 densenet40] [--steps 5] [--warmup 2]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time

PHASES = ("data", "forward", "loss", "backward", "optimizer")
VARIANTS = {"fp32": (None, False), "fp32+channels_last": (None, True), "bf16": ("bf16", False)}


def median_phase_seconds(loader, model, loss_fn, opt, *, steps: int, warmup: int, memory_format, bf16: bool,
                         device_type: str) -> dict[str, float]:
    """Run ``warmup + steps`` training steps and return the median seconds of each phase in PHASES over the
    timed ones (medians: robust to other processes of a shared machine stealing a step now and then). Each
    phase ends with a CUDA synchronize on a GPU; the loader is restarted when a small dataset runs out."""
    import torch

    sync = torch.cuda.synchronize if device_type == "cuda" else (lambda: None)
    timed: dict[str, list[float]] = {p: [] for p in PHASES}
    batches = iter(loader)
    for i in range(warmup + steps):
        marks = [time.perf_counter()]
        try:
            images, labels = next(batches)
        except StopIteration:  # a small dataset: start another pass of the sampler
            batches = iter(loader)
            images, labels = next(batches)
        images = images.contiguous(memory_format=memory_format)
        sync()
        marks.append(time.perf_counter())
        with torch.autocast(device_type, dtype=torch.bfloat16, enabled=bf16):
            embeddings = model(images)
        sync()
        marks.append(time.perf_counter())
        loss = loss_fn(embeddings.float(), labels)
        sync()
        marks.append(time.perf_counter())
        loss.backward()
        sync()
        marks.append(time.perf_counter())
        opt.step()
        opt.zero_grad(set_to_none=True)
        sync()
        marks.append(time.perf_counter())
        if i >= warmup:
            for phase, a, b in zip(PHASES, marks, marks[1:], strict=False):
                timed[phase].append(b - a)
    return {p: statistics.median(v) for p, v in timed.items()}


def measure(model_name: str, variant: str, steps: int, warmup: int, device: str = "cpu") -> dict:
    import torch

    from clusterloss.data import ClassBalancedBatchSampler, DeviceBatchLoader, ImageDataset
    from clusterloss.losses import build_loss
    from clusterloss.models import build_model
    from clusterloss.schedule import build_sgd

    amp, channels_last = VARIANTS[variant]
    torch.manual_seed(0)
    classes, per_class = 100, 100
    g = torch.Generator().manual_seed(0)
    data = ImageDataset(images=torch.randint(0, 256, (classes * per_class, 3, 32, 32), dtype=torch.uint8,
                                             generator=g),
                        labels=torch.arange(classes).repeat_interleave(per_class),
                        class_names=[str(c) for c in range(classes)], name="synthetic")
    sampler = ClassBalancedBatchSampler(data.labels, 32, 4, seed=0)
    loader = DeviceBatchLoader(data, sampler, device, [0.5] * 3, [0.25] * 3, augment=True, padding=4)
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    model = build_model(model_name, embedding_dim=64).to(device, memory_format=memory_format).train()
    loss_fn = build_loss("facility_location", 64, classes, margin_multiplier=1.0, margin_type="nmi",
                         pam_iterations=5)
    opt = build_sgd(model, loss_fn, lr=0.01, momentum=0.9, nesterov=True, weight_decay=1e-4)
    median = median_phase_seconds(loader, model, loss_fn, opt, steps=steps, warmup=warmup,
                                  memory_format=memory_format, bf16=amp == "bf16",
                                  device_type=torch.device(device).type)
    step = sum(median.values())
    return {"model": model_name, "variant": variant, "img_s": 128 / step, "step_ms": 1000 * step,
            **{f"{p}_pct": 100 * median[p] / step for p in PHASES}}


def worker(args: argparse.Namespace) -> None:
    mallopt = args.mallopt[0]
    if mallopt == "on":
        from clusterloss.malloc_tuning import tune_malloc

        tune_malloc()
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    for variant in args.variants:
        row = measure(args.model, variant, args.steps, args.warmup, args.device)
        print(json.dumps({**row, "mallopt": mallopt}), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["densenet_bc40", "densenet40"])
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--mallopt", nargs="+", default=["off", "on"], choices=["off", "on"])
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = default)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--model", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return
    import torch

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {args.device}, batch 128 "
          f"(32 classes x 4), facility-location loss (NMI margin, PAM), {args.steps} timed steps after "
          f"{args.warmup} warm-up; per-phase medians")
    print("| model | precision | mallopt | img/s | step ms | " + " | ".join(f"{p} %" for p in PHASES) + " |")
    print("|" + "---|" * (5 + len(PHASES)))
    rows = []
    for model in args.models:
        for mallopt in args.mallopt:
            cmd = [sys.executable, __file__, "--worker", "--model", model, "--mallopt", mallopt,
                   "--steps", str(args.steps), "--warmup", str(args.warmup), "--threads", str(args.threads),
                   "--device", args.device, "--variants", *args.variants]
            out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
            for line in out.splitlines():
                row = json.loads(line)
                rows.append(row)
                shares = " | ".join(f"{row[p + '_pct']:.1f}" for p in PHASES)
                print(f"| {row['model']} | {row['variant']} | {row['mallopt']} | {row['img_s']:.0f} | "
                      f"{row['step_ms']:.0f} | {shares} |", flush=True)
    for row in rows:
        if row["model"] == "densenet_bc40" and row["mallopt"] == args.mallopt[-1]:
            share = row["data_pct"] + row["loss_pct"]
            verdict = "meets" if share <= 5 else "misses"
            print(f"densenet_bc40 {row['variant']} (mallopt {row['mallopt']}): data + loss = {share:.1f}% of "
                  f"the step ({verdict} the 5% goal)")


if __name__ == "__main__":
    main()

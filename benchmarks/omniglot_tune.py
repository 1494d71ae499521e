"""Tuning trials for the Omniglot quickstart (issue 12), on the training alphabets only.

Trains Conv-4 on background small 1 minus Latin (the quickstart's held-out alphabet) minus a validation
alphabet (``--val``, default Korean: the last of the four training alphabets, as ``data.validation=true``
carves it), then scores 1,000 seeded 5-way and 20-way 1-shot episodes (5 queries per class, nearest support
image) on it, with the embedding ("ep5", "ep20") and with the backbone's pooled features before the head
("bb5", "bb20"). ``--val all`` leaves each of the four training alphabets out in turn and prints the four
trials, then their mean (the quickstart's settings were chosen that way). Adam, batches of P characters x K
drawings, ``random_affine`` with the given strengths, ``--rot90``: rotations by 90/180/270 degrees as new
classes, bf16 autocast + channels_last (``--fast 0``: fp32). Prints one JSON line per trial:

    .venv/bin/python benchmarks/omniglot_tune.py --val all --gamma 10 --shift 3 --rot 15 --smin 0.8 --smax 1.2

``--final`` trains on all four training alphabets and scores Latin and the 20 official runs instead; it was
NOT used to choose anything (``clusterloss quickstart`` reports those numbers itself).
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from clusterloss.data.augment import channel_stats, normalize
from clusterloss.data.augment_affine import random_affine, rotate90_classes
from clusterloss.data.omniglot import load_omniglot, load_oneshot_runs
from clusterloss.data.sampler import ClassBalancedBatchSampler
from clusterloss.losses import build_loss
from clusterloss.metrics.fewshot import episode_accuracy, oneshot_accuracy
from clusterloss.models.conv4 import conv4
from clusterloss.models.head import PooledFeatures


def parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--loss", default="facility_location")
    p.add_argument("--gamma", type=float, default=1.0, help="facility location margin multiplier")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--steps", type=int, default=600)
    p.add_argument("--shift", type=float, default=2.0)
    p.add_argument("--rot", type=float, default=10.0)
    p.add_argument("--smin", type=float, default=0.9)
    p.add_argument("--smax", type=float, default=1.1)
    p.add_argument("--P", type=int, default=32)
    p.add_argument("--K", type=int, default=4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--dim", type=int, default=64)
    p.add_argument("--wd", type=float, default=0.0)
    p.add_argument("--cosine", action="store_true")
    p.add_argument("--pam", type=int, default=5)
    p.add_argument("--fast", type=int, default=1)
    p.add_argument("--width", type=int, default=64, help="Conv-4 channels per block")
    p.add_argument("--rot90", action="store_true", help="rotations by 90/180/270 degrees as new classes")
    p.add_argument("--energy", default="sum", help="facility location energy_scale: sum (paper) or mean")
    p.add_argument("--val", default="Korean",
                   help="validation alphabet (one of the four training alphabets), or 'all': one trial per "
                        "alphabet (leave one alphabet out) and their mean")
    p.add_argument("--final", action="store_true")
    return p.parse_args()


def main() -> None:
    a = parse()
    data = load_omniglot("train")
    names = data.coarse_class_names
    folds = [n for n in names if n != "Latin"] if a.val == "all" and not a.final else [a.val]
    results = []
    for fold in folds:
        results.append(trial(a, data, fold))
        print(json.dumps(results[-1]), flush=True)
    if len(results) > 1:
        keys = ("ep5", "ep20", "bb5", "bb20", "train_s")
        mean = {k: round(sum(r[k] for r in results) / len(results), 4) for k in keys}
        print(json.dumps(dict(vars(a), **mean, folds=len(results))), flush=True)


def trial(a: argparse.Namespace, data, fold: str) -> dict:
    """Train on the background-small-1 alphabets minus Latin minus ``fold``, score episodes on ``fold``."""
    torch.manual_seed(a.seed)
    names = data.coarse_class_names
    if fold not in names or fold == "Latin":
        choices = [n for n in names if n != "Latin"]
        raise SystemExit(f"error: --val must be one of {choices} or 'all', got {fold}")
    heldout, val = names.index("Latin"), names.index(fold)
    if a.final:
        train_mask, eval_mask = data.coarse_labels != heldout, data.coarse_labels == heldout
    else:
        train_mask = (data.coarse_labels != heldout) & (data.coarse_labels != val)
        eval_mask = data.coarse_labels == val
    train = data.subset(torch.nonzero(train_mask).flatten())
    evaluation = data.subset(torch.nonzero(eval_mask).flatten())
    mean, std = channel_stats(train.images)
    classes = torch.unique(train.labels)
    label_map = torch.full((int(classes.max()) + 1,), -1)
    label_map[classes] = torch.arange(len(classes))
    train_images, train_labels = train.images, label_map[train.labels]
    num_classes = len(classes)
    if a.rot90:
        train_images, train_labels = rotate90_classes(train_images, train_labels, num_classes)
        num_classes *= 4
    model = conv4(embedding_dim=a.dim, in_channels=1, width=a.width)
    options = ({"margin_multiplier": a.gamma, "pam_iterations": a.pam, "energy_scale": a.energy}
               if a.loss == "facility_location" else {})
    loss_fn = build_loss(a.loss, a.dim, num_classes, **options)
    optimizer = torch.optim.Adam(list(model.parameters()) + list(loss_fn.parameters()), lr=a.lr,
                                 weight_decay=a.wd)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, a.steps) if a.cosine else None
    sampler = ClassBalancedBatchSampler(train_labels, a.P, a.K, seed=a.seed)
    generator = torch.Generator()
    generator.manual_seed(a.seed)
    step, epoch, start = 0, 0, time.perf_counter()
    model.train()
    if a.fast:
        model = model.to(memory_format=torch.channels_last)
    while step < a.steps:
        sampler.set_epoch(epoch)
        epoch += 1
        for batch in sampler:
            index = torch.as_tensor(batch)
            x = random_affine(train_images[index], generator, max_shift=a.shift, max_rotation=a.rot,
                              scale=(a.smin, a.smax))
            x = normalize(x, mean, std)
            if a.fast:
                x = x.contiguous(memory_format=torch.channels_last)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bool(a.fast)):
                embeddings = model(x)
            loss = loss_fn(embeddings.float(), train_labels[index])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            if schedule:
                schedule.step()
            step += 1
            if step >= a.steps:
                break
    seconds = time.perf_counter() - start
    model.eval()

    pooled = PooledFeatures(model)

    @torch.no_grad()
    def embed(images: torch.Tensor, net: torch.nn.Module = model) -> torch.Tensor:
        return torch.cat([net(normalize(images[i:i + 512], mean, std)) for i in range(0, len(images), 512)])

    result = dict(vars(a), val=fold, train_s=round(seconds, 1), steps_s=round(a.steps / seconds, 2))
    # "ep": the embedding; "bb": the backbone's pooled features before the head's Linear layer (L2-normalized)
    for tag, net in (("ep", model), ("bb", pooled)):
        e = embed(evaluation.images, net)
        for ways in (5, 20):
            accuracy = episode_accuracy(e, evaluation.labels, ways, 1, 5, 1000, seed=0)["nn"][0]
            result[f"{tag}{ways}"] = round(accuracy, 4)
    if a.final:
        runs = load_oneshot_runs()
        shape = (20, 20, -1)
        scored = oneshot_accuracy(embed(runs.train.flatten(0, 1)).reshape(shape),
                                  embed(runs.test.flatten(0, 1)).reshape(shape), runs.answers)
        result["oneshot"] = scored["oneshot"]
    return result


if __name__ == "__main__":
    main()

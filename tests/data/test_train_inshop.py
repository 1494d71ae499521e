"""`clusterloss train` on an In-Shop release in the official layout: the trainer's evaluation searches each
query image against the gallery images only (never the other queries, never itself), as the benchmark is
scored. Checked against a brute-force query -> gallery search on the run's own embeddings."""

import json

import torch

from clusterloss.config import load_config
from clusterloss.train import Trainer


def test_training_on_inshop_scores_queries_against_the_gallery(tmp_path, official):
    # 3 training items (train status); 5 test items of 3 images: image 1 is the query, 2-3 the gallery
    official.inshop(tmp_path / "release", train_items=3, test_items=5, per_item=3)
    config = load_config(None, [
        "data.name=inshop", f"data.root={tmp_path / 'release'}", "data.image_size=16",
        f"data.cache_dir={tmp_path / 'cache'}", "model.name=convnet", "model.embedding_dim=8",
        "train.batch_classes=3", "train.batch_samples=2", "train.steps_per_epoch=2", "train.epochs=1",
        "train.device=cpu", "train.progress=false", "train.log_every_steps=1", "eval.every_epochs=1",
        "eval.kmeans_seeds=[0]", "eval.ks=[1,2,4]", "loss.name=contrastive"])
    trainer = Trainer(config, tmp_path / "run")
    mask = trainer.splits.eval.query_mask
    assert mask is not None and int(mask.sum()) == 5 and int((~mask).sum()) == 10
    trainer.fit()
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    scored = [r for r in records if r.get("split") == "eval"][-1]

    embeddings, labels = trainer.embed_eval_split()
    q, g = embeddings[mask], embeddings[~mask]
    yq, yg = labels[mask], labels[~mask]
    order = torch.cdist(q.double(), g.double()).argsort(dim=1, stable=True)  # gallery only, by distance
    hits = yg[order] == yq[:, None]  # [5, 10]
    for k in (1, 2, 4):
        want = hits[:, :k].any(dim=1).double().mean().item()
        assert abs(scored[f"recall@{k}"] - want) < 1e-9, k
    # MAP@R with R = the query's gallery images (2 here): mean over the first R ranks of precision@i at hits
    r = (yg[None, :] == yq[:, None]).sum(dim=1)
    assert r.tolist() == [2] * 5
    ap = [sum(hits[i, : j + 1].sum().item() / (j + 1) for j in range(2) if hits[i, j]) / 2 for i in range(5)]
    assert abs(scored["map@r"] - sum(ap) / 5) < 1e-9
    assert (scored["num_queries"], scored["num_gallery"], scored["excluded_queries"]) == (5, 10, 0)

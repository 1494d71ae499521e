"""DDP, 2 gloo processes on CPU: same loss and same parameter update as one process on the global batch."""

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

from clusterloss import distributed
from clusterloss.losses import build_loss

WORLD = 2
LOSSES = ["facility_location", "multi_similarity", "proxy_anchor"]


class TinyNet(torch.nn.Module):
    """No BatchNorm: per-rank batch statistics would make DDP differ from one process by design."""

    def __init__(self):
        super().__init__()
        self.linear = torch.nn.Linear(6, 4)

    def forward(self, x):
        return F.normalize(self.linear(x), dim=1)


def global_batch():
    g = torch.Generator().manual_seed(5)
    labels = torch.tensor([0, 1, 2, 0, 1, 2, 1, 0, 2, 2, 0, 1])  # each rank's half mixes classes
    return torch.randn(len(labels), 6, generator=g), labels


def one_step(loss_name: str, x: torch.Tensor, y: torch.Tensor, wrap=None):
    """One SGD step; returns (loss value, model weights after the step, loss parameters after the step)."""
    torch.manual_seed(0)
    model = TinyNet()
    loss_fn = build_loss(loss_name, embedding_dim=4, num_classes=3)
    net = wrap(model) if wrap else model
    opt = torch.optim.SGD(list(model.parameters()) + list(loss_fn.parameters()), lr=0.5, momentum=0.9)
    loss = loss_fn(net(x), y)
    loss.backward()
    for p in loss_fn.parameters():  # as Trainer._sync_loss_grads does for parameters outside DDP
        if wrap and p.grad is not None:
            dist.all_reduce(p.grad)
            p.grad /= dist.get_world_size()
    opt.step()
    return loss.detach(), {k: v.detach().clone() for k, v in model.state_dict().items()}, [
        p.detach().clone() for p in loss_fn.parameters()]


def _worker(rank: int, port: int, out_dir: str, losses: list[str]) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=WORLD)
    try:
        with distributed.node_leader_first():
            entered = time.monotonic()
            time.sleep(0.3 if rank == 0 else 0.0)
            left = time.monotonic()
        Path(out_dir, f"leader_first{rank}.txt").write_text(f"{entered} {left}")
        x, y = global_batch()
        part = slice(rank * len(y) // WORLD, (rank + 1) * len(y) // WORLD)
        results = {name: one_step(name, x[part], y[part], wrap=torch.nn.parallel.DistributedDataParallel)
                   for name in losses}
        torch.save(results, os.path.join(out_dir, f"rank{rank}.pt"))
        # Both ranks leave together: rank 0 hosts the rendezvous store, and tearing it down while the other
        # rank is still in gloo aborted the process now and then ("terminate called without an active
        # exception").
        dist.barrier()
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def ddp_results(tmp_path_factory):
    losses = [n for n in LOSSES if n != "facility_location"]
    try:
        import clusterloss.losses.facility_location  # noqa: F401
        losses = LOSSES
    except ImportError:
        pass
    out = tmp_path_factory.mktemp("ddp")
    mp.spawn(_worker, args=(_free_port(), str(out), losses), nprocs=WORLD, join=True)
    return losses, [torch.load(out / f"rank{r}.pt", weights_only=True) for r in range(WORLD)], out


@pytest.mark.slow
@pytest.mark.parametrize("loss_name", LOSSES)
def test_two_processes_match_one_process_on_the_global_batch(ddp_results, loss_name):
    losses, per_rank, _ = ddp_results
    if loss_name not in losses:
        pytest.skip("clusterloss.losses.facility_location is not available")
    x, y = global_batch()
    loss, weights, loss_params = one_step(loss_name, x, y)
    for rank_result in per_rank:
        r_loss, r_weights, r_params = rank_result[loss_name]
        torch.testing.assert_close(r_loss, loss, rtol=1e-5, atol=1e-6)
        for k in weights:
            torch.testing.assert_close(r_weights[k], weights[k], rtol=1e-5, atol=1e-6)
        for a, b in zip(r_params, loss_params, strict=True):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    torch.manual_seed(0)
    assert not torch.allclose(TinyNet().linear.weight, weights["linear.weight"])  # the step did move them


@pytest.mark.slow
def test_node_leader_runs_the_block_before_the_other_ranks_enter_it(ddp_results):
    out = ddp_results[2]
    (enter0, leave0), (enter1, _) = (map(float, (out / f"leader_first{r}.txt").read_text().split())
                                     for r in range(WORLD))
    assert leave0 - enter0 >= 0.3 and enter1 >= leave0


def test_helpers_are_identities_without_a_process_group():
    x = torch.randn(3, 2, requires_grad=True)
    assert distributed.all_gather_with_grad(x) is x and distributed.all_gather_no_grad(x) is x
    assert (distributed.world_size(), distributed.rank(), distributed.is_main_process()) == (1, 0, True)
    with distributed.node_leader_first():  # no process group: just runs the block
        ran = True
    assert ran
    distributed.scale_grad(x, 3.0).sum().backward()
    torch.testing.assert_close(x.grad, torch.full((3, 2), 3.0))


@pytest.mark.slow
def test_torchrun_trains_with_two_gloo_processes(tmp_path):
    from clusterloss.checkpoint import load_checkpoint

    config = Path(__file__).resolve().parents[1] / "configs" / "digits_convnet.yaml"
    run_dir = tmp_path / "run"
    sets = ["train.epochs=1", "train.steps_per_epoch=3", "train.progress=false", "train.batch_samples=8",
            "eval.kmeans_seeds=[0]", "train.checkpoint_every_steps=2"]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
           f"--master_port={_free_port()}", "-m", "clusterloss", "train", "--config", str(config),
           "--run-dir", str(run_dir),
           *[f"--set={s}" for s in sets]]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("finished") == 1  # only rank 0 reports
    ckpt = load_checkpoint(run_dir / "last.pt")
    assert (ckpt["world_size"], ckpt["step"], len(ckpt["rng"]["ranks"])) == (2, 3, 2)
    assert (run_dir / "best.pt").exists() and (run_dir / "metrics.jsonl").exists()

"""Learning-rate schedules (per iteration) and the SGD parameter groups."""

import math

import pytest
import torch

from clusterloss.losses import build_loss
from clusterloss.models import build_model
from clusterloss.schedule import IterationSchedule, build_sgd, lr_factor


def test_step_schedule_divides_by_ten_at_half_and_three_quarters():
    factors = [lr_factor(s, 100, "step", (0.5, 0.75), 0.1) for s in range(100)]
    assert factors[:50] == [1.0] * 50
    assert all(math.isclose(f, 0.1) for f in factors[50:75])
    assert all(math.isclose(f, 0.01) for f in factors[75:])


def test_warmup_then_cosine():
    assert [lr_factor(s, 10, "cosine", warmup_steps=4) for s in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert lr_factor(4, 10, "cosine", warmup_steps=4) == 1.0
    assert math.isclose(lr_factor(7, 10, "cosine", warmup_steps=4), 0.5)  # halfway through the cosine
    assert math.isclose(lr_factor(10, 10, "cosine", warmup_steps=4, min_factor=0.1), 0.1)
    assert lr_factor(5, 10, "constant") == 1.0
    with pytest.raises(ValueError, match="unknown schedule"):
        lr_factor(0, 10, "linear")


def test_iteration_schedule_state_round_trip():
    model = torch.nn.Linear(2, 2)
    opt = build_sgd(model, torch.nn.Module(), lr=0.1)
    sched = IterationSchedule(opt, total_steps=8, schedule="step", milestones=(0.5,))
    for _ in range(5):
        sched.step()
    assert math.isclose(sched.get_last_lr()[0], 0.01)
    opt2 = build_sgd(model, torch.nn.Module(), lr=0.1)
    sched2 = IterationSchedule(opt2, total_steps=8, schedule="step", milestones=(0.5,))
    sched2.load_state_dict(sched.state_dict())
    assert sched2.get_last_lr() == sched.get_last_lr()


def test_sgd_groups_no_decay_and_loss_parameters():
    model = build_model("convnet", embedding_dim=4, in_channels=1, width=4)
    loss = build_loss("proxy_anchor", 4, 3)
    opt = build_sgd(model, loss, lr=0.1, weight_decay=1e-4, no_decay_bn_bias=True, loss_lr_multiplier=100)
    groups = {g["name"]: g for g in opt.param_groups}
    assert set(groups) == {"model", "model_no_decay", "loss"}
    assert all(p.dim() == 4 or p.dim() == 2 for p in groups["model"]["params"])  # conv + linear weights
    assert groups["model_no_decay"]["weight_decay"] == 0.0
    assert groups["loss"]["base_lr"] == pytest.approx(10.0)
    n_model = sum(len(groups[k]["params"]) for k in ("model", "model_no_decay"))
    assert n_model == len(list(model.parameters()))
    assert opt.defaults["nesterov"] is True
    assert len(build_sgd(model, torch.nn.Module(), lr=0.1).param_groups) == 1


def test_head_lr_multiplier_splits_the_head_and_the_schedule_scales_both():
    from clusterloss.schedule import build_optimizer

    model = build_model("convnet", embedding_dim=4, in_channels=1, width=4)
    opt = build_optimizer("sgd", model, torch.nn.Module(), lr=0.01, no_decay_bn_bias=True,
                          head_lr_multiplier=10)
    groups = {g["name"]: g for g in opt.param_groups}
    assert list(groups) == ["model", "model_no_decay", "head", "head_no_decay"]  # fixed order
    head_ids = {id(p) for p in model.head.parameters()}
    assert {id(p) for g in ("head", "head_no_decay") for p in groups[g]["params"]} == head_ids
    assert not head_ids & {id(p) for g in ("model", "model_no_decay") for p in groups[g]["params"]}
    assert groups["head"]["base_lr"] == pytest.approx(0.1)
    assert groups["model"]["base_lr"] == pytest.approx(0.01)
    sched = IterationSchedule(opt, total_steps=4, schedule="step", milestones=(0.5,))
    sched.step()
    sched.step()
    assert groups["head"]["lr"] == pytest.approx(0.01) and groups["model"]["lr"] == pytest.approx(0.001)


def test_frozen_backbone_leaves_only_head_groups_and_all_frozen_is_an_error():
    from clusterloss.schedule import build_optimizer

    model = build_model("convnet", embedding_dim=4, in_channels=1, width=4)
    for p in model.backbone.parameters():
        p.requires_grad_(False)
    opt = build_optimizer("adamw", model, torch.nn.Module(), lr=1e-3, head_lr_multiplier=10)
    assert [g["name"] for g in opt.param_groups] == ["head"]
    for p in model.parameters():
        p.requires_grad_(False)
    with pytest.raises(ValueError, match="nothing to train"):
        build_optimizer("sgd", model, torch.nn.Module(), lr=0.1)


@pytest.mark.parametrize("name,cls", [("sgd", torch.optim.SGD), ("adam", torch.optim.Adam),
                                      ("adamw", torch.optim.AdamW), ("rmsprop", torch.optim.RMSprop)])
def test_optimizer_choice_steps_like_torch_itself(name, cls):
    from clusterloss.schedule import build_optimizer

    torch.manual_seed(0)
    ours, reference = torch.nn.Linear(3, 2), torch.nn.Linear(3, 2)
    reference.load_state_dict(ours.state_dict())
    opt = build_optimizer(name, ours, torch.nn.Module(), lr=0.01, weight_decay=0.1)
    kwargs = {"sgd": {"momentum": 0.9, "nesterov": True},
              "rmsprop": {"momentum": 0.9, "alpha": 0.9, "eps": 1e-10}}.get(name, {})  # TF 1.x defaults
    ref_opt = cls(reference.parameters(), lr=0.01, weight_decay=0.1, **kwargs)
    assert type(opt) is cls
    x = torch.randn(8, 3)
    for _ in range(3):
        for net, o in ((ours, opt), (reference, ref_opt)):
            o.zero_grad()
            net(x).square().sum().backward()
            o.step()
    for a, b in zip(ours.parameters(), reference.parameters(), strict=True):
        torch.testing.assert_close(a, b)
    with pytest.raises(ValueError, match="unknown optimizer"):
        build_optimizer("lamb", ours, torch.nn.Module(), lr=0.1)

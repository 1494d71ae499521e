"""Facility-location loss: hand-worked cases, gradients, degenerate inputs, errors, dtypes, determinism."""

import math

import pytest
import torch
from oracle_cache import cached_oracle

from clusterloss.losses.facility_location import (
    FacilityLocationDetails,
    FacilityLocationLoss,
    facility_location_details,
    facility_location_loss,
)


def _line(points):
    return torch.tensor([[float(p)] for p in points], dtype=torch.float64, requires_grad=True)


def test_hand_worked_four_points_on_a_line_with_interleaved_labels():
    # x = 0, 1, 3, 4 with labels 0, 1, 0, 1 (the classes interleave); gamma = 1, NMI.
    # Step 1 (single cluster, NMI 0): -row sums = -8, -6, -6, -8 -> point 1.
    # Step 2, dmin = (1, 0, 2, 3): candidate 0 -> energy -5, clustering {0},{1,2,3}, NMI 0.344 -> -4.344;
    #   candidates 2 and 3 -> energy -2, clustering {0,1},{2,3}, NMI 0 -> -1; tie, first wins -> 2.
    # F(pred) = -(1 + 0 + 0 + 1) = -2, margin = 1 * (1 - 0) = 1.
    # F~: class {0, 3}: column sums 3, 3 -> -3; class {1, 4}: -3 -> F~ = -6. Loss = -2 + 1 + 6 = 5.
    # d/dx: F(pred) = -(x1 - x0) - (x3 - x2), -F~ = (x2 - x0) + (x3 - x1) -> grad = (0, -2, 2, 0).
    x = _line([0, 1, 3, 4])
    labels = torch.tensor([0, 1, 0, 1])
    details = facility_location_details(x, labels, pam_iterations=0)
    loss = details.loss
    loss.backward()
    assert loss.item() == pytest.approx(5.0, abs=1e-12)
    assert details.greedy_medoids.tolist() == [1, 2]
    assert details.medoids.tolist() == [1, 2]
    assert details.assignment.tolist() == [0, 0, 1, 1]
    assert details.clustering_score == pytest.approx(0.0, abs=1e-12)
    assert x.grad.flatten().tolist() == pytest.approx([0.0, -2.0, 2.0, 0.0], abs=1e-12)
    # PAM, slot 0 over {0, 1}: both -1 + 1 * (1 - 0) = 0, first wins -> 0; slot 1 keeps 2. Same loss.
    x.grad = None
    details = facility_location_details(x, labels, pam_iterations=5)
    loss = details.loss
    loss.backward()
    assert details.medoids.tolist() == [0, 2] and details.greedy_medoids.tolist() == [1, 2]
    assert loss.item() == pytest.approx(5.0, abs=1e-12)
    assert x.grad.flatten().tolist() == pytest.approx([0.0, -2.0, 2.0, 0.0], abs=1e-12)


def test_hand_worked_geometry_agreeing_with_labels_gives_zero_loss_and_passes_gradient_at_zero():
    # Same points, labels 0, 0, 1, 1: greedy picks 1 then 2 (perfect clustering, NMI 1, margin 0),
    # F(pred) = -2 = F~ -> loss exactly 0; the hinge passes the (here cancelling) gradient at equality.
    x = _line([0, 1, 3, 4])
    details = facility_location_details(x, torch.tensor([0, 0, 1, 1]))
    loss = details.loss
    loss.backward()
    assert loss.item() == 0.0
    assert details.clustering_score == pytest.approx(1.0)
    assert x.grad.abs().max().item() == pytest.approx(0.0, abs=1e-12)


def test_gradcheck_float64():
    torch.manual_seed(3)
    x = torch.randn(7, 3, dtype=torch.float64, requires_grad=True)
    labels = torch.tensor([0, 0, 1, 1, 2, 2, 2])
    for kind in ("nmi", "ami"):
        assert torch.autograd.gradcheck(
            lambda e, kind=kind: facility_location_loss(e, labels, margin_type=kind, margin_multiplier=0.5),
            (x,),
        )


def test_degenerate_batches_are_defined():
    one = torch.randn(1, 4, requires_grad=True)
    details = facility_location_details(one, torch.tensor([3]))
    loss = details.loss
    loss.backward()
    assert loss.item() == 0.0 and details.medoids.tolist() == [0] and torch.isfinite(one.grad).all()

    x = torch.randn(6, 3, requires_grad=True)
    loss = facility_location_loss(x, torch.full((6,), 9))  # one class: F(pred) = F~, NMI 1
    assert loss.item() == pytest.approx(0.0, abs=1e-5)

    # All singletons: every point is a medoid, clustering perfect, loss 0 for every margin.
    for kind in ("nmi", "ami", "ari", "vmeasure", "const"):
        details = facility_location_details(x, torch.arange(6) * 5, margin_type=kind)
        loss = details.loss
        assert loss.item() == pytest.approx(0.0, abs=1e-6)
        assert sorted(details.medoids.tolist()) == list(range(6))

    same = torch.zeros(5, 2, requires_grad=True)  # all duplicates: all distances 0
    details = facility_location_details(same, torch.tensor([0, 0, 1, 1, 2]))
    loss = details.loss
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(same.grad).all()
    assert details.medoids.tolist() == [0, 1, 2]  # ties go to the first candidates

    near_b = torch.randn(9, 2)  # K close to B
    loss = facility_location_loss(near_b, torch.tensor([0, 1, 2, 3, 4, 5, 6, 7, 7]), margin_type="ami")
    assert torch.isfinite(loss)


def test_pam_off_keeps_greedy_medoids():
    torch.manual_seed(0)
    x = torch.randn(12, 3)
    details = facility_location_details(x, torch.arange(12) % 4, pam_iterations=0)
    assert torch.equal(details.medoids, details.greedy_medoids)


@pytest.mark.parametrize(
    ("embeddings", "labels", "kwargs", "message"),
    [
        (torch.tensor([[float("nan"), 0.0]]), torch.tensor([0]), {}, "NaN"),
        (torch.tensor([[float("inf"), 0.0]]), torch.tensor([0]), {}, "NaN or Inf"),
        (torch.zeros(0, 3), torch.zeros(0, dtype=torch.long), {}, "empty"),
        (torch.zeros(3), torch.tensor([0, 0, 1]), {}, "2-D"),
        (torch.zeros(3, 2), torch.tensor([0, 1]), {}, "shape"),
        (torch.zeros(3, 2), torch.tensor([0.0, 0.5, 1.0]), {}, "integer"),  # integral floats: a warning
        (torch.zeros(3, 2, dtype=torch.long), torch.tensor([0, 1, 1]), {}, "floating"),
        (torch.zeros(3, 2), torch.tensor([0, 1, 1]), {"margin_type": "f1"}, "margin_type"),
        (torch.zeros(3, 2), torch.tensor([0, 1, 1]), {"pam_iterations": -1}, "pam_iterations"),
        (torch.zeros(3, 2), torch.tensor([0, 1, 1]), {"margin_multiplier": math.nan}, "margin_multiplier"),
        (torch.zeros(3, 2), torch.tensor([0, 1, 1]), {"margin_multiplier": -1.0}, "margin_multiplier"),
        (torch.zeros(3, 2), torch.tensor([0, 1, 1]), {"margin_multiplier": True}, "margin_multiplier"),
        (torch.zeros(3, 2), torch.tensor([0, 1, 1]), {"pam_iterations": 2.0}, "pam_iterations"),
        ([[0.0, 1.0]], torch.tensor([0]), {}, "torch.Tensor"),
        (torch.zeros(1, 2), [0], {}, "torch.Tensor"),
        (torch.zeros(2, 2), torch.tensor([True, False]), {}, "integer"),
    ],
)
def test_bad_input_raises_value_error_naming_the_problem(embeddings, labels, kwargs, message):
    with pytest.raises(ValueError, match=message):
        facility_location_loss(embeddings, labels, **kwargs)


def test_module_checks_its_options_once_at_construction_and_then_only_the_inputs(monkeypatch):
    with pytest.raises(ValueError, match="margin_type"):
        FacilityLocationLoss(margin_type="nope")
    with pytest.raises(ValueError, match="margin_multiplier"):
        FacilityLocationLoss(margin_multiplier=-0.5)
    with pytest.raises(TypeError):
        FacilityLocationLoss(search="tensor")  # the knob of the removed second search
    module = FacilityLocationLoss(margin_type="ami", pam_iterations=1)
    from clusterloss.losses import facility_location

    calls = []
    monkeypatch.setattr(facility_location, "check_options", lambda *a: calls.append(a))
    x, labels = torch.randn(8, 3), torch.arange(8) % 2
    assert torch.isfinite(module(x, labels))
    assert isinstance(module.details(x, labels), FacilityLocationDetails)
    assert calls == []  # forward() does not re-check the options
    with pytest.raises(ValueError, match="shape"):
        module(x, labels[:5])


def test_deterministic_and_label_format_invariant():
    torch.manual_seed(1)
    x = torch.randn(16, 4, dtype=torch.float64)  # float64: relabeling reorders float sums over classes
    labels = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3, 0, 1, 2, 3, 4, 4, 5, 5])
    d0 = facility_location_details(x, labels)
    base = d0.loss
    d1 = facility_location_details(x, labels)
    again = d1.loss
    assert base.item() == again.item() and torch.equal(d0.medoids, d1.medoids)
    relabeled = torch.tensor([-7, 100, 3, 42, 9, -1])[labels]  # a bijection of the ids
    for lab in (relabeled, relabeled[:, None]):
        for kind in ("nmi", "const"):
            ref = facility_location_loss(x, labels, margin_type=kind)
            loss = facility_location_loss(x, lab, margin_type=kind)
            assert loss.item() == pytest.approx(ref.item(), abs=1e-9)


def test_dtypes():
    torch.manual_seed(2)
    x64 = torch.randn(10, 5, dtype=torch.float64)
    labels = torch.arange(10) % 3
    d64 = facility_location_details(x64, labels)
    l64 = d64.loss
    assert l64.dtype == torch.float64
    d32 = facility_location_details(x64.float(), labels)
    l32 = d32.loss
    assert l32.dtype == torch.float32 and torch.equal(d32.medoids, d64.medoids)
    assert l32.item() == pytest.approx(l64.item(), abs=1e-4)
    for half in (torch.bfloat16, torch.float16):
        xh = x64.to(half).requires_grad_()
        lh = facility_location_loss(xh, labels)
        lh.backward()
        assert lh.dtype == torch.float32 and xh.grad.dtype == half and torch.isfinite(xh.grad.float()).all()
        ref = facility_location_loss(xh.detach().float(), labels)
        assert lh.item() == pytest.approx(ref.item(), abs=1e-6)


def test_module_matches_function_and_details_have_the_contract_keys():
    torch.manual_seed(4)
    x = torch.randn(12, 3)
    labels = torch.arange(12) % 4
    module = FacilityLocationLoss(margin_multiplier=0.7, margin_type="ari", pam_iterations=2)
    loss = module(x, labels)
    details = module.details(x, labels)
    ref = facility_location_loss(x, labels, margin_multiplier=0.7, margin_type="ari", pam_iterations=2)
    assert loss.dim() == 0 and loss.item() == ref.item() == details.loss.item()
    assert details.num_clusters == 4 and details.classes.tolist() == [0, 1, 2, 3]
    assert details.margin == pytest.approx(0.7 * (1.0 - details.clustering_score))
    assert details.medoids.dtype == torch.long and details.medoids.shape == (4,)
    assert details.assignment.dtype == torch.long and details.assignment.shape == (12,)
    augmented = details.score_pred + details.margin - details.score_gt
    assert loss.item() == pytest.approx(max(0.0, augmented.item()), abs=1e-6)
    assert "ari" in repr(module)


def test_readme_example_equals_the_brute_force_oracle():
    # The README's example (32 L2-normalized embeddings, 8 classes x 4) with a fixed seed: the loss, the
    # medoids and the assignment are those of the oracle, and the gradient reaches the raw embeddings.
    torch.manual_seed(5)
    raw = torch.randn(32, 64, requires_grad=True)
    criterion = FacilityLocationLoss(margin_multiplier=1.0, margin_type="nmi", pam_iterations=5)
    embeddings = torch.nn.functional.normalize(raw, dim=1)
    labels = torch.arange(8).repeat_interleave(4)
    details = criterion.details(embeddings, labels)
    details.loss.backward()
    expected = cached_oracle(embeddings.detach().double().numpy(), labels.numpy(), 1.0, "nmi", 5)
    assert details.medoids.tolist() == expected["medoids"]
    assert details.assignment.tolist() == expected["assignment"].tolist()
    assert details.loss.item() == pytest.approx(expected["loss"], abs=1e-4) and expected["loss"] > 0
    assert raw.grad is not None and raw.grad.abs().sum() > 0


def test_caller_autocast_does_not_change_the_loss():
    # The usual AMP pattern computes the loss inside the autocast block; the distances must stay float32.
    torch.manual_seed(3)
    x = torch.nn.functional.normalize(torch.randn(64, 64), dim=1).requires_grad_()
    y = torch.arange(16).repeat_interleave(4)
    plain_details = facility_location_details(x, y)
    plain = plain_details.loss
    (grad_plain,) = torch.autograd.grad(plain, x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        inside_details = facility_location_details(x, y)
        inside = inside_details.loss
    (grad_inside,) = torch.autograd.grad(inside, x)
    assert inside.dtype == torch.float32
    assert torch.equal(inside, plain) and torch.equal(grad_inside, grad_plain)
    assert torch.equal(inside_details.medoids, plain_details.medoids)

"""Facility-location loss: hand-worked cases, gradients, degenerate inputs, errors, dtypes, determinism."""

import math

import pytest
import torch

from clusterloss.losses.facility_location import FacilityLocationLoss, facility_location_loss


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
    loss, details = facility_location_loss(x, labels, pam_iterations=0, return_details=True)
    loss.backward()
    assert loss.item() == pytest.approx(5.0, abs=1e-12)
    assert details["greedy_medoids"].tolist() == [1, 2]
    assert details["medoids"].tolist() == [1, 2]
    assert details["assignment"].tolist() == [0, 0, 1, 1]
    assert details["clustering_score"] == pytest.approx(0.0, abs=1e-12)
    assert x.grad.flatten().tolist() == pytest.approx([0.0, -2.0, 2.0, 0.0], abs=1e-12)
    # PAM, slot 0 over {0, 1}: both -1 + 1 * (1 - 0) = 0, first wins -> 0; slot 1 keeps 2. Same loss.
    x.grad = None
    loss, details = facility_location_loss(x, labels, pam_iterations=5, return_details=True)
    loss.backward()
    assert details["medoids"].tolist() == [0, 2] and details["greedy_medoids"].tolist() == [1, 2]
    assert loss.item() == pytest.approx(5.0, abs=1e-12)
    assert x.grad.flatten().tolist() == pytest.approx([0.0, -2.0, 2.0, 0.0], abs=1e-12)


def test_hand_worked_geometry_agreeing_with_labels_gives_zero_loss_and_passes_gradient_at_zero():
    # Same points, labels 0, 0, 1, 1: greedy picks 1 then 2 (perfect clustering, NMI 1, margin 0),
    # F(pred) = -2 = F~ -> loss exactly 0; the hinge passes the (here cancelling) gradient at equality.
    x = _line([0, 1, 3, 4])
    loss, details = facility_location_loss(x, torch.tensor([0, 0, 1, 1]), return_details=True)
    loss.backward()
    assert loss.item() == 0.0
    assert details["clustering_score"] == pytest.approx(1.0)
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


@pytest.mark.parametrize("search", ["compiled", "tensor"])
def test_degenerate_batches_are_defined(search):
    one = torch.randn(1, 4, requires_grad=True)
    loss, details = facility_location_loss(one, torch.tensor([3]), return_details=True, search=search)
    loss.backward()
    assert loss.item() == 0.0 and details["medoids"].tolist() == [0] and torch.isfinite(one.grad).all()

    x = torch.randn(6, 3, requires_grad=True)
    loss = facility_location_loss(x, torch.full((6,), 9), search=search)  # one class: F(pred) = F~, NMI 1
    assert loss.item() == pytest.approx(0.0, abs=1e-5)

    # All singletons: every point is a medoid, clustering perfect, loss 0 for every margin.
    for kind in ("nmi", "ami", "ari", "vmeasure", "const"):
        loss, details = facility_location_loss(x, torch.arange(6) * 5, margin_type=kind, return_details=True,
                                               search=search)
        assert loss.item() == pytest.approx(0.0, abs=1e-6)
        assert sorted(details["medoids"].tolist()) == list(range(6))

    same = torch.zeros(5, 2, requires_grad=True)  # all duplicates: all distances 0
    loss, details = facility_location_loss(same, torch.tensor([0, 0, 1, 1, 2]), return_details=True,
                                           search=search)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(same.grad).all()
    assert details["medoids"].tolist() == [0, 1, 2]  # ties go to the first candidates

    near_b = torch.randn(9, 2)  # K close to B
    loss = facility_location_loss(near_b, torch.tensor([0, 1, 2, 3, 4, 5, 6, 7, 7]), margin_type="ami",
                                  search=search)
    assert torch.isfinite(loss)


def test_pam_off_keeps_greedy_medoids():
    torch.manual_seed(0)
    x = torch.randn(12, 3)
    loss, details = facility_location_loss(x, torch.arange(12) % 4, pam_iterations=0, return_details=True)
    assert torch.equal(details["medoids"], details["greedy_medoids"])


@pytest.mark.parametrize(
    ("embeddings", "labels", "kwargs", "message"),
    [
        (torch.tensor([[float("nan"), 0.0]]), torch.tensor([0]), {}, "NaN"),
        (torch.tensor([[float("inf"), 0.0]]), torch.tensor([0]), {}, "NaN or Inf"),
        (torch.zeros(0, 3), torch.zeros(0, dtype=torch.long), {}, "empty"),
        (torch.zeros(3), torch.tensor([0, 0, 1]), {}, "2-D"),
        (torch.zeros(3, 2), torch.tensor([0, 1]), {}, "shape"),
        (torch.zeros(3, 2), torch.tensor([0.0, 1.0, 1.0]), {}, "integer"),
        (torch.zeros(3, 2, dtype=torch.long), torch.tensor([0, 1, 1]), {}, "floating"),
        (torch.zeros(3, 2), torch.tensor([0, 1, 1]), {"margin_type": "f1"}, "margin_type"),
        (torch.zeros(3, 2), torch.tensor([0, 1, 1]), {"pam_iterations": -1}, "pam_iterations"),
        (torch.zeros(3, 2), torch.tensor([0, 1, 1]), {"margin_multiplier": math.nan}, "margin_multiplier"),
        (torch.zeros(3, 2), torch.tensor([0, 1, 1]), {"search": "numpy"}, "unknown search"),
    ],
)
def test_bad_input_raises_value_error_naming_the_problem(embeddings, labels, kwargs, message):
    with pytest.raises(ValueError, match=message):
        facility_location_loss(embeddings, labels, **kwargs)


def test_module_rejects_bad_config_at_construction():
    with pytest.raises(ValueError, match="margin_type"):
        FacilityLocationLoss(margin_type="nope")
    with pytest.raises(ValueError, match="search"):
        FacilityLocationLoss(search="fast")


def test_without_numba_auto_falls_back_to_the_tensor_search_and_compiled_says_what_to_install(monkeypatch):
    from clusterloss.losses import facility_search

    torch.manual_seed(2)
    x, labels = torch.randn(12, 3), torch.arange(12) % 3
    _, with_kernel = facility_location_loss(x, labels, return_details=True)
    monkeypatch.setattr(facility_search, "compiled_search_available", lambda: False)
    _, fallback = facility_location_loss(x, labels, return_details=True)
    assert torch.equal(fallback["medoids"], with_kernel["medoids"])
    with pytest.raises(ValueError, match="pip install numba"):
        facility_location_loss(x, labels, search="compiled")


def test_a_compiled_search_that_does_not_load_warns_once_and_the_loss_still_works(monkeypatch):
    import sys
    import warnings

    from clusterloss.losses import facility_search

    facility_search.compiled_search_available.cache_clear()
    monkeypatch.setattr(facility_search.importlib.util, "find_spec", lambda name: object())  # "installed"
    monkeypatch.setitem(sys.modules, "clusterloss.losses.facility_search_kernel", None)  # ... but fails
    try:
        with pytest.warns(RuntimeWarning, match="does not load"):
            assert not facility_search.compiled_search_available()
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # the answer is cached: no second warning
            loss = facility_location_loss(torch.randn(8, 3), torch.arange(8) % 2)
        assert torch.isfinite(loss)
    finally:
        facility_search.compiled_search_available.cache_clear()


def test_deterministic_and_label_format_invariant():
    torch.manual_seed(1)
    x = torch.randn(16, 4, dtype=torch.float64)  # float64: relabeling reorders float sums over classes
    labels = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3, 0, 1, 2, 3, 4, 4, 5, 5])
    base, d0 = facility_location_loss(x, labels, return_details=True)
    again, d1 = facility_location_loss(x, labels, return_details=True)
    assert base.item() == again.item() and torch.equal(d0["medoids"], d1["medoids"])
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
    l64, d64 = facility_location_loss(x64, labels, return_details=True)
    assert l64.dtype == torch.float64
    l32, d32 = facility_location_loss(x64.float(), labels, return_details=True)
    assert l32.dtype == torch.float32 and torch.equal(d32["medoids"], d64["medoids"])
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
    module = FacilityLocationLoss(
        margin_multiplier=0.7, margin_type="ari", pam_iterations=2, return_details=True
    )
    loss, details = module(x, labels)
    ref = facility_location_loss(x, labels, margin_multiplier=0.7, margin_type="ari", pam_iterations=2)
    assert loss.item() == ref.item()
    for key in ("medoids", "greedy_medoids", "assignment", "score_pred", "score_gt", "clustering_score"):
        assert key in details
    assert details["medoids"].dtype == torch.long and details["medoids"].shape == (4,)
    assert details["assignment"].dtype == torch.long and details["assignment"].shape == (12,)
    augmented = details["score_pred"] + details["margin"] - details["score_gt"]
    assert loss.item() == pytest.approx(max(0.0, augmented.item()), abs=1e-6)
    assert "ari" in repr(module)


def test_usage_example_runs():
    # The README's usage example, verbatim.
    from clusterloss.losses.facility_location import FacilityLocationLoss

    criterion = FacilityLocationLoss(margin_multiplier=1.0, margin_type="nmi", pam_iterations=5)
    embeddings = torch.nn.functional.normalize(torch.randn(32, 64, requires_grad=True), dim=1)
    labels = torch.arange(8).repeat_interleave(4)  # 8 classes x 4 samples
    loss = criterion(embeddings, labels)
    loss.backward()
    assert math.isfinite(loss.item())


def test_caller_autocast_does_not_change_the_loss():
    # The usual AMP pattern computes the loss inside the autocast block; the distances must stay float32.
    torch.manual_seed(3)
    x = torch.nn.functional.normalize(torch.randn(64, 64), dim=1).requires_grad_()
    y = torch.arange(16).repeat_interleave(4)
    plain, plain_details = facility_location_loss(x, y, return_details=True)
    (grad_plain,) = torch.autograd.grad(plain, x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        inside, inside_details = facility_location_loss(x, y, return_details=True)
    (grad_inside,) = torch.autograd.grad(inside, x)
    assert inside.dtype == torch.float32
    assert torch.equal(inside, plain) and torch.equal(grad_inside, grad_plain)
    assert torch.equal(inside_details["medoids"], plain_details["medoids"])

"""Parameterized AP Loss (gp_loss.pap): substitutions, θ layout, the loss against a loop reference."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from gp_loss.errors import GpLossError
from gp_loss.pap import (
    FUNCTION_NAMES,
    SHARED_THETA_SIZE,
    THETA_ORDER,
    THETA_SIZE,
    PAPParameters,
    PiecewiseLinear,
    Power,
    Sigmoid,
    control_points_from_theta,
    dense_ious,
    grad_scale_from_theta,
    pap_loss,
    pap_loss_terms,
    positive_indices,
    positive_ious,
    scale_gradient,
    theta_from_control_points,
)
from gp_loss.pap.substitutions import RETINANET_COCO_CONTROL_POINTS

unit = st.floats(min_value=0.0, max_value=1.0, allow_nan=False)
theta8 = st.lists(unit, min_size=8, max_size=8)


# ---------------------------------------------------------------------------------------------
# substitutions

def _grid(f: PiecewiseLinear) -> torch.Tensor:
    xs = [p[0] for p in f.points]
    extra = [x + e for x in xs for e in (-1e-9, 0.0, 1e-9)]
    return torch.tensor(sorted(set(np.linspace(0, 1, 201).tolist() + extra)), dtype=torch.float64)


@settings(max_examples=100, deadline=None)
@given(theta8)
def test_piecewise_monotone_through_corners(theta):
    f = PiecewiseLinear.from_theta(theta)
    x = _grid(f)
    y = f(x)
    assert torch.all(y[1:] >= y[:-1]), "not monotone"
    assert torch.all((y >= 0) & (y <= 1))
    ends = f(torch.tensor([0.0, 1.0, -0.5, 1.5, -1e9, 1e9], dtype=torch.float64))
    assert ends.tolist() == [0.0, 1.0, 0.0, 1.0, 0.0, 1.0]
    # control points monotone in x and y, from (0, 0) to (1, 1)
    pts = control_points_from_theta(theta)
    assert pts[0] == (0.0, 0.0) and pts[-1] == (1.0, 1.0)
    assert all(b[0] >= a[0] and b[1] >= a[1] for a, b in zip(pts, pts[1:]))
    # float32 too
    y32 = f(x.float())
    assert torch.all(y32[1:] >= y32[:-1]) and float(y32[0]) == 0.0 and float(y32[-1]) == 1.0


@settings(max_examples=100, deadline=None)
@given(st.lists(st.floats(min_value=0.02, max_value=0.98), min_size=8, max_size=8),
       st.lists(st.floats(min_value=0.0, max_value=1.0), min_size=5, max_size=5))
def test_piecewise_matches_interpolation_and_slope(theta, xs):
    f = PiecewiseLinear.from_theta(theta)
    px = np.array([p[0] for p in f.points])
    py = np.array([p[1] for p in f.points])
    x = torch.tensor(xs, dtype=torch.float64, requires_grad=True)
    y = f(x)
    np.testing.assert_allclose(y.detach().numpy(), np.interp(xs, px, py), rtol=0, atol=1e-12)
    y.sum().backward()
    for xv, g in zip(xs, x.grad.tolist()):
        seg = max(0, min(4, int(np.searchsorted(px, xv, side="left")) - 1))
        slope = (py[seg + 1] - py[seg]) / (px[seg + 1] - px[seg])
        assert g == pytest.approx(slope, rel=1e-9)


def test_control_point_formula_and_layout():
    theta = [0.5, 0.25, 0.5, 0.5, 0.0, 1.0, 0.5, 0.0]  # interleaved x, y
    assert control_points_from_theta(theta) == (
        (0.0, 0.0), (0.5, 0.25), (0.75, 0.625), (0.75, 1.0), (0.875, 1.0), (1.0, 1.0))
    assert theta_from_control_points(control_points_from_theta(theta)) == pytest.approx(theta)


def test_jump_is_left_continuous_and_corners_pinned():
    # two points at x = 0.5: (0.5, 0.2) then (0.5, 0.6): the function jumps at 0.5
    f = PiecewiseLinear([(0, 0), (0.5, 0.2), (0.5, 0.6), (0.75, 0.8), (0.9, 0.9), (1, 1)])
    y = f(torch.tensor([0.25, 0.5, 0.5 + 1e-12, 0.6], dtype=torch.float64))
    assert y.tolist() == pytest.approx([0.1, 0.2, 0.6, 0.68])
    # degenerate corners: first point at x = 0 with y > 0, last at x = 1 with y < 1
    g = PiecewiseLinear.from_theta([0.0, 0.5, 1.0, 0.2, 0.5, 0.5, 0.5, 0.5])
    assert g.points[1] == (0.0, 0.5) and g.points[2] == (1.0, 0.6)
    y = g(torch.tensor([0.0, 1e-9, 0.5, 1.0], dtype=torch.float64))
    assert y[0] == 0 and y[3] == 1
    assert float(y[1]) == pytest.approx(0.5, abs=1e-8) and float(y[2]) == pytest.approx(0.55)


def test_identity_and_named_values():
    x = torch.tensor([-0.3, 0.0, 0.1, 0.37, 0.5, 0.99, 1.0, 1.7], dtype=torch.float64)
    xc = x.clamp(0, 1)
    ident = PAPParameters.identity()
    assert ident.grad_scale == 1.0 and ident.name == "identity"
    for f in ident.functions().values():
        assert torch.equal(f(x), xc)
        assert f.points == tuple((v, v) for v in (0.0, 0.2, 0.4, f.points[3][0], 0.8, 1.0))
    lin = PAPParameters.named("linear")
    assert lin.H1 == ident.H1 and lin.grad_scale == 1.0
    sq = PAPParameters.named("square")
    assert torch.allclose(sq.I2(x), xc ** 2)
    rt = PAPParameters.named("sqrt")
    assert torch.allclose(rt.H2(x), xc.sqrt())
    sig = PAPParameters.named("sigmoid")
    assert torch.allclose(sig.I1(x[1:7]), torch.sigmoid(2 * x[1:7] - 1))
    d = torch.tensor([-3.0, -0.5, 0.0, 2.5], dtype=torch.float64)
    assert torch.allclose(sig.H1.of_difference(d), torch.sigmoid(d))
    assert torch.allclose(sq.H1.of_difference(d), ((d / 2 + 0.5).clamp(0, 1)) ** 2)
    for name in ("sigmoid", "sqrt", "linear", "square"):
        p = PAPParameters.named(name)
        assert p.grad_scale == 1.0
        assert set(p.control_points()) == set(FUNCTION_NAMES)
    # sqrt's derivative at 0 is finite (0), not inf/NaN
    z = torch.zeros(3, dtype=torch.float64, requires_grad=True)
    rt.H2(z).sum().backward()
    assert torch.isfinite(z.grad).all()
    with pytest.raises(GpLossError, match="unknown PAP substitution"):
        PAPParameters.named("cubic")


def test_theta_order_shared_and_grad_scale():
    blocks = [[0.1 * (k + 1)] * 8 for k in range(5)]
    theta = [v for b in blocks for v in b] + [0.75]
    p = PAPParameters.from_theta(theta)
    for k, name in enumerate(THETA_ORDER):
        assert getattr(p, name) == PiecewiseLinear.from_theta(blocks[k])
    assert THETA_ORDER == ("H2", "I2", "I3", "I1", "H1") and THETA_SIZE == 41
    assert p.grad_scale == pytest.approx(10 ** 0.5)
    assert grad_scale_from_theta(0.0) == pytest.approx(0.1) and grad_scale_from_theta(1.0) == pytest.approx(10)
    shared = PAPParameters.from_theta(blocks[2] + [0.5], shared=True)
    assert SHARED_THETA_SIZE == 9 and shared.grad_scale == 1.0
    assert shared.theta == tuple(blocks[2] * 5 + [0.5])
    assert all(f == PiecewiseLinear.from_theta(blocks[2]) for f in shared.functions().values())


def test_published_retinanet_parameters():
    p = PAPParameters.named("searched_retinanet_coco")
    for row, name in zip(RETINANET_COCO_CONTROL_POINTS, THETA_ORDER):
        pts = getattr(p, name).points
        assert [v for pt in pts for v in pt] == pytest.approx(list(row), abs=1e-12)
    assert p.grad_scale == 4.1231


@settings(max_examples=50, deadline=None)
@given(st.lists(unit, min_size=41, max_size=41))
def test_json_round_trip(theta):
    p = PAPParameters.from_theta(theta)
    q = PAPParameters.from_json(p.to_json())
    assert q.theta == p.theta and q.functions() == p.functions() and q.grad_scale == p.grad_scale
    assert PAPParameters.from_json(json.dumps(theta)).theta == p.theta


def test_json_named_and_errors():
    for name in ("sigmoid", "sqrt", "linear", "square", "identity"):
        p = PAPParameters.named(name)
        q = PAPParameters.from_json(p.to_json())
        assert q.functions() == p.functions() and q.grad_scale == p.grad_scale
    good = [0.5] * 41
    bad_cases = {
        "not json{": "not JSON",
        json.dumps(good[:40]): "exactly 41",
        json.dumps(good + [0.5]): "exactly 41",
        json.dumps(good[:40] + [1.5]): "value 40 = 1.5 is outside",
        json.dumps(good[:3] + [-0.1] + good[4:]): "value 3",
        json.dumps(good[:40] + [True]): "not a number",
        json.dumps(good[:40] + ["0.5"]): "not a number",
        "[" + ",".join(["0.5"] * 40 + ["NaN"]) + "]": "not finite",
        json.dumps({"theta": good, "format": "other"}): "format",
        json.dumps({"format": "gp-loss/pap-parameters"}): "no 'theta'",
        json.dumps({"named": "cubic"}): "unknown",
        json.dumps({"theta": {"a": 1}}): "expected a list",
        json.dumps("theta"): "expected a JSON object",
    }
    for text, msg in bad_cases.items():
        with pytest.raises(GpLossError, match=msg):
            PAPParameters.from_json(text)
    with pytest.raises(GpLossError, match="exactly 9"):
        PAPParameters.from_theta([0.5] * 41, shared=True)
    with pytest.raises(GpLossError, match="exactly 41"):
        PAPParameters.from_theta([0.5] * 9)


# ---------------------------------------------------------------------------------------------
# a loop reference: pure Python loops over positives and candidates, 0-d tensors for autograd

def _ref_apply(f, x):
    """f(clamp(x, 0, 1)) on a 0-d tensor, written independently of gp_loss.pap's evaluation."""
    if isinstance(f, Sigmoid):
        return torch.sigmoid(2 * x - 1)
    xc = torch.clamp(x, 0.0, 1.0)
    if isinstance(f, Power):
        return xc ** f.exponent
    pts = f.points
    v = float(xc.detach())
    if v <= 0.0:
        return xc * 0.0 + xc * ((pts[1][1] - pts[0][1]) / (pts[1][0] - pts[0][0]) if pts[1][0] > 0 else 0.0)
    for (xa, ya), (xb, yb) in zip(pts, pts[1:]):
        if xa < v <= xb:
            return ya + (yb - ya) / (xb - xa) * (xc - xa)
    raise AssertionError("unreachable")


def _ref_h(f, d):
    if isinstance(f, Sigmoid):
        return torch.sigmoid(d)
    return _ref_apply(f, d / 2 + 0.5)


def reference_loss(logits, targets, ious, params, top_k, block, constant_denominator=False):
    """The loss by the formula, one positive and one candidate at a time."""
    t = targets.tolist()
    pos = [m for m, v in enumerate(t) if v == 1]
    valid = [m for m, v in enumerate(t) if v != -1]
    cand = sorted(valid, key=lambda m: -float(logits[m].detach()))[:top_k]
    scale = params.grad_scale
    u = {}
    for p, m in enumerate(pos):
        q = (ious[p] + 1) / 2
        u[m] = q.detach() + scale * (q - q.detach())  # gradient scaled, value unchanged
    zero = torch.zeros((), dtype=logits.dtype)
    total = zero
    for i in pos:
        num, den = zero, zero
        for j in cand:
            d = logits[j] - logits[i]
            h1 = _ref_h(params.H1, d)
            if constant_denominator:
                h1 = float(h1.detach())
            elif block:
                h1 = h1.detach()
            num = num + _ref_h(params.H2, d) * (1 - _ref_apply(params.I2, u.get(j, zero)))
            den = den + h1
        total = total + (1 - _ref_apply(params.I1, u[i])) + _ref_apply(params.I3, u[i]) * num / den
    return total / len(pos)


def _random_case(seed, m=15, p_pos=0.3, p_ign=0.15):
    g = torch.Generator().manual_seed(seed)
    r = torch.rand(m, generator=g, dtype=torch.float64)
    targets = torch.zeros(m)
    targets[r < p_pos] = 1
    targets[(r >= p_pos) & (r < p_pos + p_ign)] = -1
    if not (targets == 1).any():
        targets[0] = 1
    logits = torch.randn(m, generator=g, dtype=torch.float64) * 1.2
    ious = torch.rand(int((targets == 1).sum()), generator=g, dtype=torch.float64) * 2 - 1
    return logits, targets, ious


def _params(kind, seed):
    g = torch.Generator().manual_seed(1000 + seed)
    if kind == "separate":
        return PAPParameters.from_theta((torch.rand(41, generator=g) * 0.9 + 0.05).tolist())
    if kind == "shared":
        return PAPParameters.from_theta((torch.rand(9, generator=g) * 0.9 + 0.05).tolist(), shared=True)
    return PAPParameters.named(kind)


def _grads(fn, logits, ious):
    lg = logits.clone().requires_grad_()
    ig = ious.clone().requires_grad_()
    value = fn(lg, ig)
    value.backward()
    return float(value.detach()), lg.grad, ig.grad


@pytest.mark.parametrize("kind", ["separate", "shared", "identity", "square", "sigmoid", "sqrt"])
@pytest.mark.parametrize("block", [True, False])
@pytest.mark.parametrize("seed", range(4))
def test_loss_matches_loop_reference(kind, block, seed):
    logits, targets, ious = _random_case(seed)
    params = _params(kind, seed)
    for top_k in (100, 6):
        v, gl, gi = _grads(lambda lg, ig: pap_loss(lg, targets, ig, params, top_k, block), logits, ious)
        rv, rgl, rgi = _grads(lambda lg, ig: reference_loss(lg, targets, ig, params, top_k, block),
                              logits, ious)
        assert v == pytest.approx(rv, rel=1e-10, abs=1e-12)
        torch.testing.assert_close(gl, rgl, rtol=1e-9, atol=1e-12)
        torch.testing.assert_close(gi, rgi, rtol=1e-9, atol=1e-12)
        terms = pap_loss_terms(logits, targets, ious, params, top_k, block)
        assert terms.shape == ious.shape and float(terms.mean()) == pytest.approx(v, rel=1e-12)


@pytest.mark.parametrize("kind", ["separate", "shared"])
def test_blocked_h1_contributes_no_gradient(kind):
    logits, targets, ious = _random_case(7, m=20)
    params = _params(kind, 7)
    blocked = _grads(lambda lg, ig: pap_loss(lg, targets, ig, params, 100, True), logits, ious)
    const = _grads(lambda lg, ig: reference_loss(lg, targets, ig, params, 100, False,
                                                 constant_denominator=True), logits, ious)
    unblocked = _grads(lambda lg, ig: pap_loss(lg, targets, ig, params, 100, False), logits, ious)
    assert blocked[0] == pytest.approx(unblocked[0], rel=1e-12)  # same value
    torch.testing.assert_close(blocked[1], const[1], rtol=1e-9, atol=1e-12)
    assert (blocked[1] - unblocked[1]).abs().max() > 1e-4  # the ablation does differ
    # the denominator has no ious in it: their gradient is the same either way
    torch.testing.assert_close(blocked[2], unblocked[2])


# ---------------------------------------------------------------------------------------------
# a ranking by hand, every substitution the identity

# flattened entries: n1, p1, ignored, n2, p2, n3
HAND_LOGITS = [0.2, 0.6, 5.0, -0.4, 0.0, -1.5]
HAND_TARGETS = [0, 1, -1, 0, 1, 0]
HAND_GIOUS = [0.6, 0.0]  # p1, p2 -> qualities u = (giou + 1)/2 = 0.8, 0.5


def _hand(top_k=100, **kw):
    return float(pap_loss(torch.tensor(HAND_LOGITS, dtype=torch.float64), torch.tensor(HAND_TARGETS),
                          torch.tensor(HAND_GIOUS, dtype=torch.float64), PAPParameters.identity(),
                          top_k, **kw))


def test_identity_plain_ap_loss_by_hand():
    # H(x) = clamp((s_j - s_i)/2 + 0.5, 0, 1); term_i = (1 - u_i) + u_i * sum_j H (1 - u_j) / sum_j H,
    # j over the valid entries (the ignored 5.0 never counts), u_j = 0 for a negative.
    # p1 (s = 0.6, u = 0.8):   j = p1: d = 0 -> 0.5; p2: d = -0.6 -> 0.2; n1: d = -0.4 -> 0.3;
    #   n2: d = -1.0 -> 0; n3: d = -2.1 -> 0.       rank = 0.5 + 0.2 + 0.3 = 1.0
    #   above = 0.5*(1-0.8) + 0.2*(1-0.5) + 0.3*1 = 0.1 + 0.1 + 0.3 = 0.5
    #   term = (1 - 0.8) + 0.8 * 0.5 / 1.0 = 0.2 + 0.4 = 0.6
    # p2 (s = 0.0, u = 0.5):   p1: d = 0.6 -> 0.8; p2: 0.5; n1: d = 0.2 -> 0.6; n2: d = -0.4 -> 0.3;
    #   n3: d = -1.5 -> 0.                           rank = 0.8 + 0.5 + 0.6 + 0.3 = 2.2
    #   above = 0.8*0.2 + 0.5*0.5 + 0.6*1 + 0.3*1 = 0.16 + 0.25 + 0.6 + 0.3 = 1.31
    #   term = (1 - 0.5) + 0.5 * 1.31 / 2.2 = 0.5 + 0.655/2.2
    expected = (0.6 + 0.5 + 0.655 / 2.2) / 2  # 0.698863636...
    assert _hand() == pytest.approx(expected, rel=1e-12)
    assert _hand(block_h1_gradient=False) == pytest.approx(expected, rel=1e-12)


def test_top_k_by_hand():
    # top_k = 3: candidates p1 (0.6), n1 (0.2), p2 (0.0); n2, n3 and the ignored entry drop out.
    # p1: rank = 0.5 + 0.3 + 0.2 = 1.0, above = 0.1 + 0.3 + 0.1 -> term 0.6 (n2, n3 added 0 anyway)
    # p2: rank = 0.8 + 0.6 + 0.5 = 1.9, above = 0.16 + 0.6 + 0.25 = 1.01 -> 0.5 + 0.505/1.9
    assert _hand(3) == pytest.approx((0.6 + 0.5 + 0.505 / 1.9) / 2, rel=1e-12)
    # top_k = 2: candidates p1, n1; p2 is outside the top k but still a positive row (not its own
    # candidate). p1: rank 0.5 + 0.3 = 0.8, above 0.1 + 0.3 = 0.4 -> 0.2 + 0.8*0.4/0.8 = 0.6
    # p2: rank 0.8 + 0.6 = 1.4, above 0.16 + 0.6 = 0.76 -> 0.5 + 0.5*0.76/1.4
    assert _hand(2) == pytest.approx((0.6 + 0.5 + 0.38 / 1.4) / 2, rel=1e-12)


def test_ignored_entries_never_count():
    logits, targets, ious = _random_case(3, m=30, p_ign=0.3)
    params = _params("separate", 3)
    ign = targets == -1
    base = pap_loss(logits, targets, ious, params, top_k=8)
    moved = logits.clone()
    moved[ign] = torch.linspace(50, 60, int(ign.sum()), dtype=torch.float64)  # would top every ranking
    lg = moved.clone().requires_grad_()
    loss = pap_loss(lg, targets, ious, params, top_k=8)
    assert float(loss.detach()) == pytest.approx(float(base), rel=1e-12)
    loss.backward()
    assert torch.all(lg.grad[ign] == 0)


def test_top_k_keeps_the_highest_valid_logits():
    logits, targets, ious = _random_case(11, m=40, p_pos=0.15)
    logits = logits + 3.0 * (targets == 1)  # every positive among the top k: then dropping the
    params = _params("separate", 11)       # negatives below it is the same as ignoring them
    k = int((targets == 1).sum()) + 5
    valid = (targets != -1).nonzero().reshape(-1)
    order = valid[torch.argsort(logits[valid], descending=True)]
    assert (targets[order[:k]] == 1).sum() == (targets == 1).sum(), "case: all positives in the top k"
    dropped = targets.clone()
    dropped[order[k:]] = -1  # the rest are negatives: marking them ignored removes them
    assert float(pap_loss(logits, targets, ious, params, top_k=k)) == pytest.approx(
        float(pap_loss(logits, dropped, ious, params, top_k=10 ** 6)), rel=1e-12)
    lg = logits.clone().requires_grad_()
    pap_loss(lg, targets, ious, params, top_k=k).backward()
    assert torch.all(lg.grad[order[k:]] == 0) and torch.any(lg.grad[order[:k]] != 0)


# ---------------------------------------------------------------------------------------------
# per-image mode, gradient scale, helpers, edge cases

def test_per_image_mode_is_mean_of_image_losses():
    logits, targets, ious = _random_case(5, m=60)
    params = _params("separate", 5)
    g = torch.Generator().manual_seed(5)
    image = torch.randint(0, 3, (60,), generator=g)
    image[(image == 3)] = 0
    targets = targets.clone()
    # image 3 has entries but no positive: it is left out of the mean
    extra = 4
    logits = torch.cat([logits, torch.randn(extra, dtype=torch.float64, generator=g)])
    targets = torch.cat([targets, torch.zeros(extra)])
    image = torch.cat([image, torch.full((extra,), 3)])
    pos_img = image[targets == 1]
    for top_k in (100, 5):
        expected = []
        for b in range(3):
            m = image == b
            if (targets[m] == 1).any():
                expected.append(float(pap_loss(logits[m], targets[m], ious[pos_img == b], params, top_k)))
        got = pap_loss(logits, targets, ious, params, top_k, image_index=image)
        assert float(got) == pytest.approx(sum(expected) / len(expected), rel=1e-12)
    # and it differs from the batch-wide ranking
    assert float(got) != pytest.approx(float(pap_loss(logits, targets, ious, params, 5)), rel=1e-6)


def test_grad_scale_scales_iou_gradient_only():
    logits, targets, ious = _random_case(2, m=25)
    base_theta = (torch.rand(41, generator=torch.Generator().manual_seed(2)) * 0.9 + 0.05).tolist()
    one = PAPParameters.from_theta(base_theta[:40] + [0.5])
    big = PAPParameters.from_theta(base_theta[:40] + [0.9])
    assert one.grad_scale == 1.0 and big.grad_scale == pytest.approx(10 ** 0.8)
    v1, gl1, gi1 = _grads(lambda lg, ig: pap_loss(lg, targets, ig, one), logits, ious)
    v2, gl2, gi2 = _grads(lambda lg, ig: pap_loss(lg, targets, ig, big), logits, ious)
    assert v1 == v2
    torch.testing.assert_close(gl1, gl2)
    torch.testing.assert_close(gi2, gi1 * 10 ** 0.8)
    assert gi1.abs().max() > 0
    x = torch.tensor([1.0, 2.0], requires_grad=True)
    y = scale_gradient(x, 3.0)
    assert torch.equal(y, x.detach())
    (y * torch.tensor([1.0, 5.0])).sum().backward()
    assert x.grad.tolist() == [3.0, 15.0]


def test_positive_order_helpers():
    targets = torch.tensor([[0, 1, 0], [-1, -1, -1], [1, 0, 1]])
    dense = torch.tensor([[0.0, 0.3, 0.0], [0.0, 0.0, 0.0], [0.7, 0.0, 0.9]])
    assert positive_indices(targets).tolist() == [1, 6, 8]
    assert positive_ious(dense, targets).tolist() == pytest.approx([0.3, 0.7, 0.9])
    assert dense_ious(positive_ious(dense, targets), targets).tolist() == pytest.approx(dense.reshape(-1).tolist())
    # [anchors, classes] logits give the same loss as their flattening
    logits = torch.randn(3, 3, dtype=torch.float64)
    ious = torch.tensor([0.2, -0.4, 0.6], dtype=torch.float64)
    p = PAPParameters.named("square")
    flat = pap_loss(logits.reshape(-1), targets.reshape(-1), ious, p)
    assert float(pap_loss(logits, targets, ious, p)) == float(flat)


def test_no_positives_and_bad_inputs():
    logits = torch.randn(5, requires_grad=True)
    loss = pap_loss(logits, torch.tensor([0, 0, -1, 0, 0]), torch.zeros(0), PAPParameters.identity())
    assert float(loss.detach()) == 0.0
    loss.backward()
    assert torch.all(logits.grad == 0)
    p = PAPParameters.identity()
    with pytest.raises(GpLossError, match="2 ious for 1 positives"):
        pap_loss(torch.randn(3), torch.tensor([0, 1, 0]), torch.zeros(2), p)
    with pytest.raises(GpLossError, match="targets must be"):
        pap_loss(torch.randn(3), torch.tensor([0, 2, 1]), torch.zeros(1), p)
    with pytest.raises(GpLossError, match="top_k"):
        pap_loss(torch.randn(3), torch.tensor([0, 1, 0]), torch.zeros(1), p, top_k=0)
    with pytest.raises(GpLossError, match="3 logits but 2 targets"):
        pap_loss(torch.randn(3), torch.tensor([0, 1]), torch.zeros(1), p)
    with pytest.raises(GpLossError, match="image indices"):
        pap_loss(torch.randn(3), torch.tensor([0, 1, 0]), torch.zeros(1), p, image_index=torch.zeros(2))


def test_half_precision_logits_run_in_float32():
    logits, targets, ious = _random_case(4, m=20)
    p = _params("separate", 4)
    ref = float(pap_loss(logits.half().double(), targets, ious, p))
    got = pap_loss(logits.half(), targets, ious.float(), p)
    assert got.dtype == torch.float32 and float(got) == pytest.approx(ref, rel=1e-5)


# ---------------------------------------------------------------------------------------------
# memory and time

class _LargestTensor(torch.utils._python_dispatch.TorchDispatchMode):
    """Records the largest tensor any op produces (forward and backward)."""

    def __init__(self):
        super().__init__()
        self.largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in (out if isinstance(out, (tuple, list)) else (out,)):
            if isinstance(t, torch.Tensor):
                self.largest = max(self.largest, t.numel())
        return out


def test_large_batch_is_bounded_by_top_k():
    g = torch.Generator().manual_seed(0)
    m, num_pos, top_k = 200_000, 500, 20_000
    targets = torch.zeros(m)
    targets[torch.randperm(m, generator=g)[:2000]] = -1
    targets[torch.randperm(m, generator=g)[:num_pos]] = 1
    num_pos = int((targets == 1).sum())
    logits = torch.randn(m, generator=g).requires_grad_()
    ious = (torch.rand(num_pos, generator=g) * 2 - 1).requires_grad_()
    params = PAPParameters.named("searched_retinanet_coco")
    # What top_k promises is memory, checked here; the time of a step is `gp-loss bench pap`'s to measure.
    with _LargestTensor() as probe:
        loss = pap_loss(logits, targets, ious, params, top_k=top_k)
        loss.backward()
    assert math.isfinite(float(loss.detach())) and torch.isfinite(logits.grad).all() and torch.isfinite(ious.grad).all()
    assert probe.largest <= top_k * num_pos < m * num_pos  # never an [M, P] tensor
    assert probe.largest >= top_k * num_pos  # (the probe does see the [k, P] matrices)

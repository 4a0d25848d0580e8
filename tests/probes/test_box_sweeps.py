"""The box sweep's rank helper."""
import numpy as np

from gp_loss.probes.box_sweeps import centred_ranks


def test_ranks_share_ties_and_are_centred():
    v = np.array([[3.0, 1.0, 3.0, 2.0, 3.0], [0.0, 0.0, 0.0, 0.0, 0.0], [5.0, 4.0, 3.0, 2.0, 1.0]])
    # Ranks from 0: [3, 0, 3, 1, 3] with the three 3.0s sharing (2 + 3 + 4) / 3 = 3; mean 2.
    expected = np.array([[3.0, 0.0, 3.0, 1.0, 3.0], [2.0] * 5, [4.0, 3.0, 2.0, 1.0, 0.0]]) - 2
    assert np.array_equal(centred_ranks(v), expected)


# --- the sweep covers what a detector's regression branch sees ---------------------------------

import pytest  # noqa: E402

from gp_loss.language import parse_formula  # noqa: E402
from gp_loss.language.compile import compile_tree  # noqa: E402
from gp_loss.paper_losses import PAPER_LOSSES  # noqa: E402
from gp_loss.probes import box_sweeps  # noqa: E402
from gp_loss.probes.box_sweeps import SWEEP_TARGETS, box_sweep, judge_box_sweeps  # noqa: E402
from gp_loss.probes.convergence import ConvergenceSettings  # noqa: E402
from primitives import get_kind  # noqa: E402

SETTINGS = ConvergenceSettings()


def _judge(sweep, formula):
    k = get_kind("reg")
    out = compile_tree(k, parse_formula(k, formula))(*sweep.inputs)
    return judge_box_sweeps(sweep, out.double().numpy()[None], SETTINGS)[0]


@pytest.fixture(scope="module")
def sweeps():
    """The sweep, and the one on only its first three targets (all a few tens of pixels)."""
    full = box_sweep(SETTINGS)
    try:
        box_sweeps.SWEEP_TARGETS = SWEEP_TARGETS[:3]
        mid_sized = box_sweep(SETTINGS)
    finally:
        box_sweeps.SWEEP_TARGETS = SWEEP_TARGETS
    return full, mid_sized


def test_sweep_spans_detector_scales_from_overlap_to_none(sweeps):
    sweep, _ = sweeps
    i, u, _ = sweep.inputs
    t, d, g = sweep.shape
    assert t == len(SWEEP_TARGETS)
    side = np.array([min(x2 - x1, y2 - y1) for x1, y1, x2, y2 in SWEEP_TARGETS])
    assert side.min() <= 4 and side.max() >= 200
    iou = (i / u).reshape(t, d, g).numpy()
    assert np.allclose(iou[..., 0], 1)  # every trajectory starts on its target
    assert ((iou == 0).any(-1).sum(-1) >= 4).all()  # and the axis-aligned moves end clear of it, at every scale


@pytest.mark.parametrize("name", [n for n, p in PAPER_LOSSES.items() if p.kind == "reg"])
def test_paper_losses_are_consistent_at_every_scale(sweeps, name):
    passed, reason, _ = _judge(sweeps[0], PAPER_LOSSES[name].formula)
    assert passed, reason


@pytest.mark.parametrize("formula, reason", [
    # raw areas: its change on a 4 px box is lost against its range on a 300 px one
    ("sub(u, mul(2, i))", "does not grow"),
    # a constant of 30 px² beside the areas: fine at 20 px, dominates a 4×6 px box
    ("sub(1, div(add(i, 30), e))", "not consistently ranked"),
])
def test_scale_dependent_losses_pass_mid_sized_targets_but_not_every_scale(sweeps, formula, reason):
    full, mid_sized = sweeps
    assert _judge(mid_sized, formula)[0]
    passed, why, _ = _judge(full, formula)
    assert not passed and reason in why

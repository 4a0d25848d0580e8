import math

import pytest

from gp_loss.filters.base import Candidate
import json
import subprocess
import sys

import torch

from gp_loss.filters.equivalence import (
    DIRECTIONS, EquivalenceCache, EquivalenceStage, equivalent, fixed_directions, gradient_signature,
    round_significant, signature_difference, signature_of_gradient, split_signature,
)
from gp_loss.filters.rejection import RejectionStage
from gp_loss.kinds import kind_spec
from gp_loss.language import parse_formula
from gp_loss.probes.rejection import B
from primitives import get_kind


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/filters/conftest.py

CE = "neg(dot(y, log(softmax(x))))"
GIOU = "add(sub(1, div(i, u)), div(sub(e, u), e))"
BCE = "neg(add(mul(y, log(sigmoid(x))), mul(sub(1, y), log(sub(1, sigmoid(x))))))"
ZCE = "add(neg(mul(y, yhat)), mul(y, log(mean_c(exp(yhat)))))"


def candidate(kind: str, text: str) -> Candidate:
    k = get_kind(kind)
    return Candidate(k, parse_formula(k, text))


@pytest.mark.parametrize("value, expected", [
    (0.0, 0.0), (1234.0, 1200.0), (0.012345, 0.012), (0.0996, 0.1), (-3.14159, -3.1),
    (float("nan"), "nan"), (float("inf"), "inf"), (float("-inf"), "-inf"),
])
def test_round_significant(value, expected):
    assert round_significant(value) == expected


@pytest.mark.parametrize("kind, a, b", [
    ("cls", CE, "dot(y, neg(log(softmax(x))))"),
    ("cls", CE, "dot(neg(y), log(softmax(x)))"),
    ("cls", CE, "neg(dot(log(softmax(x)), y))"),
    ("cls", CE, "dot(y, log(div(1, softmax(x))))"),
    ("cls", CE, f"add({CE}, 3)"),  # differ by a constant
    ("cls", CE, f"div(mul(2, {CE}), 2)"),
    ("cls", "dot(y, sub(1, softmax(x)))", "sub(1, dot(y, softmax(x)))"),
    ("reg", GIOU, "sub(add(1, div(sub(e, u), e)), div(i, u))"),
    ("reg", GIOU, "sub(2, add(div(i, u), div(u, e)))"),
    ("reg", "sub(1, div(i, u))", "neg(div(i, u))"),  # differ by a constant
    ("reg", "neg(log(div(i, u)))", "sub(log(u), log(i))"),
    ("reg", "neg(log(div(i, u)))", "log(div(u, i))"),
    ("bcls", "neg(mul(y, log(sigmoid(x))))", "mul(neg(y), log(sigmoid(x)))"),
    ("bcls", BCE, "sub(mul(neg(y), log(sigmoid(x))), mul(sub(1, y), log(sub(1, sigmoid(x)))))"),
    ("bcls", BCE, f"add({BCE}, 1)"),
    ("bcls", "mul(w, softplus(neg(x)))", "mul(softplus(neg(x)), w)"),
    ("zero", ZCE, "add(mul(y, log(mean_c(exp(yhat)))), neg(mul(y, yhat)))"),
    ("zero", ZCE, "mul(y, add(neg(yhat), log(mean_c(exp(yhat)))))"),
    ("zero", "square(add(yhat, neg(y)))", "square(add(y, neg(yhat)))"),
    ("zero", "abs(add(yhat, neg(y)))", "abs(add(y, neg(yhat)))"),
])
@pytest.mark.parametrize("seed", [0, 1])
def test_algebraically_equal_losses_are_equivalent(kind, a, b, seed):
    same, sig_a, sig_b = equivalent(kind, a, b, seed=seed)
    assert same, signature_difference(sig_a, sig_b)
    assert len(sig_a) == B * (1 + DIRECTIONS) and all(isinstance(v, float) for v in sig_a)
    norms, directions = split_signature(sig_a)
    assert len(norms) == B and all(isinstance(v, float) and v > 0 for v in norms)
    assert len(directions) == B and all(len(d) == DIRECTIONS for d in directions)
    assert all(v in (1.0, -1.0) for d in directions for v in d)
    hash(sig_a)


@pytest.mark.parametrize("kind, a, b, norms_differ, directions_differ", [
    ("cls", CE, f"mul(2, {CE})", True, False),  # rescaled: same direction
    ("cls", CE, "neg(dot(mul(w, y), log(softmax(x))))", True, True),  # re-weighted
    ("reg", GIOU, f"mul(2, {GIOU})", True, False),
    ("reg", "sub(1, div(i, u))", GIOU, True, None),  # None: either
    # Same gradient norms, so AutoLoss-Zero's norm test calls these equivalent:
    ("cls", CE, f"neg({CE})", False, True),  # -CE: opposite gradients
    ("cls", CE, "dot(y, log(softmax(x)))", False, True),
    ("cls", CE, "neg(dot(y, log(softmax(neg(x)))))", False, True),  # CE of -x
    ("bcls", "neg(mul(y, log(sigmoid(x))))", "mul(y, log(sigmoid(x)))", False, True),
    ("bcls", BCE, f"neg({BCE})", False, True),
    ("reg", GIOU, f"neg({GIOU})", False, True),
    ("reg", "neg(log(div(i, u)))", "log(div(i, u))", False, True),
    ("zero", ZCE, f"neg({ZCE})", False, True),
    ("zero", "square(add(yhat, neg(y)))", "neg(square(add(yhat, neg(y))))", False, True),
    ("zero", "abs(add(yhat, neg(y)))", "neg(abs(add(yhat, neg(y))))", False, True),
])
def test_different_losses_are_not_equivalent(kind, a, b, norms_differ, directions_differ):
    same, sig_a, sig_b = equivalent(kind, a, b)
    assert not same, (sig_a, sig_b)
    differ = signature_difference(sig_a, sig_b)
    assert bool(differ["norms"]) == norms_differ, differ
    assert directions_differ is None or bool(differ["directions"]) == directions_differ, differ


def test_nearly_parallel_gradients_keep_their_direction_signs():
    # Two different losses of the default search whose gradients are at cosine > 0.999 and whose
    # norms agree to 2 digits on the seed-0 samples: reused under the norm test, and still so.
    same, sig_a, sig_b = equivalent("cls", "erfc(dot(gd(y), softmax(x)))",
                                    "dot(erfc(softmax(x)), alf(mul(y, y)))", seed=0)
    assert same, signature_difference(sig_a, sig_b)


def test_opposite_gradients_flip_every_direction_coordinate():
    grad = torch.randn(B, 16, 10, generator=torch.Generator().manual_seed(3))
    (n1, d1), (n2, d2) = split_signature(signature_of_gradient(grad)), split_signature(signature_of_gradient(-grad))
    assert n1 == n2
    assert all(b == -a for da, db in zip(d1, d2) for a, b in zip(da, db))
    assert d1 != d2


def test_direction_ignores_scale_and_float_noise():
    grad = torch.randn(B, 16, 4, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    _, d = split_signature(signature_of_gradient(grad))
    _, d_scaled = split_signature(signature_of_gradient(7.0 * grad))
    _, d_noisy = split_signature(signature_of_gradient((grad * (1 + 1e-7)).float()))
    assert d == d_scaled == d_noisy


def test_zero_and_nonfinite_gradients():
    grad = torch.zeros(B, 3)
    grad[1] = torch.tensor([1.0, 2.0, 2.0])
    grad[2, 0] = float("nan")
    norms, directions = split_signature(signature_of_gradient(grad))
    assert norms[0] == 0.0 and directions[0] == (0.0,) * DIRECTIONS
    assert norms[1] == 3.0 and all(isinstance(v, float) for v in directions[1])
    assert norms[2] == "nan" and directions[2] == (0.0,) * DIRECTIONS


def test_fixed_directions_are_the_same_in_another_process():
    here = fixed_directions(160)
    code = ("from gp_loss.filters.equivalence import fixed_directions; "
            "import json; print(json.dumps(fixed_directions(160).flatten().tolist()))")
    there = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert json.loads(there) == here.flatten().tolist()


def test_signature_is_norms_then_signs_and_survives_json():
    grad = torch.tensor([[3.0, 4.0, 0.0], [-3.0, -4.0, 0.0]])
    sig = signature_of_gradient(grad)
    assert len(sig) == 2 * (1 + DIRECTIONS) and sig[:2] == (5.0, 5.0)
    norms, directions = split_signature(sig)
    assert directions[0] == tuple(-v for v in directions[1]) and set(directions[0]) <= {1.0, -1.0}
    assert tuple(json.loads(json.dumps(sig))) == sig


def test_cli_says_what_differs(capsys):
    from gp_loss.cli import main

    assert main(["equiv", f"cls={CE}", f"cls=neg({CE})"]) == 1
    out = capsys.readouterr().out
    assert "not equivalent" in out and "directions differ" in out and "norms differ" not in out
    assert main(["equiv", f"cls={CE}", f"cls=mul(2, {CE})"]) == 1
    out = capsys.readouterr().out
    assert "norms differ" in out and "directions differ" not in out
    assert main(["equiv", f"cls={CE}", "cls=dot(y, neg(log(softmax(x))))"]) == 0


def test_equivalent_accepts_trees():
    k = get_kind("cls")
    same, _, _ = equivalent(k, parse_formula(k, CE), parse_formula(k, CE))
    assert same


def test_cache_counts_hits_and_misses():
    cache = EquivalenceCache()
    assert cache.hit_rate == 0.0
    sig = (0.1, 0.2, 0.3, 0.4, 0.5, -1.2, 0.3)
    assert cache.lookup(sig) is None
    cache.store(sig, 0.75)
    assert cache.lookup(sig) == 0.75
    assert cache.lookup((0.1,) * 5) is None
    assert (cache.hits, cache.misses) == (1, 2)
    assert cache.hit_rate == pytest.approx(1 / 3)
    assert sig in cache and len(cache) == 1


def test_stage_marks_hits_and_never_rejects():
    stage = EquivalenceStage()
    first = candidate("cls", CE)
    r1 = stage(first)
    assert r1.passed and r1.stage == "equivalence" and r1.numbers == {"hit": 0}
    assert first.info["equivalent_fitness"] is None
    stage.record(first, 0.9)

    rewrite = candidate("cls", "dot(y, neg(log(softmax(x))))")
    r2 = stage(rewrite)
    assert r2.passed and r2.numbers == {"hit": 1}
    assert rewrite.info["equivalent_fitness"] == 0.9

    other = candidate("cls", f"mul(2, {CE})")
    r3 = stage(other)
    assert r3.passed and r3.numbers == {"hit": 0}
    opposite = candidate("cls", f"neg({CE})")  # same norms: AutoLoss-Zero's test would reuse 0.9
    r4 = stage(opposite)
    assert r4.passed and r4.numbers == {"hit": 0} and opposite.info["equivalent_fitness"] is None
    assert stage.cache("cls").hit_rate == pytest.approx(1 / 4)


def test_stage_passes_candidate_without_signature():
    c = candidate("cls", CE)

    def broken(*inputs):
        raise RuntimeError("boom")

    c.loss = broken
    result = EquivalenceStage()(c)
    assert result.passed and result.numbers == {"hit": 0}
    assert c.info["equivalent_fitness"] is None


def test_rejection_signature_is_reused():
    c = candidate("reg", GIOU)
    assert RejectionStage(seed=0)(c).passed
    sig = c.info["signature"]
    assert sig == gradient_signature(c, kind_spec("reg").rejection_probe().make_samples(0))
    # The equivalence stage uses the stored one (a broken loss could not recompute it).
    c.loss = None
    assert EquivalenceStage(seed=0).signature(c) == sig


def test_signature_handles_nan():
    c = candidate("reg", "sqrt(neg(i))")
    sig = gradient_signature(c, kind_spec("reg").rejection_probe().make_samples(0))
    assert all(v == "nan" or (isinstance(v, float) and not math.isnan(v)) for v in sig)
    assert "nan" in sig

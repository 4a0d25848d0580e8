import math

import pytest

from gp_loss.filters.base import Candidate
from gp_loss.filters.equivalence import (
    EquivalenceCache, EquivalenceStage, equivalent, gradient_signature, round_significant,
)
from gp_loss.filters.rejection import RejectionStage
from gp_loss.kinds import kind_spec
from gp_loss.language import parse_formula
from gp_loss.probes.rejection import B
from primitives import get_kind


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/filters/conftest.py

CE = "neg(dot(y, log(softmax(x))))"
GIOU = "add(sub(1, div(i, u)), div(sub(e, u), e))"


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
    ("reg", GIOU, "sub(add(1, div(sub(e, u), e)), div(i, u))"),
    ("reg", "sub(1, div(i, u))", "neg(div(i, u))"),  # differ by a constant
    ("bcls", "neg(mul(y, log(sigmoid(x))))", "mul(neg(y), log(sigmoid(x)))"),
    ("zero", "add(neg(mul(y, yhat)), mul(y, log(mean_c(exp(yhat)))))",
     "add(mul(y, log(mean_c(exp(yhat)))), neg(mul(y, yhat)))"),
])
def test_algebraically_equal_losses_are_equivalent(kind, a, b):
    same, sig_a, sig_b = equivalent(kind, a, b)
    assert same, (sig_a, sig_b)
    assert len(sig_a) == B and all(isinstance(v, float) and v > 0 for v in sig_a)


@pytest.mark.parametrize("kind, a, b", [
    ("cls", CE, f"mul(2, {CE})"),  # rescaled
    ("cls", CE, "neg(dot(mul(w, y), log(softmax(x))))"),  # re-weighted
    ("reg", GIOU, f"mul(2, {GIOU})"),
    ("reg", "sub(1, div(i, u))", GIOU),
])
def test_different_losses_are_not_equivalent(kind, a, b):
    same, sig_a, sig_b = equivalent(kind, a, b)
    assert not same, (sig_a, sig_b)


def test_equivalent_accepts_trees():
    k = get_kind("cls")
    same, _, _ = equivalent(k, parse_formula(k, CE), parse_formula(k, CE))
    assert same


def test_cache_counts_hits_and_misses():
    cache = EquivalenceCache()
    assert cache.hit_rate == 0.0
    sig = (0.1, 0.2, 0.3, 0.4, 0.5)
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
    assert stage.cache("cls").hit_rate == pytest.approx(1 / 3)


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

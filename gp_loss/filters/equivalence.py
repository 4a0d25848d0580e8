"""Gradient-equivalence check (AutoLoss-Zero, Li et al., CVPR 2022, section 3.2).

Two losses are taken as equivalent when the L2 norms of their gradients with
respect to the predictions agree to two significant digits on all B samples
of the rejection protocol. The signature of a loss is that tuple of B rounded
norms; an :class:`EquivalenceCache` maps signatures to the fitness already
measured, so the evolution reuses it instead of training again.

The rejection stage computes the signature during its own first step and
leaves it in ``candidate.info["signature"]``; :class:`EquivalenceStage` only
recomputes it when that is missing.
"""
from __future__ import annotations

import math
import time
from typing import Union

import torch
from deap import gp

from primitives import Kind, get_kind

from gp_loss.filters.base import Candidate, StageResult
from gp_loss.filters.probe_gradient import loss_and_grad
from gp_loss.kinds import kind_spec
from gp_loss.language.parse import parse_formula
from gp_loss.probes.rejection import RejectionProbe, RejectionSamples

SIGNIFICANT_DIGITS = 2

Signature = tuple  # of B rounded norms: floats, or "nan" / "inf" strings


def round_significant(value: float, digits: int = SIGNIFICANT_DIGITS) -> Union[float, str]:
    """``value`` rounded to ``digits`` significant digits.

    0 stays 0.0; NaN and ±Inf become the strings ``"nan"``, ``"inf"``,
    ``"-inf"`` (NaN never equals itself, so it could not be a dictionary key).
    """
    if math.isnan(value):
        return "nan"
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    if value == 0:
        return 0.0
    # Formatting in exponent notation rounds on the significant digits.
    return float(f"{value:.{digits - 1}e}")


def signature_of_gradient(grad: torch.Tensor, digits: int = SIGNIFICANT_DIGITS) -> Signature:
    """Rounded per-sample L2 norms of a stacked gradient B×S -> tuple of B entries."""
    norms = grad.detach().reshape(grad.shape[0], -1).double().norm(dim=1)
    return tuple(round_significant(v, digits) for v in norms.tolist())


def gradient_signature(candidate: Candidate, samples: RejectionSamples) -> Signature:
    """Signature of a candidate on ``samples``: the B gradient norms at the initial predictions.

    Each entry is ``||dL_b / d prediction_b||_2`` (the loss of sample b with
    respect to its own prediction), rounded to two significant digits.
    Raises if the loss cannot be evaluated (callers decide what that means).
    """
    _, grad = loss_and_grad(samples, candidate.loss, samples.prediction)
    return signature_of_gradient(grad)


class EquivalenceCache:
    """Signature -> stored fitness, with hit and miss counters.

    One cache should hold signatures of one kind and one set of samples
    (:class:`EquivalenceStage` keeps one per kind).
    """

    def __init__(self):
        self._store: dict[Signature, object] = {}
        self.hits = 0
        self.misses = 0

    def lookup(self, signature: Signature):
        """The stored fitness of an equivalent loss, or ``None``; counts a hit or a miss."""
        if signature in self._store:
            self.hits += 1
            return self._store[signature]
        self.misses += 1
        return None

    def store(self, signature: Signature, fitness) -> None:
        """Remember the fitness measured for a loss with this signature."""
        self._store[signature] = fitness

    def items(self):
        """``(signature, fitness)`` pairs stored, oldest first (no hit or miss counted)."""
        return self._store.items()

    def __contains__(self, signature: Signature) -> bool:
        return signature in self._store

    def __len__(self) -> int:
        return len(self._store)

    @property
    def hit_rate(self) -> float:
        """Hits / lookups (0 before any lookup)."""
        total = self.hits + self.misses
        return self.hits / total if total else 0.0


class EquivalenceStage:
    """Mark candidates equivalent to one already evaluated; never rejects.

    Sets ``candidate.info["signature"]`` (reusing the rejection stage's when
    it was computed on the same seed) and ``candidate.info["equivalent_fitness"]``:
    the stored fitness on a cache hit, ``None`` otherwise. After evaluating a
    candidate, the evolution calls :meth:`record` so later equivalents hit.
    A candidate whose signature cannot be computed passes as a miss.

    Args:
        seed: seed of the probe samples; must match the rejection stage's for
            its signatures to be reused.
        probes: probe per kind name; kinds not given use their spec's
            (:attr:`~gp_loss.kinds.KindSpec.rejection_probe`).
    """

    name = "equivalence"

    def __init__(self, seed: int = 0, probes: dict[str, RejectionProbe] | None = None):
        self.seed = seed
        self.probes = dict(probes or {})
        self._samples: dict[str, RejectionSamples] = {}
        self.caches: dict[str, EquivalenceCache] = {}

    def cache(self, kind_name: str) -> EquivalenceCache:
        """The cache of one kind."""
        return self.caches.setdefault(kind_name, EquivalenceCache())

    def samples(self, kind_name: str) -> RejectionSamples:
        if kind_name not in self._samples:
            probe = self.probes.get(kind_name) or kind_spec(kind_name).rejection_probe()
            self._samples[kind_name] = probe.make_samples(self.seed)
        return self._samples[kind_name]

    def signature(self, candidate: Candidate) -> Signature:
        """The candidate's signature, reused from ``info`` when it matches this stage's seed."""
        info = candidate.info
        if "signature" in info and info.get("signature_seed", self.seed) == self.seed:
            return info["signature"]
        sig = gradient_signature(candidate, self.samples(candidate.kind.name))
        info["signature"], info["signature_seed"] = sig, self.seed
        return sig

    def record(self, candidate: Candidate, fitness) -> None:
        """Store the fitness measured for ``candidate`` under its signature."""
        self.cache(candidate.kind.name).store(self.signature(candidate), fitness)

    def __call__(self, candidate: Candidate) -> StageResult:
        start = time.perf_counter()
        try:
            sig = self.signature(candidate)
        except Exception as err:  # no signature: evaluate it like a new loss
            candidate.info["equivalent_fitness"] = None
            return StageResult(self.name, True, f"no signature ({type(err).__name__}: {err})",
                               {"hit": 0}, time.perf_counter() - start)
        fitness = self.cache(candidate.kind.name).lookup(sig)
        candidate.info["equivalent_fitness"] = fitness
        hit = fitness is not None
        reason = "gradient-equivalent to an evaluated loss" if hit else "new gradient signature"
        return StageResult(self.name, True, reason, {"hit": int(hit)}, time.perf_counter() - start)


def equivalent(kind: Kind | str, tree_a: gp.PrimitiveTree | str, tree_b: gp.PrimitiveTree | str,
               seed: int = 0) -> tuple[bool, Signature, Signature]:
    """Whether two losses of ``kind`` are gradient-equivalent, with both signatures.

    Trees may be given as formula text. For ``gp-loss equiv``.
    """
    k = get_kind(kind) if isinstance(kind, str) else kind
    samples = kind_spec(k).rejection_probe().make_samples(seed)
    sigs = []
    for tree in (tree_a, tree_b):
        if isinstance(tree, str):
            tree = parse_formula(k, tree)
        sigs.append(gradient_signature(Candidate(k, tree), samples))
    return sigs[0] == sigs[1], sigs[0], sigs[1]

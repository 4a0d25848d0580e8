"""Gradient-equivalence check (after AutoLoss-Zero, Li et al., CVPR 2022, section 3.2).

AutoLoss-Zero takes two losses as equivalent when the L2 norms of their
gradients with respect to the predictions agree to two significant digits on
all B samples of the rejection protocol. A norm cannot tell a gradient from its
opposite or from any other gradient of the same length: by that test CE equals
−CE (a loss that *un*-learns) and CE of the negated logits, so the search would
hand such a loss the fitness CE earned instead of training it.

Here the signature of a loss keeps AutoLoss-Zero's norms and adds a coarse
fingerprint of each gradient's direction. For sample b with gradient g_b
(flattened, S entries) it holds

* ``||g_b||_2`` rounded to two significant digits (AutoLoss-Zero's test), and
* the signs (+ / -) of ``g_b · r_1 .. g_b · r_D`` for ``D = DIRECTIONS``
  fixed pseudo-random directions r_d (entries standard normal, drawn from a
  generator with a fixed seed, independent of the probe seed, the process and
  the device): on which side of D fixed random hyperplanes the gradient lies
  (random-hyperplane hashing, SimHash).

An opposite gradient flips every sign, and two gradients at angle θ differ in a
given sign with probability θ/π, so gradients pointing elsewhere (θ of a few
tenths of a radian or more) almost surely differ in one of the B×D signs, while
a sign only changes under float noise if a projection (of order ``||g_b||``) is
within float precision of zero. Gradients a few degrees apart mostly keep
their signs, so the direction check is meant to be about as coarse as the norm
check, not stricter. (Rounding the unit gradient's coordinates to
one decimal instead split 11 of the 120 reuses of a default search, all with
gradients at cosine 0.995 or more to the trained twin's; the signs split 1.)

The signature is a flat tuple: the B rounded norms, then the B×D signs (+1.0,
-1.0, or 0.0 for a zero projection), sample by sample (read back by
:func:`split_signature`). It stays hashable and survives JSON. A zero
gradient's norm is 0.0 and its signs 0.0; a non-finite one's norm is the string
``"nan"`` or ``"inf"`` and its signs 0.0.
Two losses are equivalent when their signatures are equal: same norms *and*
same directions, so a rescaled loss (``2·CE``: norms differ), a negated one
(``−CE``: every sign flips) or one pushing the predictions elsewhere
(``CE(−x)``) is not, while algebraic rewrites (``dot(y, neg(log(softmax(x))))``
for CE) and losses that differ by a constant still are. An
:class:`EquivalenceCache` maps signatures to the fitness already measured, so
the evolution reuses it instead of training again.

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
DIRECTIONS = 4  # fixed random directions per sample: the signs of the gradient's projections on them
DIRECTION_SEED = 20220601  # seed of the fixed directions: not the probe seed

Signature = tuple  # B rounded norms ("nan" / "inf" when not finite), then B*D direction signs


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


_directions_cache: dict[int, torch.Tensor] = {}


def fixed_directions(size: int) -> torch.Tensor:
    """The DIRECTIONS fixed directions (size×D, float64, entries standard normal) for gradients of ``size`` entries.

    Drawn on the CPU from their own generator, so every process and device gets the same.
    """
    if size not in _directions_cache:
        g = torch.Generator().manual_seed(DIRECTION_SEED + size)
        _directions_cache[size] = torch.randn(size, DIRECTIONS, generator=g, dtype=torch.float64)
    return _directions_cache[size]


def signature_of_gradient(grad: torch.Tensor, digits: int = SIGNIFICANT_DIGITS) -> Signature:
    """Signature of a stacked gradient B×S: the B L2 norms ``||g_b||`` rounded to ``digits``
    significant digits, then per sample the D signs of ``g_b · r_d`` for the :func:`fixed_directions` r_d.
    """
    flat = grad.detach().reshape(grad.shape[0], -1).to("cpu", torch.float64)
    norms = flat.norm(dim=1)
    finite = torch.isfinite(norms)
    signs = (torch.where(finite[:, None], flat, 0.0) @ fixed_directions(flat.shape[1])).sign()
    return tuple(round_significant(n) for n in norms.tolist()) + tuple(signs.flatten().tolist())


def split_signature(signature: Signature) -> tuple[tuple, tuple[tuple, ...]]:
    """``(norms, directions)`` of a signature: the B rounded norms, and B tuples of D signs."""
    b = len(signature) // (1 + DIRECTIONS)
    signs = signature[b:]
    return tuple(signature[:b]), tuple(tuple(signs[i * DIRECTIONS:(i + 1) * DIRECTIONS]) for i in range(b))


def signature_difference(sig_a: Signature, sig_b: Signature) -> dict[str, list[int]]:
    """Which samples (0-based) differ: ``{"norms": [...], "directions": [...]}``; both empty when equal."""
    (na, da), (nb, db) = split_signature(sig_a), split_signature(sig_b)
    return {"norms": [i for i, (x, y) in enumerate(zip(na, nb)) if x != y],
            "directions": [i for i, (x, y) in enumerate(zip(da, db)) if x != y]}


def gradient_signature(candidate: Candidate, samples: RejectionSamples) -> Signature:
    """Signature of a candidate on ``samples``, from its gradients at the initial predictions.

    Sample b's gradient is ``dL_b / d prediction_b`` (the loss of sample b with
    respect to its own prediction); see :func:`signature_of_gradient`.
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

    def peek(self, signature: Signature):
        """The stored fitness of ``signature`` (which must be stored), counting no hit or miss."""
        return self._store[signature]

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

    def prepare(self, kind_name: str) -> None:
        """Build ``kind_name``'s probe samples."""
        self.samples(kind_name)

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

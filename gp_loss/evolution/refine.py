"""Constant refinement: after a search, tune the numeric literals of each top formula.

GP finds a loss's structure, but its constants only among the few it can draw
or breed. GLO (Gonzalez & Miikkulainen, CEC 2020) and EvoMAL (Raymond et al.,
TPAMI 2023) therefore tune a found loss's coefficients separately; here the
tuner is HPS-Det's surrogate search (:func:`gp_loss.hps.maximize`), maximising
the same proxy fitness the search used, with ``config.refine`` proxy trainings
per formula.

The literals of a genome are found in a fixed order: branches in layout order,
and within a branch the tree's prefix order (the order they are read in the
text). Each literal is one integer coordinate ``k`` in ``[-8, 8]``:

* a literal ``v != 0`` takes ``v * 2**(k/4)``: from ``v/4`` to ``4v``, its sign
  kept, in steps of a factor ``2**(1/4)`` (a relative grid, as a constant's
  scale matters more than its last digits);
* a literal ``0`` takes ``k/8``: from ``-1`` to ``1`` in steps of ``0.125``.

``k = 0`` is the literal as found, exactly, so the point of zeros is the
unrefined formula; it is evaluated first, and the refined formula is kept only
if a grid point beats it. Every other value is rounded to 4 significant digits
(an integral one written as an integer) so that the refined text stays
readable; a value that would not be a finite constant narrows that literal's
range. The refined formula is printed and parsed back, so it is valid text.

Each formula's search checkpoints under ``<run>/refinement/<name>/<digest>``
(the digest of its formulas, so a run that resumed and searched further, whose
``top1`` is another formula, never continues the wrong search); an interrupted
refinement resumes exactly. ``refinement.json`` lists what each formula got.
"""
from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from deap import gp

from primitives import get_kind
from primitives.types import Const

from gp_loss.evolution import jobs
from gp_loss.evolution.final_choice import Entry, Formulas
from gp_loss.evolution.jobs import SignatureJob, TrainJob
from gp_loss.hps import maximize
from gp_loss.hps.design import default_size
from gp_loss.hps.space import Box
from gp_loss.language import parse_formula
from gp_loss.language.parse import MAX_INTEGER_CONSTANT
from gp_loss.runtime.checkpoint import CHECKPOINT, PREVIOUS
from gp_loss.runtime.progress import Progress
from gp_loss.runtime.run_dir import RunDir
from gp_loss.runtime.terminal import safe_line

if TYPE_CHECKING:
    from gp_loss.evolution.search import Search

REFINEMENT = "refinement.json"
REFINEMENT_DIR = "refinement"
# Grid coordinates k of a literal run over [-STEPS, STEPS].
STEPS = 8
# A literal v != 0 moves by a factor 2**(1/PER_OCTAVE) per step: STEPS / PER_OCTAVE = 2 octaves each way.
PER_OCTAVE = 4
# A literal 0 moves by this per step.
ZERO_STEP = 1 / 8
SIGNIFICANT_DIGITS = 4
NO_LITERAL = "no numeric literal to tune"
NOT_BETTER = "no grid point beat the unrefined formula: kept as it is"



@dataclass(frozen=True)
class Literal:
    """One numeric literal of a genome: its ``branch``, its node's ``index`` in that tree (prefix order), its
    ``value``."""

    branch: str
    index: int
    value: int | float


def find_literals(layout: dict[str, str], formulas: Formulas) -> list[Literal]:
    """The numeric literals of ``formulas`` (branch -> text; ``layout``: branch -> kind), in a fixed order:
    branches in ``layout`` order, then the order the literals are read in each text."""
    found = []
    for branch, kind in layout.items():
        tree = parse_formula(get_kind(kind), formulas[branch])
        found += [Literal(branch, i, node.value) for i, node in enumerate(tree)
                  if isinstance(node, gp.Terminal) and node.ret is Const]
    return found


def grid_value(value: int | float, k: int) -> int | float:
    """The value grid point ``k`` gives a literal of ``value`` (the module docstring's mapping).

    ``k = 0`` gives ``value`` itself; any other ``k`` a value rounded to
    :data:`SIGNIFICANT_DIGITS` significant digits, an int when integral. May be
    infinite for a literal near the float range's end (:func:`literal_bounds` leaves those out).
    """
    if k == 0:
        return value
    raw = k * ZERO_STEP if value == 0 else value * 2.0 ** (k / PER_OCTAVE)
    rounded = float(f"{raw:.{SIGNIFICANT_DIGITS}g}")
    if math.isfinite(rounded) and rounded.is_integer() and abs(rounded) <= MAX_INTEGER_CONSTANT:
        return int(rounded)
    return rounded


def literal_bounds(value: int | float) -> tuple[int, int]:
    """``(lowest k, highest k)`` in ``[-STEPS, STEPS]`` whose grid value is finite; always around 0."""
    finite = [k for k in range(-STEPS, STEPS + 1) if math.isfinite(grid_value(value, k))]
    low = high = 0  # the values are monotone in k, so the finite ones are one run through 0
    while low - 1 in finite:
        low -= 1
    while high + 1 in finite:
        high += 1
    return low, high


def refined_formulas(layout: dict[str, str], formulas: Formulas, literals: list[Literal] | tuple[Literal, ...],
                     x: list[int]) -> Formulas:
    """``formulas`` with literal ``i`` set to ``grid_value(literals[i].value, x[i])``, printed and parsed back."""
    values = {(lit.branch, lit.index): grid_value(lit.value, k) for lit, k in zip(literals, x, strict=True)}
    out = {}
    for branch, kind_name in layout.items():
        kind = get_kind(kind_name)
        tree = parse_formula(kind, formulas[branch])
        for i in range(len(tree)):
            if (branch, i) in values:
                tree[i] = gp.Terminal(values[(branch, i)], False, Const)
        # Parsed back: the text is valid, and written as the parser writes it.
        out[branch] = str(parse_formula(kind, str(tree)))
    return out


@dataclass(frozen=True)
class ProxyObjective:
    """The proxy fitness of a formula with its literals at a grid point (picklable, for the search's workers).

    ``config``: the search's configuration as a dict; ``layout``: branch -> kind;
    ``formulas``: the unrefined genome; ``literals``: :func:`find_literals` of it.
    """

    config: dict
    layout: dict
    formulas: dict
    literals: tuple[Literal, ...]

    def __call__(self, x: list[int]) -> float:
        """The proxy score at grid point ``x`` (one ``k`` per literal); a failed training scores 0, and so
        does a point the search's filters reject (a changed constant can make a loss explode where the
        found one did not: such a loss is never proposed)."""
        try:
            formulas = refined_formulas(self.layout, self.formulas, self.literals, x)
            if jobs.start_rejections(SignatureJob(self.config, formulas)):
                return 0.0
            outcome = jobs.evaluate(TrainJob(config=self.config, formulas=formulas, seed=self.config["seed"]))
        except Exception:  # a point the loss cannot train at is a poor point, not the end of the refinement
            return 0.0
        return float(outcome.score)


def formulas_digest(formulas: Formulas) -> str:
    """12 hex digits of the SHA-256 of ``formulas``: names a formula's refinement directory."""
    return hashlib.sha256(json.dumps(formulas, sort_keys=True).encode("utf-8")).hexdigest()[:12]


def refine_top(search: "Search", entries: list[Entry], run: RunDir) -> list[Entry]:
    """Tune the literals of each of ``entries`` with ``config.refine`` proxy trainings; write ``refinement.json``.

    Returns ``(f"{name}_refined", refined formulas, proxy fitness)`` for each
    entry whose refinement beat its unrefined formula, in ``entries`` order.
    """
    items, refined = [], []
    for name, formulas, _ in entries:
        item = _refine_one(search, run, name, formulas)
        items.append(item)
        if "skipped" not in item and "kept" not in item:
            refined.append((f"{name}_refined", item["refined_formula"], item["proxy_after"]))
    run.write_json(REFINEMENT, items)
    return refined


def _refine_one(search: "Search", run: RunDir, name: str, formulas: Formulas) -> dict:
    """The ``refinement.json`` item of one formula, its refinement run (or resumed) on the search's workers."""
    cfg = search.config
    layout = dict(search.layout)
    literals = find_literals(layout, formulas)
    item: dict = {"name": name, "formula": formulas}
    if not literals:
        return {**item, "skipped": NO_LITERAL, "evaluations": 0}
    bounds = [literal_bounds(lit.value) for lit in literals]
    lower, upper = [b[0] for b in bounds], [b[1] for b in bounds]
    box = Box.from_bounds(lower, upper)
    free = sum(1 for a, b in bounds if b > a)
    if free == 0:
        return {**item, "skipped": "no literal can move on the grid (all at the float range's end)",
                "evaluations": 0}
    budget = cfg.refine
    # The unrefined point, then a full-rank design of at least d + 1 points, then the surrogate's proposals.
    n_init = min(default_size(box), budget - 1)
    if n_init < free + 1:
        return {**item, "skipped": f"refine = {budget} evaluations are too few for {len(literals)} literal(s): "
                                   f"the unrefined formula and a design of {free + 1} points need {free + 2}",
                "evaluations": 0}
    where = Path(run.path) / REFINEMENT_DIR / name / formulas_digest(formulas)
    where.mkdir(parents=True, exist_ok=True)
    resume = (where / CHECKPOINT).exists() or (where / PREVIOUS).exists()
    objective = ProxyObjective(config=search.config_dict, layout=layout, formulas=dict(formulas),
                               literals=tuple(literals))
    zero = [0] * len(literals)
    with Progress(budget, f"refining {name}", enabled=search.recorder.progress_enabled) as progress:
        progress.line(safe_line(f"refining {name}: {len(literals)} literal(s), {budget} proxy trainings"
                                + (" (resumed)" if resume else "")))

        def report(info: dict) -> None:
            progress.at(info["done"])

        result = maximize(objective, lower, upper, budget=budget, seed=cfg.seed, n_init=n_init, initial=[zero],
                          map=search.mapper, run_dir=where, resume=resume, progress=report)
        before = next((v for x, v in result.history if x == zero), None)
        best_x, best = result.best_x, result.best_value
        item.update(literals_before=[lit.value for lit in literals], proxy_before=before,
                    evaluations=len(result.history))
        texts = None if best_x is None else refined_formulas(layout, formulas, literals, best_x)
        # Strictly better only: with several workers an equal point may arrive before the unrefined one.
        unrefined = refined_formulas(layout, formulas, literals, zero)  # as the parser writes it
        if best is None or (before is not None and best <= before) or texts == unrefined:
            item.update(refined_formula=formulas, literals_after=item["literals_before"], proxy_after=before,
                        kept=NOT_BETTER)
        else:
            item.update(refined_formula=texts, proxy_after=best,
                        literals_after=[grid_value(lit.value, k) for lit, k in zip(literals, best_x)])
        progress.line(safe_line(f"refined {name}: proxy {_shown(before)} -> {_shown(item['proxy_after'])}"
                                + (" (kept)" if "kept" in item else f": {_joined(item['refined_formula'])}")))
    return item


def _shown(value: float | None) -> str:
    return "failed" if value is None else f"{100 * value:.2f}"


def _joined(formulas: Formulas) -> str:
    return " ".join(f"{n}={f}" for n, f in formulas.items())

"""DEAP ``creator`` classes of the search, defined at module level.

SCOOP and multiprocessing workers re-import this module, so the classes exist
in every process under the same names. An individual is a list of loss trees,
one per branch of the run's layout (``SearchConfig.branches`` order).
"""
from __future__ import annotations

from deap import base, creator, gp

from gp_loss.language.genome import Branch, Genome
from gp_loss.language.parse import parse_formula
from primitives import get_kind

if not hasattr(creator, "LossFitness"):
    creator.create("LossFitness", base.Fitness, weights=(1.0,))  # the task metric, maximised
if not hasattr(creator, "LossIndividual"):
    # id: evaluation order; generation: when it was born; signature: gradient-equivalence
    # signature of its branches; reused: its fitness came from an equivalent loss; fidelity: the
    # fraction of the proxy its fitness was measured at (successive halving; a failed training counts
    # at the lowest).
    creator.create("LossIndividual", list, fitness=creator.LossFitness, id=None, generation=None,
                   signature=None, reused=False, fidelity=1.0)

Individual = creator.LossIndividual


def rank(ind: Individual) -> tuple[float, float]:
    """What selection compares when fitnesses of several fidelities meet: the fidelity, then the fitness."""
    return ind.fidelity, ind.fitness.values[0]


def individual_from_formulas(layout: dict[str, str], formulas: dict[str, str]) -> Individual:
    """An individual whose trees are ``formulas`` (branch name -> text), in ``layout`` order."""
    return Individual(parse_formula(get_kind(kind), formulas[name]) for name, kind in layout.items())


def formulas_of(layout: dict[str, str], ind: list[gp.PrimitiveTree]) -> dict[str, str]:
    """Branch name -> formula text of an individual."""
    return {name: str(tree) for name, tree in zip(layout, ind)}


def genome_of(layout: dict[str, str], ind: list[gp.PrimitiveTree]) -> Genome:
    """The individual as a :class:`Genome`."""
    return Genome(Branch(name, get_kind(kind), tree) for (name, kind), tree in zip(layout.items(), ind))


def individual_to_dict(layout: dict[str, str], ind: Individual) -> dict:
    """JSON form: formulas, fitness, id, generation, signature, reused, fidelity."""
    return {"formulas": formulas_of(layout, ind),
            "fitness": ind.fitness.values[0] if ind.fitness.valid else None,
            "id": ind.id, "generation": ind.generation,
            "signature": ind.signature, "reused": ind.reused, "fidelity": ind.fidelity}


def individual_from_dict(layout: dict[str, str], data: dict) -> Individual:
    ind = individual_from_formulas(layout, data["formulas"])
    if data.get("fitness") is not None:
        ind.fitness.values = (data["fitness"],)
    ind.id, ind.generation, ind.reused = data.get("id"), data.get("generation"), data.get("reused", False)
    ind.fidelity = data.get("fidelity", 1.0)
    sig = data.get("signature")
    ind.signature = freeze(sig) if sig is not None else None
    return ind


def freeze(value):
    """Nested lists (from JSON) -> nested tuples, so signatures hash."""
    if isinstance(value, (list, tuple)):
        return tuple(freeze(v) for v in value)
    return value


def same_formulas(a: list, b: list) -> bool:
    """HallOfFame similarity: identical trees in every branch."""
    return [str(t) for t in a] == [str(t) for t in b]

"""Typed one-point crossover with the job's own random stream.

DEAP's ``gp.cxOnePoint`` draws the crossover type from ``list(set_of_types)``,
whose order follows the type objects' ``id()`` and so differs between
processes, and it draws from the global ``random``. This version sorts the
types by name and takes an explicit ``rng``, so the same job gives the same
child in any worker.

:func:`limited_crossover` is DEAP's ``staticLimit`` bloat control with the same
rule (a child over the height limit is replaced by its parent), written out
because ``gp.staticLimit`` picks the replacement with the global ``random``.
"""
from __future__ import annotations

import random

from deap import gp


def one_point_crossover(a: gp.PrimitiveTree, b: gp.PrimitiveTree, rng: random.Random
                        ) -> tuple[gp.PrimitiveTree, gp.PrimitiveTree]:
    """Swap a random subtree of ``a`` with one of ``b`` returning the same type.

    The roots are never swapped (as in DEAP). Returns new trees; the inputs are
    untouched. Trees of one node, or with no common subtree type, come back as copies.
    """
    a, b = gp.PrimitiveTree(list(a)), gp.PrimitiveTree(list(b))
    if len(a) < 2 or len(b) < 2:
        return a, b
    by_type_a: dict[type, list[int]] = {}
    by_type_b: dict[type, list[int]] = {}
    for i in range(1, len(a)):
        by_type_a.setdefault(a[i].ret, []).append(i)
    for i in range(1, len(b)):
        by_type_b.setdefault(b[i].ret, []).append(i)
    common = sorted(set(by_type_a) & set(by_type_b), key=lambda t: (t.__module__, t.__qualname__))
    if not common:
        return a, b
    type_ = rng.choice(common)
    i, j = rng.choice(by_type_a[type_]), rng.choice(by_type_b[type_])
    sa, sb = a.searchSubtree(i), b.searchSubtree(j)
    a[sa], b[sb] = b[sb], a[sa]
    return a, b


def limited_crossover(a: gp.PrimitiveTree, b: gp.PrimitiveTree, rng: random.Random, max_height: int
                      ) -> tuple[gp.PrimitiveTree, gp.PrimitiveTree]:
    """:func:`one_point_crossover`; a child taller than ``max_height`` is replaced by its own parent."""
    ca, cb = one_point_crossover(a, b, rng)
    if ca.height > max_height:
        ca = gp.PrimitiveTree(list(a))
    if cb.height > max_height:
        cb = gp.PrimitiveTree(list(b))
    return ca, cb

"""The legend of a report's formulas: what each operator drawn by name means.

A drawn formula uses standard maths where there is one (``e^x``, ``log``, fractions)
and a name where there is none: ``zero``'s signed log ``slog``, the rescaled
S-curves ``gd``, ``alf`` and ``erf``, ``σ``, ``⟨a, b⟩``. The legend lists those
that the report's formulas use, each with its operator's own definition
(:attr:`primitives.operator.Operator.definition`, the text ``gp-loss primitives``
prints), so it can never say something else than the operator computes.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

from deap import gp

from gp_loss.report.formulas import Formula


@dataclass(frozen=True)
class LegendEntry:
    shown: str  # as drawn, e.g. "slog(x)"
    operator: str  # as written in the formula text, e.g. "log"
    kinds: tuple[str, ...]
    definition: str

    def text(self) -> str:
        """One line: ``slog(x) = sign(x) ln(|x| + 1e-12)  ("log" in the formula text of kind zero)``."""
        written = "" if self.shown.startswith(self.operator + "(") else (
            f'  ("{self.operator}" in the formula text of kind {", ".join(self.kinds)})')
        return f"{self.shown} = {self.definition}{written}"


def operator_legend(formulas: Iterable[Formula]) -> list[LegendEntry]:
    """The operators drawn by name in the parsed ``formulas``, each once, in order of first use."""
    from gp_loss.export.sympy_expr import drawn_by_name

    found: dict[tuple[str, str], tuple[str, list[str]]] = {}
    for f in formulas:
        if not f.parsed:
            continue
        named = drawn_by_name(f.kind.name)
        for node in f.tree:
            if isinstance(node, gp.Primitive) and node.name in named:
                op = f.kind.operators[node.name]
                key = (named[node.name], op.definition)
                kinds = found.setdefault(key, (node.name, []))[1]
                if f.kind.name not in kinds:
                    kinds.append(f.kind.name)
    return [LegendEntry(shown, operator, tuple(kinds), definition)
            for (shown, definition), (operator, kinds) in found.items()]

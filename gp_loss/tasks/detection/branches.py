"""A genome's branches in a detector's head: checked against the detector's layout, then compiled.

A detector declares its loss branches as a layout ``{branch name: kind name}``
(FCOS and RetinaNet: ``cls``/``bcls`` + ``reg``/``reg``; Faster R-CNN: four).
:func:`compile_branches` checks a genome against that layout and compiles each
branch to its raw (unreduced) output; the heads then build the kind's inputs
(:mod:`.branch_inputs`) and reduce the raw output with the detector's own
normalisation (:mod:`.normalisation`), never with the kind's default reduction.
"""
from __future__ import annotations

from typing import Mapping

from gp_loss.errors import GpLossError
from gp_loss.language.compile import CompiledTree, compile_tree
from gp_loss.language.genome import Genome

Layout = Mapping[str, str]  # branch name -> kind name, in the detector's order


def describe_layout(layout: Layout) -> str:
    """``"cls (bcls), reg (reg)"``: the branches a detector expects, for error messages."""
    return ", ".join(f"{name} ({kind})" for name, kind in layout.items())


def compile_branches(genome: Genome | None, layout: Layout, detector: str) -> dict[str, CompiledTree] | None:
    """Each branch of ``genome`` compiled to its raw output, after checking it fits ``layout``.

    Args:
        genome: the loss genome, or ``None`` for the detector's own (torchvision's) losses.
        layout: the branches the detector expects, name -> kind name.
        detector: the detector's name, for the error message.

    Returns:
        ``{branch name: CompiledTree}`` (every branch of ``layout``), or ``None`` when ``genome`` is.

    Raises:
        GpLossError: one line naming the expected branches, when a branch is missing, extra or of
            another kind.
    """
    if genome is None:
        return None
    if not isinstance(genome, Genome):
        raise GpLossError(f"{detector}: expected a Genome or None, got {type(genome).__name__}")
    got = {b.name: b.kind.name for b in genome}
    if got != dict(layout):
        given = ", ".join(f"{n} ({k})" for n, k in got.items())
        raise GpLossError(
            f"{detector} expects the loss branches {describe_layout(layout)}; the genome has {given}")
    return {b.name: compile_tree(b.kind, b.tree) for b in genome}

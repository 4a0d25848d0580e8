"""Operator sets of gp-loss: one :class:`~primitives.kind.Kind` per kind of loss branch.

- ``cls``: multi-class (softmax) classification, inputs ``x, y, w`` (CSE-Autoloss);
- ``bcls``: binary (sigmoid) classification, inputs ``x, y, w`` (CSE-Autoloss, no softmax/dot);
- ``reg``: box regression, inputs ``i, u, e`` (CSE-Autoloss regression set);
- ``zero``: AutoLoss-Zero, inputs ``yhat, y`` on N×C×H×W tensors;
- ``heat``: AutoLoss-Zero's operators on keypoint heatmaps, inputs ``yhat, y, w`` (N×K×H×W).

A kind's behaviour beyond its operators (how its output is reduced to a loss, the
probes the filters judge it on) is its spec in :mod:`gp_loss.kinds`.
"""
from __future__ import annotations

from primitives.cse import BCLS, CLS, REG
from primitives.heat import HEAT
from primitives.kind import Kind
from primitives.zero import ZERO

KINDS: dict[str, Kind] = {k.name: k for k in (CLS, BCLS, REG, ZERO, HEAT)}


class UnknownKindError(KeyError):
    """A kind name that gp-loss does not have."""

    def __str__(self) -> str:
        return f"unknown kind {self.args[0]!r}; the kinds are: {', '.join(KINDS)}"


def get_kind(name: str) -> Kind:
    """The kind called ``name`` (``cls``, ``bcls``, ``reg``, ``zero`` or ``heat``)."""
    try:
        return KINDS[name]
    except KeyError:
        raise UnknownKindError(name) from None


__all__ = ["KINDS", "Kind", "UnknownKindError", "get_kind"]

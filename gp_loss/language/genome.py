"""A multi-branch genome: one loss tree per named branch.

A detector has several loss branches (e.g. ``cls`` + ``reg``; Faster R-CNN has
four: ``rpn_cls``, ``rpn_reg``, ``rcnn_cls``, ``rcnn_reg``). Each branch has a
name (a Python identifier, used as the exported function's name) and a kind.
On disk a genome is JSON with formula text, never pickled code::

    {"branches": [{"name": "cls", "kind": "cls", "formula": "neg(dot(y, log(softmax(x))))"}]}
"""
from __future__ import annotations

import builtins
import json
import keyword
import re
from dataclasses import dataclass
from typing import Iterable, Iterator

from deap import gp

from primitives import KINDS, Kind, UnknownKindError, get_kind

from gp_loss.errors import FormulaError, GpLossError
from gp_loss.language.parse import parse_formula

_BRANCH_NAME = re.compile(r"^[a-z][a-z0-9_]*$")
# Names of the exported module (gp_loss.export.torch_module) that a branch function of the
# same name would shadow or be shadowed by: its imports, the reduced output ``o`` and
# GenomeLoss.forward's ``self`` and ``total``. The inputs of every kind are reserved too
# (a branch's nn.Module wrapper takes them as arguments and calls the branch function),
# and so are Python's keywords and builtins.
_RESERVED = {"torch", "math", "o", "self", "total"}
# Module-level names of the exported module that are not derived from a branch name.
MODULE_NAMES = frozenset({"torch", "math", "GenomeLoss", "LOSSES"})


def _reserved_reason(name: str) -> str | None:
    if keyword.iskeyword(name):
        return "a Python keyword"
    if name in _RESERVED:
        return "a name the exported module uses"
    if name in vars(builtins):
        return "a Python builtin"
    for kind in KINDS.values():
        if name in kind.inputs:
            return f"an input of kind {kind.name!r}"
    return None


def check_branch_name(name: str) -> str:
    """Return ``name`` if it can name a branch (and its exported function)."""
    if not isinstance(name, str) or not _BRANCH_NAME.match(name):
        raise GpLossError(
            f"bad branch name {name!r}: use lowercase letters, digits and '_', starting with a "
            f"letter (not a Python keyword or builtin, nor {', '.join(sorted(_RESERVED))})")
    reason = _reserved_reason(name)
    if reason is not None:
        raise GpLossError(
            f"bad branch name {name!r}: it is {reason} and would clash in the exported module; "
            f"choose another (e.g. {name}_loss)")
    return name


def class_name(branch: str) -> str:
    """The exported ``nn.Module`` class of a branch: ``rpn_cls`` -> ``RpnClsLoss``."""
    return "".join(part.capitalize() for part in branch.split("_")) + "Loss"


def exported_names(branch: str) -> tuple[str, ...]:
    """The module-level names the exported module defines for a branch: function, alias, class."""
    return branch, f"{branch}_fn", class_name(branch)


def check_exported_names(names: Iterable[str]) -> None:
    """Raise :class:`GpLossError` if two branches would define the same name in the exported module.

    E.g. ``a_b`` and ``a__b`` both give the class ``ABLoss``; ``cls_fn`` is ``cls``'s alias;
    ``genome`` would give ``GenomeLoss``, the class summing all branches.
    """
    owner: dict[str, str] = {}
    for branch in names:
        for name in exported_names(branch):
            if name in MODULE_NAMES:
                raise GpLossError(
                    f"bad branch name {branch!r}: the exported module would define {name!r} twice "
                    f"(it is the module's own); choose another name")
            if name in owner and owner[name] != branch:
                raise GpLossError(
                    f"branch names {owner[name]!r} and {branch!r} clash: both would define {name!r} "
                    f"in the exported module; rename one")
            owner[name] = branch


def kind_named(name: str) -> Kind:
    """:func:`primitives.get_kind` with a user-facing error."""
    try:
        return get_kind(name)
    except UnknownKindError as err:
        raise GpLossError(str(err)) from None


@dataclass
class Branch:
    """One loss branch: its name, kind and tree."""

    name: str
    kind: Kind
    tree: gp.PrimitiveTree

    @property
    def formula(self) -> str:
        return str(self.tree)

    def to_dict(self) -> dict:
        return {"name": self.name, "kind": self.kind.name, "formula": self.formula}


class Genome:
    """An ordered set of branches; the total loss is the sum of the branch losses."""

    def __init__(self, branches: Iterable[Branch]):
        self.branches: dict[str, Branch] = {}
        for b in branches:
            check_branch_name(b.name)
            if b.name in self.branches:
                raise GpLossError(f"branch {b.name!r} is given twice")
            self.branches[b.name] = b
        if not self.branches:
            raise GpLossError("a genome needs at least one branch")
        check_exported_names(self.branches)

    def __iter__(self) -> Iterator[Branch]:
        return iter(self.branches.values())

    def __getitem__(self, name: str) -> Branch:
        return self.branches[name]

    def __len__(self) -> int:
        return len(self.branches)

    def formulas(self) -> dict[str, str]:
        return {b.name: b.formula for b in self}

    def __repr__(self) -> str:
        return "Genome(" + ", ".join(f"{n}={f}" for n, f in self.formulas().items()) + ")"

    @classmethod
    def from_formulas(cls, items: Iterable[tuple[str, str, str]]) -> "Genome":
        """Build from ``(branch name, kind name, formula text)`` triples."""
        branches = []
        for name, kind_name, text in items:
            kind = kind_named(kind_name)
            try:
                tree = parse_formula(kind, text)
            except FormulaError as err:
                raise FormulaError(f"branch {name!r}: {err}", err.formula, err.position) from None
            branches.append(Branch(name, kind, tree))
        return cls(branches)

    @classmethod
    def from_specs(cls, specs: Iterable[str]) -> "Genome":
        """Build from command-line specs ``KIND=FORMULA`` or ``NAME:KIND=FORMULA``."""
        items = []
        for spec in specs:
            head, sep, text = spec.partition("=")
            if not sep:
                raise GpLossError(
                    f"expected KIND=FORMULA or NAME:KIND=FORMULA, got {spec!r} "
                    f"(e.g. cls='neg(dot(y, log(softmax(x))))')")
            name, _, kind_name = head.strip().rpartition(":")
            kind_name = kind_name.strip()
            items.append((name.strip() or kind_name, kind_name, text))
        return cls.from_formulas(items)

    def to_dict(self) -> dict:
        return {"branches": [b.to_dict() for b in self]}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_dict(cls, data: dict) -> "Genome":
        try:
            rows = data["branches"]
            items = [(r["name"], r["kind"], r["formula"]) for r in rows]
        except (KeyError, TypeError) as err:
            raise GpLossError(
                f"not a genome: expected {{\"branches\": [{{\"name\", \"kind\", \"formula\"}}, ...]}} "
                f"({type(err).__name__}: {err})") from None
        return cls.from_formulas(items)

    @classmethod
    def from_json(cls, text: str) -> "Genome":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise GpLossError(f"not valid JSON: {err}") from None
        return cls.from_dict(data)

"""Export a genome as a standalone Python module that imports only ``torch`` and ``math``.

One function per branch, named after the branch, takes the branch inputs in
the kind's order (``cls(x, y, w)``, ``bcls(x, y, w)``, ``reg(i, u, e)``,
``zero(yhat, y)``) and returns the reduced scalar loss. Each branch also gets an
``nn.Module`` wrapper, and ``GenomeLoss`` sums all branches.
"""
from __future__ import annotations

from deap import gp

import gp_loss
from primitives import Kind

from gp_loss.export.render import render
from gp_loss.kinds import kind_spec
from gp_loss.language.genome import Genome

MAX_NESTING = 40  # CPython refuses more than 200 nested parentheses


def _leaf(node: gp.Terminal) -> str:
    return node.value if isinstance(node.value, str) else repr(node.value)


def branch_body(kind: Kind, tree: gp.PrimitiveTree) -> tuple[list[str], dict[str, str]]:
    """Statements computing the branch output ``o`` and the helpers they call."""
    r = render(kind, tree, lambda op: op.py, _leaf, lambda t: f"({t})",
               broadcast=lambda t: f"{t}[:, None]", max_nesting=MAX_NESTING)
    return r.lines + [f"o = {r.expr}"], r.helpers


def _class_name(branch: str) -> str:
    return "".join(part.capitalize() for part in branch.split("_")) + "Loss"


def export_torch(genome: Genome, header: str = "") -> str:
    """Python source of a module with the genome's losses."""
    helpers: dict[str, str] = {}
    functions, classes = [], []
    for b in genome:
        body, used = branch_body(b.kind, b.tree)
        helpers.update(used)
        reduction = kind_spec(b.kind).reduction
        args = ", ".join(b.kind.inputs)
        inputs_doc = "\n".join(f"        {n}: {d}" for n, d in b.kind.input_docs.items())
        lines = [
            f"def {b.name}({args}):",
            f'    """{b.kind.name} loss ({b.kind.description}).',
            "",
            f"    Formula: {b.formula}",
            "",
            "    Args:",
            inputs_doc,
            "",
            f"    Returns the scalar loss: {reduction.doc}.",
            '    """',
            *("    " + line for line in body),
            f"    return {reduction.source}",
        ]
        functions.append("\n".join(lines))
        classes.append("\n".join([
            f"class {_class_name(b.name)}(torch.nn.Module):",
            f'    """``nn.Module`` wrapper of :func:`{b.name}`."""',
            "",
            f"    def forward(self, {args}):",
            f"        return {b.name}({args})",
        ]))
    names = [b.name for b in genome]
    total = "\n".join([
        "class GenomeLoss(torch.nn.Module):",
        '    """Sum of the branch losses; pass each branch its inputs as a tuple,',
        "    e.g. ``GenomeLoss()(" + ", ".join(f"{n}=(...)" for n in names) + ")``.",
        '    """',
        "",
        "    def forward(self, " + ", ".join(f"{n}=None" for n in names) + "):",
        "        total = 0",
        *(f"        if {n} is not None:\n            total = total + {n}_fn(*{n})" for n in names),
        "        return total",
    ])
    aliases = "\n".join(f"{n}_fn = {n}" for n in names)  # forward()'s arguments shadow the names
    formulas = "\n".join(f"    {b.name} ({b.kind.name}): {b.formula}" for b in genome)
    parts = [
        f'"""Loss functions exported by gp-loss {gp_loss.__version__}.\n\n'
        f"{header + chr(10) + chr(10) if header else ''}"
        f"Branches:\n{formulas}\n\nRequires only torch.\n\"\"\"",
        "import math  # noqa: F401  (used by some helpers)\n\nimport torch",
        *(helpers[k] for k in sorted(helpers)),
        *functions,
        aliases,
        *classes,
        total,
        "LOSSES = {" + ", ".join(f"{n!r}: {n}" for n in names) + "}",
    ]
    return "\n\n\n".join(p.rstrip("\n") for p in parts) + "\n"

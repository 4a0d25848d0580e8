"""Export a genome as a standalone Python module that imports only ``torch`` and ``math``.

One function per branch, named after the branch, takes the branch inputs in
the kind's order (``cls(x, y, w)``, ``bcls(x, y, w)``, ``reg(i, u, e)``,
``zero(yhat, y)``) and returns the reduced scalar loss. Each branch also gets an
``nn.Module`` wrapper, and ``GenomeLoss`` sums all branches.

Only data-safe text reaches the code: branch names are checked identifiers that
cannot clash with each other or the module's own names
(:func:`gp_loss.language.genome.check_exported_names`), leaves are the kind's
input names or finite numbers written with ``repr``, and outside text (the
header, formulas, descriptions) appears only inside docstrings, escaped so that
it cannot end them (:func:`docstring_text`).
"""
from __future__ import annotations

import math

from deap import gp

import gp_loss
from primitives import Kind

from gp_loss.errors import GpLossError
from gp_loss.export.render import render
from gp_loss.kinds import kind_spec
from gp_loss.language.genome import Genome, check_branch_name, check_exported_names, class_name

MAX_NESTING = 40  # CPython refuses more than 200 nested parentheses


def docstring_text(text: str) -> str:
    """``text`` written for the inside of a ``\"\"\"`` docstring, which then reads back as ``text``.

    Each line is escaped like a string literal (backslashes, control and
    non-ASCII characters as ``\\``, ``\\n``, ``\\xNN``, ``\\uNNNN``) and its quotes
    as ``\\"``, so no text can close the docstring or make it a syntax error;
    line breaks stay line breaks.
    """
    lines = str(text).splitlines() or [""]
    return "\n".join(line.encode("unicode_escape").decode("ascii").replace('"', '\\"') for line in lines)


def _leaf_of(kind: Kind):
    def leaf(node: gp.Terminal) -> str:
        value = node.value
        if isinstance(value, str):
            if value not in kind.inputs:
                raise GpLossError(f"cannot export leaf {value!r}: kind {kind.name!r} has inputs "
                                  f"{', '.join(kind.inputs)}")
            return value
        if type(value) not in (int, float) or not math.isfinite(value):
            raise GpLossError(f"cannot export constant {value!r}: constants must be finite numbers")
        return repr(value)
    return leaf


def branch_body(kind: Kind, tree: gp.PrimitiveTree) -> tuple[list[str], dict[str, str]]:
    """Statements computing the branch output ``o`` and the helpers they call."""
    r = render(kind, tree, lambda op: op.py, _leaf_of(kind), lambda t: f"({t})",
               broadcast=lambda t: f"{t}[:, None]", max_nesting=MAX_NESTING)
    return r.lines + [f"o = {r.expr}"], r.helpers


def export_torch(genome: Genome, header: str = "", aliases: dict[str, str] | None = None) -> str:
    """Python source of a module with the genome's losses.

    ``header``: any text for the module docstring (e.g. the run directory); it is escaped.
    ``aliases``: more names for branch functions, alias -> branch (a hall of fame's ``seg``
    for its ``top1_seg``); each is checked like a branch name.
    """
    doc = docstring_text
    also = dict(aliases or {})
    for b in genome:  # (checked when the genome was made; a branch may have been renamed since)
        check_branch_name(b.name)
    for alias, target in also.items():
        check_branch_name(alias)
        if target not in genome.branches:
            raise GpLossError(f"cannot export alias {alias!r}: the genome has no branch {target!r}")
        if alias in genome.branches:
            raise GpLossError(f"cannot export alias {alias!r}: a branch of the genome has that name")
    check_exported_names([b.name for b in genome] + list(also))
    helpers: dict[str, str] = {}
    functions, classes = [], []
    for b in genome:
        body, used = branch_body(b.kind, b.tree)
        helpers.update(used)
        reduction = kind_spec(b.kind).reduction
        args = ", ".join(b.kind.inputs)
        inputs_doc = "\n".join(f"        {n}: {doc(d)}" for n, d in b.kind.input_docs.items())
        lines = [
            f"def {b.name}({args}):",
            f'    """{doc(b.kind.name)} loss ({doc(b.kind.description)}).',
            "",
            f"    Formula: {doc(b.formula)}",
            "",
            "    Args:",
            inputs_doc,
            "",
            f"    Returns the scalar loss: {doc(reduction.doc)}.",
            '    """',
            *("    " + line for line in body),
            f"    return {reduction.source}",
        ]
        functions.append("\n".join(lines))
        classes.append("\n".join([
            f"class {class_name(b.name)}(torch.nn.Module):",
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
    formulas = "\n".join(f"    {b.name} ({doc(b.kind.name)}): {doc(b.formula)}" for b in genome)
    parts = [
        f'"""Loss functions exported by gp-loss {gp_loss.__version__}.\n\n'
        f"{doc(header) + chr(10) + chr(10) if header else ''}"
        f"Branches:\n{formulas}\n\nRequires only torch.\n\"\"\"",
        "import math  # noqa: F401  (used by some helpers)\n\nimport torch",
        *(helpers[k] for k in sorted(helpers)),
        *functions,
        *(f"{alias} = {target}  # the same loss under its branch's name" for alias, target in also.items()),
        aliases,
        *classes,
        total,
        "LOSSES = {" + ", ".join(f"{n!r}: {n}" for n in names) + "}",
    ]
    source = "\n\n\n".join(p.rstrip("\n") for p in parts) + "\n"
    try:
        compile(source, "<exported module>", "exec")
    except (SyntaxError, ValueError, RecursionError, MemoryError) as err:  # a bug here, never the user's
        raise GpLossError(f"cannot export: the generated module does not compile "
                          f"({type(err).__name__}: {err})") from None
    return source

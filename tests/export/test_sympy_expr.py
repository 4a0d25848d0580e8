"""SymPy export (PySR-style ``export_sympy``): the maths of a branch, simplified for display only."""
import math
import time

import pytest
import sympy
import torch

from gp_loss.cli import main
from gp_loss.errors import GpLossError
from gp_loss.export.sympy_expr import (SIMPLIFY_MAX_OPS, SYMBOLS, export_sympy, simplify_expr, sympy_function,
                                       sympy_latex, to_sympy)
from gp_loss.language.compile import compile_tree
from gp_loss.language.genome import Genome
from gp_loss.language.parse import parse_formula
from gp_loss.paper_losses import PAPER_LOSSES
from gp_loss.report.formulas import math_png
from primitives import KINDS, get_kind

x, y, w, i, u, e, yhat = (SYMBOLS[n] for n in ("x", "y", "w", "i", "u", "e", "yhat"))


def _expr(kind, text, simple=True):
    k = get_kind(kind)
    expr = to_sympy(k, parse_formula(k, text))
    return simplify_expr(expr) if simple else expr


def test_double_negations_and_added_negatives_fold():
    assert _expr("cls", "sub(w, neg(y))", simple=False) == w + y
    assert _expr("cls", "add(3, neg(x))", simple=False) == 3 - x
    top1 = _expr("cls", "div(div(sub(w, neg(y)), mul(2, softmax(add(3, neg(x))))), y)")
    assert str(top1) == "(w + y)/(2*y*softmax(3 - x))"
    assert "- -" not in sympy_latex(top1) and "+ -" not in sympy_latex(top1)


def test_simplify_uses_identities_and_never_lengthens():
    assert _expr("cls", "add(mul(sin(x), sin(x)), mul(cos(x), cos(x)))") == 1
    # As written where simplify finds nothing shorter (1 - i/u, not (u - i)/u).
    assert _expr("reg", "sub(1, div(i, u))") == 1 - i / u
    assert _expr("reg", "neg(log(div(i, u)))") == -sympy.log(i / u)
    ops = KINDS["cls"].operators
    assert _expr("cls", "mul(softmax(alf(x)), neg(abs(y)))") == -y * sympy_function(ops["softmax"])(
        sympy_function(ops["alf"])(x))  # |y| = y: targets are not negative


def test_constants_are_exact_and_operators_sympy_lacks_stay_named():
    assert _expr("cls", "mul(0.25, y)", simple=False) == sympy.Rational(1, 4) * y
    erf = _expr("cls", "erf(x)", simple=False)
    assert erf.func.__name__ == "erf" and not isinstance(erf, sympy.erf)  # the (0, 1)-rescaled erf
    sig = _expr("bcls", "sigmoid(x)", simple=False)
    assert sympy_latex(sig) == "\\sigma\\left(x\\right)"
    assert "\\langle" in sympy_latex(_expr("cls", "dot(y, log(softmax(x)))", simple=False))
    assert sympy_latex(_expr("zero", "mul(y, log(yhat))", simple=False)) == \
        "y\\,\\operatorname{slog}\\left(\\hat{y}\\right)"


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_every_operator_of_every_kind_has_a_sympy_form_and_a_genome_still_pickles(kind):
    import pickle

    for op in KINDS[kind].operators.values():
        assert isinstance(sympy_function(op)(*[x, y][:op.arity]), sympy.Basic), op.name
    # A genome carries its kind's operators into worker processes: their SymPy forms must pickle.
    genome = Genome.from_specs([f"{kind}=" + KINDS[kind].inputs[0]])
    assert pickle.loads(pickle.dumps(genome)).formulas() == genome.formulas()


@pytest.mark.parametrize("name", sorted(PAPER_LOSSES))
def test_every_paper_loss_exports_and_mathtext_draws_it(name):
    loss = PAPER_LOSSES[name]
    expr = _expr(loss.kind, loss.formula)
    png = math_png(sympy_latex(expr))
    assert png is not None and png.startswith(b"\x89PNG")


@pytest.mark.parametrize("formula", ["add(sub(1, div(i, u)), div(sub(e, u), e))",
                                     PAPER_LOSSES["cse_autoloss_b_reg"].formula,
                                     "mul(sqrt(div(i, e)), log(add(u, i)))"])
def test_the_expression_computes_what_the_tree_computes(formula):
    kind = get_kind("reg")
    tree = parse_formula(kind, formula)
    areas = torch.tensor([[30.0, 100.0, 140.0], [5.0, 60.0, 90.0]], dtype=torch.float64)
    expected = compile_tree(kind, tree)(*areas.T)
    for expr in (to_sympy(kind, tree), simplify_expr(to_sympy(kind, tree))):
        f = sympy.lambdify((i, u, e), expr, "math")
        for row, want in zip(areas.tolist(), expected.tolist()):
            assert math.isclose(f(*row), want, rel_tol=1e-9)


def _never_simplify(*args, **kwargs):
    raise AssertionError("sympy.simplify was called")


def test_a_huge_expression_is_shown_as_written_without_simplifying(monkeypatch):
    big = "x"
    for k in range(60):
        big = f"add(mul({k % 3 + 1}, sin({big})), cos(x))"
    written = _expr("cls", big, simple=False)
    assert sympy.count_ops(written) > SIMPLIFY_MAX_OPS
    monkeypatch.setattr(sympy, "simplify", _never_simplify)  # SymPy's time grows fast with the size
    assert simplify_expr(written) == written


def _spin_simplify(expr, **kwargs):
    start = time.thread_time()
    while time.thread_time() - start < 30:
        pass
    return sympy.Integer(0)  # shorter than any expression: returned only if the time limit never fired


def test_a_simplification_past_its_time_limit_shows_the_expression_as_written(monkeypatch):
    written = _expr("cls", "add(sub(w, neg(y)), mul(2, x))", simple=False)
    monkeypatch.setattr(sympy, "simplify", _spin_simplify)
    assert simplify_expr(written, seconds=0.05) == written


def test_export_sympy_of_a_genome_and_the_cli(capsys, tmp_path):
    genome = Genome.from_specs(["cls=sub(w, neg(y))", "box:reg=sub(1, div(i, u))"])
    out = export_sympy(genome)
    assert out["cls"].simple == w + y and out["box"].kind == "reg" and out["box"].formula == "sub(1, div(i, u))"
    assert main(["export", "cls=sub(w, neg(y))", "--sympy"]) == 0  # prints only: no --out needed
    assert capsys.readouterr().out.strip() == "cls (sympy): w + y"
    target = tmp_path / "m.py"
    assert main(["export", "cls=add(3, neg(x))", "--sympy", "--out", str(target)]) == 0
    assert "cls (sympy): 3 - x" in capsys.readouterr().out and target.exists()
    assert main(["export", "cls=x"]) == 2
    assert "--out is required" in capsys.readouterr().err


def test_a_leaf_that_is_not_an_input_is_refused():
    from deap import gp
    kind = get_kind("cls")
    tree = parse_formula(kind, "neg(x)")
    tree[1] = gp.Terminal("__import__", True, object)
    with pytest.raises(GpLossError, match="cannot write leaf"):
        to_sympy(kind, tree)

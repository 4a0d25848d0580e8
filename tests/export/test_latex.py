from gp_loss.export import to_latex
from gp_loss.language import parse_formula
from primitives import get_kind


def test_latex_of_paper_losses():
    cls = get_kind("cls")
    assert to_latex(cls, parse_formula(cls, "neg(dot(y, log(softmax(x))))")) == (
        "-\\left\\langle y, \\log\\left(\\operatorname{softmax}\\left(x\\right)\\right) \\right\\rangle")
    reg = get_kind("reg")
    assert to_latex(reg, parse_formula(reg, "add(sub(1, div(i, u)), div(sub(e, u), e))")) == (
        "1 - \\frac{i}{u} + \\frac{e - u}{e}")
    assert to_latex(reg, parse_formula(reg, "mul(sub(1, i), add(u, e))")) == (
        "\\left(1 - i\\right) \\cdot \\left(u + e\\right)")
    zero = get_kind("zero")
    assert to_latex(zero, parse_formula(zero, "square(add(yhat, y))")) == "\\left(\\hat{y} + y\\right)^{2}"

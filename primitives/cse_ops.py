"""The CSE-Autoloss operators (Liu et al., ICLR 2021), as its reference implementation defines them.

All functions take and return torch tensors (constants may be Python numbers).
Class-wise operators (``softmax``, ``dot``) work over dim 1, the class dimension.
"""
from __future__ import annotations

import math
import operator

import torch
import torch.nn.functional as F

from primitives.operator import (
    ADD, ATOM, BINARY, DOT, MUL, POW, UNARY, UNARY_ANY, UNARY_CLASSWISE,
    Operator, SympyFunction, SympyName, Template, call, latex_call,
)

LOG_EPS = 1e-20  # log(x) = ln(x + 1e-20)
DIV_EPS = 1e-20  # div(a, b) = a / (b + 1e-20)
EXP_MAX = 88.0  # float32 overflow bound of exp
_ERF_SCALE = math.sqrt(math.pi) / 4  # erf rescaled to slope 1/4 at 0


def neg(a):
    return -a


def exp(a):
    return torch.exp(torch.clamp(a, max=EXP_MAX))


def log(a):
    return torch.log(a + LOG_EPS)


def abs_(a):
    return torch.abs(a)


def sqrt(a):
    return torch.sqrt(a)


def softmax(a):
    return torch.softmax(a, 1)


def softplus(a):
    return F.softplus(a)


def sigmoid(a):
    return torch.sigmoid(a)


def gd(a):
    # Gudermannian of z = a*pi/4, rescaled to (0, 1): slope 1/4 at 0 like the sigmoid.
    return (2 * torch.atan(torch.tanh(a * (math.pi / 8))) * (2 / math.pi) + 1) / 2


def alf(a):
    # Algebraic function z/sqrt(1+z^2) of z = a/2, rescaled to (0, 1).
    z = a / 2
    return (z / torch.sqrt(1 + z * z) + 1) / 2


def erf(a):
    return (torch.erf(a * _ERF_SCALE) + 1) / 2


def erfc(a):
    # 1 - erf(a) on the same (0, 1) scale; torch.erfc keeps precision in the tail.
    return torch.erfc(a * _ERF_SCALE) / 2


def tanh(a):
    return torch.tanh(a)


def relu(a):
    return torch.relu(a)


def sin(a):
    return torch.sin(a)


def cos(a):
    return torch.cos(a)


def add(a, b):
    return a + b


def sub(a, b):
    return a - b


def mul(a, b):
    return a * b


def div(a, b):
    return a / (b + DIV_EPS)


def dot(a, b):
    # One value per sample, kept N×1 so it broadcasts against N×C tensors.
    return (a * b).sum(1, keepdim=True)


_HELPERS = {
    "_gd": "def _gd(t):\n"
           "    \"\"\"Gudermannian S-curve rescaled to (0, 1), slope 1/4 at 0.\"\"\"\n"
           "    return (2 * torch.atan(torch.tanh(t * (math.pi / 8))) * (2 / math.pi) + 1) / 2\n",
    "_alf": "def _alf(t):\n"
            "    \"\"\"Algebraic S-curve (t/2)/sqrt(1+(t/2)^2) rescaled to (0, 1).\"\"\"\n"
            "    z = t / 2\n"
            "    return (z / torch.sqrt(1 + z * z) + 1) / 2\n",
    "_erf": "def _erf(t):\n"
            "    \"\"\"Error function rescaled to (0, 1), slope 1/4 at 0.\"\"\"\n"
            "    return (torch.erf(t * (math.sqrt(math.pi) / 4)) + 1) / 2\n",
    "_erfc": "def _erfc(t):\n"
             "    \"\"\"1 - _erf(t).\"\"\"\n"
             "    return torch.erfc(t * (math.sqrt(math.pi) / 4)) / 2\n",
}


def _unary(name, fn, definition, py, latex, signature=UNARY_ANY, helper=None, *, sympy):
    helpers = {helper: _HELPERS[helper]} if helper else {}
    return Operator(name, 1, fn, definition, signature, py, latex, sympy, helpers)


def _binary(name, fn, definition, py, latex, signature=BINARY, *, sympy):
    return Operator(name, 2, fn, definition, signature, py, latex, sympy)


# SymPy forms: SymPy's own functions where it has one (``relu``: ``Max(x, 0)``); this language's
# S-curves, rescaled to (0, 1), stay named (never SymPy's ``erf``), and so do softmax, softplus and dot.
OPERATORS: dict[str, Operator] = {op.name: op for op in [
    _unary("neg", neg, "-x", Template("-@0", UNARY, (POW,)), Template("-@0", UNARY, (POW,)),
           sympy=operator.neg),
    _unary("exp", exp, "e^min(x, 88)", Template(
        "torch.exp(torch.clamp(@0, max=88.0))", ATOM, (0,)), Template("e^{@0}", POW, (0,)),
           sympy=SympyFunction("exp")),
    _unary("log", log, "ln(x + 1e-20)", Template("torch.log(@0 + 1e-20)", ATOM, (ADD,)),
           Template("\\log\\left(@0\\right)", ATOM, (0,)), sympy=SympyFunction("log")),
    _unary("abs", abs_, "|x|", call("torch.abs"), Template("\\left|@0\\right|", ATOM, (0,)),
           sympy=SympyFunction("Abs")),
    _unary("sqrt", sqrt, "sqrt(x) (NaN for x < 0)", call("torch.sqrt"),
           Template("\\sqrt{@0}", ATOM, (0,)), sympy=SympyFunction("sqrt")),
    _unary("softmax", softmax, "softmax over the class dimension", Template(
        "torch.softmax(@0, 1)", ATOM, (0,)), latex_call("softmax"), UNARY_CLASSWISE,
           sympy=SympyName("softmax")),
    _unary("softplus", softplus, "ln(1 + e^x)", call("torch.nn.functional.softplus"),
           latex_call("softplus"), sympy=SympyName("softplus")),
    _unary("sigmoid", sigmoid, "1 / (1 + e^-x)", call("torch.sigmoid"),
           Template("\\sigma\\left(@0\\right)", ATOM, (0,)),
           sympy=SympyName("sigmoid", latex="\\sigma\\left({0}\\right)", shown="σ(x)")),
    _unary("gd", gd, "(2 atan(tanh(z/2)) 2/pi + 1) / 2, z = x pi/4", call("_gd"),
           latex_call("gd"), helper="_gd", sympy=SympyName("gd")),
    _unary("alf", alf, "(z / sqrt(1 + z^2) + 1) / 2, z = x/2", call("_alf"),
           latex_call("alf"), helper="_alf", sympy=SympyName("alf")),
    _unary("erf", erf, "(erf(sqrt(pi)/4 x) + 1) / 2", call("_erf"),
           latex_call("erf"), helper="_erf", sympy=SympyName("erf")),
    _unary("erfc", erfc, "1 - erf(x), erf as above", call("_erfc"),
           latex_call("erfc"), helper="_erfc", sympy=SympyName("erfc")),
    _unary("tanh", tanh, "tanh(x)", call("torch.tanh"), Template("\\tanh\\left(@0\\right)", ATOM, (0,)),
           sympy=SympyFunction("tanh")),
    _unary("relu", relu, "max(x, 0)", call("torch.relu"), latex_call("relu"), sympy=SympyFunction("Max", (0,))),
    _unary("sin", sin, "sin(x)", call("torch.sin"), Template("\\sin\\left(@0\\right)", ATOM, (0,)),
           sympy=SympyFunction("sin")),
    _unary("cos", cos, "cos(x)", call("torch.cos"), Template("\\cos\\left(@0\\right)", ATOM, (0,)),
           sympy=SympyFunction("cos")),
    _binary("add", add, "a + b", Template("@0 + @1", ADD, (ADD, MUL)),
            Template("@0 + @1", ADD, (ADD, MUL)), sympy=operator.add),
    _binary("sub", sub, "a - b", Template("@0 - @1", ADD, (ADD, MUL)),
            Template("@0 - @1", ADD, (ADD, MUL)), sympy=operator.sub),
    _binary("mul", mul, "a * b", Template("@0 * @1", MUL, (MUL, UNARY)),
            Template("@0 \\cdot @1", MUL, (MUL, POW)), sympy=operator.mul),
    _binary("div", div, "a / (b + 1e-20)", Template("@0 / (@1 + 1e-20)", MUL, (MUL, ADD)),
            Template("\\frac{@0}{@1}", ATOM, (0, 0)), sympy=operator.truediv),
    _binary("dot", dot, "sum over classes of a*b: one value per sample",
            Template("(@0 * @1).sum(1)", ATOM, (MUL, UNARY)),
            Template("\\left\\langle @0, @1 \\right\\rangle", ATOM, (0, 0)), DOT,
            sympy=SympyName("dot", latex="\\left\\langle {0}, {1} \\right\\rangle", shown="⟨a, b⟩")),
]}

# The regression branch works on one value per box pair: no class dimension,
# and no S-curves (sigmoid, gd, alf, erf, erfc) squashing areas into (0, 1).
REGRESSION_EXCLUDED = ("softmax", "dot", "sigmoid", "gd", "alf", "erf", "erfc")
BINARY_CLASS_EXCLUDED = ("softmax", "dot")

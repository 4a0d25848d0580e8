"""The AutoLoss-Zero operators (Li et al., CVPR 2022, Table 1) on N×C×H×W tensors.

Every operator keeps the shape of its input: aggregations replace each element
by the aggregate (mean over N,H,W; mean over C; 3×3 max/min pooling with
stride 1 and padding 1).

Every operator also takes tensors with leading batch dimensions, ``...×N×C×H×W``,
and treats each leading index as a batch of its own: the aggregations count
their dimensions from the end (``mean_nhw`` averages dims -4, -2, -1, ``mean_c``
dim -3; the pools fold the leading dimensions into N and unfold them after), so
no value crosses from one leading index to another. The filters evaluate the B
samples of the rejection protocol stacked that way, in one call
(:attr:`gp_loss.kinds.KindSpec.stacks_samples`). On a 4-D tensor every operator
computes exactly what it computes on N×C×H×W alone.
"""
from __future__ import annotations

import operator

import torch
import torch.nn.functional as F

from primitives.operator import (
    ADD, ATOM, BINARY, MUL, POW, UNARY, Operator, SympyFunction, SympyName, Template, UNARY_ANY, call,
)

EPS = 1e-12


def add(a, b):
    return a + b


def mul(a, b):
    return a * b


def neg(a):
    return -a


def abs_(a):
    return torch.abs(a)


def inv(a):
    return 1 / (a + EPS)


def log(a):
    return torch.sign(a) * torch.log(torch.abs(a) + EPS)


def exp(a):
    return torch.exp(a)


def tanh(a):
    return torch.tanh(a)


def square(a):
    return torch.square(a)


def sqrt(a):
    return torch.sign(a) * torch.sqrt(torch.abs(a) + EPS)


def mean_nhw(a):
    return a.mean((-4, -2, -1), keepdim=True).expand_as(a)


def mean_c(a):
    return a.mean(-3, keepdim=True).expand_as(a)


def _pool3x3(a):
    """3×3 max pooling, stride 1, padding 1, of ``...×N×C×H×W``: leading dimensions folded into N."""
    if a.dim() <= 4:
        return F.max_pool2d(a, 3, 1, 1)
    return F.max_pool2d(a.reshape(-1, *a.shape[-3:]), 3, 1, 1).view(a.shape)


def maxpool3x3(a):
    return _pool3x3(a)


def minpool3x3(a):
    return -_pool3x3(-a)


_HELPERS = {
    "_slog": "def _slog(t):\n"
             "    \"\"\"Signed log: sign(t) * ln(|t| + 1e-12).\"\"\"\n"
             "    return torch.sign(t) * torch.log(torch.abs(t) + 1e-12)\n",
    "_ssqrt": "def _ssqrt(t):\n"
              "    \"\"\"Signed square root: sign(t) * sqrt(|t| + 1e-12).\"\"\"\n"
              "    return torch.sign(t) * torch.sqrt(torch.abs(t) + 1e-12)\n",
    "_mean_nhw": "def _mean_nhw(t):\n"
                 "    \"\"\"Every element replaced by its channel's mean over N, H, W.\"\"\"\n"
                 "    return t.mean((-4, -2, -1), keepdim=True).expand_as(t)\n",
    "_mean_c": "def _mean_c(t):\n"
               "    \"\"\"Every element replaced by the mean over channels.\"\"\"\n"
               "    return t.mean(-3, keepdim=True).expand_as(t)\n",
    "_minpool3x3": "def _minpool3x3(t):\n"
                   "    \"\"\"3x3 min pooling, stride 1, padding 1.\"\"\"\n"
                   "    return -torch.nn.functional.max_pool2d(-t, 3, 1, 1)\n",
}


def _op(name, arity, fn, definition, py, latex, helper=None, *, sympy):
    signature = BINARY if arity == 2 else UNARY_ANY
    helpers = {helper: _HELPERS[helper]} if helper else {}
    return Operator(name, arity, fn, definition, signature, py, latex, sympy, helpers)


# SymPy forms: the signed log and square root and the aggregations stay named (SymPy's log and sqrt
# would be other functions); the rest are SymPy's own.
OPERATORS: dict[str, Operator] = {op.name: op for op in [
    _op("add", 2, add, "a + b", Template("@0 + @1", ADD, (ADD, MUL)),
        Template("@0 + @1", ADD, (ADD, MUL)), sympy=operator.add),
    _op("mul", 2, mul, "a * b", Template("@0 * @1", MUL, (MUL, UNARY)),
        Template("@0 \\cdot @1", MUL, (MUL, POW)), sympy=operator.mul),
    _op("neg", 1, neg, "-x", Template("-@0", UNARY, (POW,)), Template("-@0", UNARY, (POW,)), sympy=operator.neg),
    _op("abs", 1, abs_, "|x|", call("torch.abs"), Template("\\left|@0\\right|", ATOM, (0,)),
        sympy=SympyFunction("Abs")),
    _op("inv", 1, inv, "1 / (x + 1e-12)", Template("1 / (@0 + 1e-12)", MUL, (ADD,)),
        Template("\\frac{1}{@0}", ATOM, (0,)), sympy=SympyFunction("Pow", (-1,))),
    _op("log", 1, log, "sign(x) ln(|x| + 1e-12)", call("_slog"),
        Template("\\operatorname{slog}\\left(@0\\right)", ATOM, (0,)), "_slog", sympy=SympyName("slog")),
    _op("exp", 1, exp, "e^x", call("torch.exp"), Template("e^{@0}", POW, (0,)), sympy=SympyFunction("exp")),
    _op("tanh", 1, tanh, "tanh(x)", call("torch.tanh"), Template("\\tanh\\left(@0\\right)", ATOM, (0,)),
        sympy=SympyFunction("tanh")),
    _op("square", 1, square, "x^2", call("torch.square"), Template("@0^{2}", POW, (ATOM,)),
        sympy=SympyFunction("Pow", (2,))),
    _op("sqrt", 1, sqrt, "sign(x) sqrt(|x| + 1e-12)", call("_ssqrt"),
        Template("\\operatorname{ssqrt}\\left(@0\\right)", ATOM, (0,)), "_ssqrt", sympy=SympyName("ssqrt")),
    _op("mean_nhw", 1, mean_nhw, "mean over N, H, W (shape kept)", call("_mean_nhw"),
        Template("\\operatorname{mean}_{nhw}\\left(@0\\right)", ATOM, (0,)), "_mean_nhw",
        sympy=SympyName("mean_nhw", latex="\\operatorname{{mean}}_{{nhw}}\\left({0}\\right)")),
    _op("mean_c", 1, mean_c, "mean over C (shape kept)", call("_mean_c"),
        Template("\\operatorname{mean}_{c}\\left(@0\\right)", ATOM, (0,)), "_mean_c",
        sympy=SympyName("mean_c", latex="\\operatorname{{mean}}_{{c}}\\left({0}\\right)")),
    _op("maxpool3x3", 1, maxpool3x3, "3x3 max pooling, stride 1, padding 1",
        Template("torch.nn.functional.max_pool2d(@0, 3, 1, 1)", ATOM, (0,)),
        Template("\\operatorname{maxpool}_{3\\times3}\\left(@0\\right)", ATOM, (0,)),
        sympy=SympyName("maxpool3x3", latex="\\operatorname{{maxpool}}_{{3\\times 3}}\\left({0}\\right)",
                        shown="maxpool_3×3(x)")),
    _op("minpool3x3", 1, minpool3x3, "3x3 min pooling, stride 1, padding 1", call("_minpool3x3"),
        Template("\\operatorname{minpool}_{3\\times3}\\left(@0\\right)", ATOM, (0,)), "_minpool3x3",
        sympy=SympyName("minpool3x3", latex="\\operatorname{{minpool}}_{{3\\times 3}}\\left({0}\\right)",
                        shown="minpool_3×3(x)")),
]}

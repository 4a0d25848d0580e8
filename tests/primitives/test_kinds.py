"""The operator sets are exactly the papers' (CSE-Autoloss, Liu et al., ICLR 2021; AutoLoss-Zero,
Li et al., CVPR 2022), and their definitions are right."""
import math

import pytest
import torch

from primitives import KINDS, get_kind
from primitives import cse_ops, zero_ops
from primitives.types import Const, Elem, Sample, Tensor

CSE_UNARY = ["neg", "exp", "log", "abs", "sqrt", "softmax", "softplus", "sigmoid", "gd", "alf", "erf",
             "erfc", "tanh", "relu", "sin", "cos"]
CSE_BINARY = ["add", "sub", "mul", "div", "dot"]


def test_operator_names_per_kind():
    assert list(KINDS) == ["cls", "bcls", "reg", "zero"]
    assert sorted(get_kind("cls").operators) == sorted(CSE_UNARY + CSE_BINARY)
    assert sorted(get_kind("bcls").operators) == sorted(set(CSE_UNARY + CSE_BINARY) - {"softmax", "dot"})
    assert sorted(get_kind("reg").operators) == sorted(
        set(CSE_UNARY + CSE_BINARY) - {"softmax", "dot", "sigmoid", "gd", "alf", "erf", "erfc"})
    assert sorted(get_kind("zero").operators) == sorted(
        ["add", "mul", "neg", "abs", "inv", "log", "exp", "tanh", "square", "sqrt",
         "mean_nhw", "mean_c", "maxpool3x3", "minpool3x3"])


def test_inputs_and_constants():
    assert get_kind("cls").inputs == ("x", "y", "w")
    assert get_kind("bcls").inputs == ("x", "y", "w")
    assert get_kind("reg").inputs == ("i", "u", "e")
    assert get_kind("zero").inputs == ("yhat", "y")
    assert get_kind("cls").search_constants == (1, 2, 3)
    assert get_kind("zero").search_constants == (1,)


def test_typing_rules():
    cls = get_kind("cls")
    (softmax,) = cls.overloads["softmax"]
    assert softmax.args == [Elem] and softmax.ret is Elem
    (dot,) = cls.overloads["dot"]
    assert dot.args == [Elem, Elem] and dot.ret is Sample
    for prims in cls.overloads.values():
        for p in prims:
            assert p.args != [Const, Const]
    assert all(issubclass(p.ret, Tensor) for p in cls.pset.primitives[Tensor])
    assert cls.pset.ret is Tensor and not issubclass(Const, Tensor)
    assert all(p.ret is Elem for k in ("bcls", "reg", "zero") for ps in get_kind(k).overloads.values() for p in ps)


def test_cse_definitions():
    x = torch.linspace(-6, 6, 101, dtype=torch.float64)
    h = 1e-6
    for fn in (cse_ops.gd, cse_ops.alf, cse_ops.erf, cse_ops.sigmoid):
        values = fn(x)
        assert (values > 0).all() and (values < 1).all()
        slope = (fn(torch.tensor(h, dtype=torch.float64)) - fn(torch.tensor(-h, dtype=torch.float64))) / (2 * h)
        assert slope.item() == pytest.approx(0.25, rel=1e-6)
    torch.testing.assert_close(cse_ops.erfc(x), 1 - cse_ops.erf(x))
    assert cse_ops.exp(torch.tensor(1000.0)).item() == pytest.approx(math.exp(88), rel=1e-5)
    assert torch.isnan(cse_ops.log(torch.tensor(-1.0)))
    assert cse_ops.log(torch.tensor(0.0)).item() == pytest.approx(math.log(1e-20), rel=1e-3)
    assert torch.isfinite(cse_ops.div(torch.tensor(1.0, dtype=torch.float64), torch.tensor(0.0, dtype=torch.float64)))
    a = torch.randn(4, 3)
    torch.testing.assert_close(cse_ops.softmax(a).sum(1), torch.ones(4))
    assert cse_ops.dot(a, a).shape == (4, 1)


def test_zero_definitions_keep_shape():
    a = torch.randn(2, 3, 5, 5)
    for name, op in zero_ops.OPERATORS.items():
        out = op.fn(a, a) if op.arity == 2 else op.fn(a)
        assert out.shape == a.shape, name
    assert zero_ops.log(torch.tensor(-math.e)).item() == pytest.approx(-1)
    assert zero_ops.sqrt(torch.tensor(-4.0)).item() == pytest.approx(-2)
    torch.testing.assert_close(zero_ops.mean_nhw(a)[1, :, 2, 3], a.mean((0, 2, 3)))
    assert zero_ops.minpool3x3(a)[0, 0, 2, 2] == a[0, 0, 1:4, 1:4].min()

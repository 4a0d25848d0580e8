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
    assert list(KINDS) == ["cls", "bcls", "reg", "zero", "heat"]
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
    assert get_kind("heat").inputs == ("yhat", "y", "w")
    assert get_kind("heat").operators == get_kind("zero").operators
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


# The definitions before leading batch dimensions were allowed: on N×C×H×W tensors the
# operators must compute exactly these, to the bit (values and gradients).
_FOUR_D = {
    "mean_nhw": lambda a: a.mean((0, 2, 3), keepdim=True).expand_as(a),
    "mean_c": lambda a: a.mean(1, keepdim=True).expand_as(a),
    "maxpool3x3": lambda a: torch.nn.functional.max_pool2d(a, 3, 1, 1),
    "minpool3x3": lambda a: -torch.nn.functional.max_pool2d(-a, 3, 1, 1),
}


@pytest.mark.parametrize("name", sorted(_FOUR_D))
def test_zero_aggregations_on_four_dims_are_unchanged(name):
    g = torch.Generator().manual_seed(0)
    for shape in [(2, 3, 5, 5), (4, 3, 8, 8), (1, 1, 1, 1), (3, 2, 1, 7)]:
        a = torch.randn(shape, generator=g)
        a[0, 0, 0, 0] = a.flatten()[-1]  # a tie, for the pools' argmax
        x, ref = a.clone().requires_grad_(), a.clone().requires_grad_()
        out, expected = zero_ops.OPERATORS[name].fn(x), _FOUR_D[name](ref)
        assert torch.equal(out, expected)
        upstream = torch.randn(shape, generator=g)
        (gx,) = torch.autograd.grad(out, x, upstream)
        (gref,) = torch.autograd.grad(expected, ref, upstream)
        assert torch.equal(gx, gref)


@pytest.mark.parametrize("name", list(zero_ops.OPERATORS))
@pytest.mark.parametrize("lead", [(5,), (2, 3)])
def test_zero_operators_take_leading_batch_dimensions(name, lead):
    # ...×N×C×H×W: each leading index is a batch of its own, as if evaluated alone.
    op = zero_ops.OPERATORS[name]
    g = torch.Generator().manual_seed(1)
    a = torch.randn(*lead, 4, 3, 6, 5, generator=g)
    b = torch.randn(*lead, 4, 3, 6, 5, generator=g)
    out = op.fn(a, b) if op.arity == 2 else op.fn(a)
    assert out.shape == a.shape
    flat_a, flat_b, flat_out = a.reshape(-1, 4, 3, 6, 5), b.reshape(-1, 4, 3, 6, 5), out.reshape(-1, 4, 3, 6, 5)
    for k in range(flat_a.shape[0]):
        alone = op.fn(flat_a[k], flat_b[k]) if op.arity == 2 else op.fn(flat_a[k])
        torch.testing.assert_close(flat_out[k], alone, rtol=1e-6, atol=1e-7)
        if name in ("maxpool3x3", "minpool3x3"):
            assert torch.equal(flat_out[k], alone)  # a max is exact


@pytest.mark.parametrize("name", ["mean_nhw", "mean_c", "minpool3x3"])
def test_exported_helpers_match_the_operators(name):
    # The helpers of exported code state the same rule as the operators.
    namespace = {"torch": torch}
    exec(zero_ops._HELPERS[f"_{name}"], namespace)
    a = torch.randn(5, 2, 3, 4, 4, generator=torch.Generator().manual_seed(2))
    for t in (a[0], a):
        if name == "minpool3x3" and t.dim() > 4:
            continue  # exported code is per batch (N×C×H×W), as its reduction
        assert torch.equal(namespace[f"_{name}"](t), zero_ops.OPERATORS[name].fn(t))

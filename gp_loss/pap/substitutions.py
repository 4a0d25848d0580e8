"""The parameterised substitutions of Parameterized AP Loss and their 41-value search space.

Tao et al., "Searching Parameterized AP Loss for Object Detection" (NeurIPS 2021),
as the official implementation (fundamentalvision/Parameterized-AP-Loss) defines it.

**The five functions.** The loss (:func:`gp_loss.pap.loss.pap_loss`) replaces the
non-differentiable parts of box AP by five monotone maps of [0, 1] onto [0, 1]:

- ``H1`` and ``H2`` take the normalised score difference ``x = clamp((s_j - s_i)/2 + 1/2, 0, 1)``
  of a candidate j against a positive i (they stand in for the step ``1[s_j > s_i]``): ``H1``
  in the rank (the denominator), ``H2`` in the numerator;
- ``I1``, ``I2`` and ``I3`` take a localisation quality u in [0, 1] (the GIoU mapped to
  ``(giou + 1)/2``; a negative's u is 0) and stand in for the IoU-threshold indicators.

**One function, 8 values of θ.** Each searched function is piecewise linear through six
control points: the fixed (0, 0), four free points, and the fixed (1, 1). Point p
(p = 1..4) is ``cp_p = θ_p · (1 − cp_{p−1}) + cp_{p−1}`` for x and y alike (cp_0 = (0, 0)),
so any θ in [0, 1]^8 gives non-decreasing x and y: the function is monotone by
construction. The 8 values are **interleaved** as in the official ``convert_theta_coordinate``:
``(θx_1, θy_1, θx_2, θy_2, θx_3, θy_3, θx_4, θy_4)``.

**The 41 values.** Five functions × 8, in the official search's order :data:`THETA_ORDER`
= ``("H2", "I2", "I3", "I1", "H1")`` (``func_types`` of ``search_configs/cfg_search_retina.py``,
"function order should correspond to paploss.py"), then one value θ_41 for the regression
gradient scale ``10 ** (2 θ_41 − 1)`` (in [0.1, 10]; θ_41 = 0.5 is a scale of 1). A vector
sampled by the official search therefore loads here unchanged. The "searched shared"
ablation (appendix Table 3) uses one function for all five: 8 + 1 = 9 values
(:data:`SHARED_THETA_SIZE`).

**Identity.** θ = (0.2, 0.2, 0.25, 0.25, 1/3, 1/3, 0.5, 0.5) puts the control points at
0.2, 0.4, 0.6, 0.8 on the diagonal, i.e. y = x (it is also the official search's initial mean,
which uses 0.3333 for 1/3). :class:`PiecewiseLinear` evaluates a diagonal function exactly.

**Jumps.** θx_p = 0 (or a point reaching x = 1) makes two control points share an x: the
function then jumps there. Between 0 and 1 it takes the lower value at the jump (left
continuous, as the official ``_linear``); at the ends it is pinned to f(0) = 0 and f(1) = 1
(the official code would return the first point's y at x = 1 and the last zero-x point's y
at x = 0, which only differs for such degenerate θ).
"""
from __future__ import annotations

import json
import math
import numbers
from dataclasses import dataclass, field
from typing import Iterable, Sequence

import torch
from torch import Tensor

from gp_loss.errors import GpLossError

FUNCTION_NAMES: tuple[str, ...] = ("H1", "H2", "I1", "I2", "I3")
"""The five substitutions, by the paper's names."""

THETA_ORDER: tuple[str, ...] = ("H2", "I2", "I3", "I1", "H1")
"""Order of the five 8-value blocks in the 41-value θ (the official search's ``func_types``)."""

THETA_PER_FUNCTION = 8
THETA_SIZE = 41  # 5 functions x 8 + 1 gradient-scale value
SHARED_THETA_SIZE = 9  # one function for all five (8) + 1 gradient-scale value

IDENTITY_FUNCTION_THETA: tuple[float, ...] = (0.2, 0.2, 0.25, 0.25, 1 / 3, 1 / 3, 0.5, 0.5)
IDENTITY_GRAD_SCALE_THETA = 0.5

NAMED_SUBSTITUTIONS: tuple[str, ...] = ("sigmoid", "sqrt", "linear", "square", "identity",
                                        "searched_retinanet_coco")
"""Names :meth:`PAPParameters.named` knows: the handcrafted substitutions of the appendix's
Table 3 (``linear`` and ``identity`` are the same), and the published RetinaNet search result."""

JSON_FORMAT = "gp-loss/pap-parameters"
JSON_VERSION = 1

# configs/paploss/paploss_retinanet_r50_fpn.py of the official repository: the parameters the
# authors searched for RetinaNet R50-FPN on COCO (40.5 AP), control points (x, y) per function in
# THETA_ORDER, and the gradient scale they trained with (``reg_weight``).
RETINANET_COCO_CONTROL_POINTS: tuple[tuple[float, ...], ...] = (
    (0.0, 0.0, 0.4182, 0.0277, 0.4948, 0.2187, 0.6882, 0.2624, 0.802, 0.6688, 1.0, 1.0),
    (0.0, 0.0, 0.1279, 0.3696, 0.3056, 0.4708, 0.5198, 0.529, 0.6983, 0.6709, 1.0, 1.0),
    (0.0, 0.0, 0.0931, 0.0289, 0.3607, 0.5585, 0.4823, 0.7131, 0.6291, 0.8162, 1.0, 1.0),
    (0.0, 0.0, 0.4914, 0.1499, 0.5492, 0.1664, 0.6259, 0.3051, 0.7945, 0.6195, 1.0, 1.0),
    (0.0, 0.0, 0.413, 0.0798, 0.4356, 0.3571, 0.5361, 0.7063, 0.8097, 0.9083, 1.0, 1.0),
)
RETINANET_COCO_GRAD_SCALE = 4.1231


# ---------------------------------------------------------------------------------------------
# θ <-> control points, gradient scale

def _check_unit_numbers(values, expected: int, what: str) -> tuple[float, ...]:
    """``values`` as a tuple of floats: exactly ``expected`` finite numbers in [0, 1]."""
    if isinstance(values, Tensor):
        values = values.detach().reshape(-1).tolist()
    if isinstance(values, (str, bytes, dict)) or not isinstance(values, Iterable):
        raise GpLossError(f"{what}: expected a list of {expected} numbers in [0, 1], "
                          f"got {type(values).__name__}")
    values = list(values)
    if len(values) != expected:
        raise GpLossError(f"{what}: expected exactly {expected} numbers in [0, 1], got {len(values)}")
    out = []
    for k, v in enumerate(values):
        if isinstance(v, bool) or not isinstance(v, numbers.Real):  # numpy scalars are Real
            raise GpLossError(f"{what}: value {k} is not a number: {v!r}")
        v = float(v)
        if not math.isfinite(v):
            raise GpLossError(f"{what}: value {k} is not finite: {v!r}")
        if not 0.0 <= v <= 1.0:
            raise GpLossError(f"{what}: value {k} = {v!r} is outside [0, 1]")
        out.append(v)
    return tuple(out)


def control_points_from_theta(theta: Sequence[float]) -> tuple[tuple[float, float], ...]:
    """The six control points (x, y), (0, 0) and (1, 1) included, of one function's 8 θ values."""
    theta = _check_unit_numbers(theta, THETA_PER_FUNCTION, "function θ")
    px, py = 0.0, 0.0
    points = [(0.0, 0.0)]
    for p in range(4):
        px = min(1.0, theta[2 * p] * (1.0 - px) + px)
        py = min(1.0, theta[2 * p + 1] * (1.0 - py) + py)
        points.append((px, py))
    points.append((1.0, 1.0))
    return tuple(points)


def theta_from_control_points(points) -> tuple[float, ...]:
    """The 8 θ values of a function given its control points.

    ``points``: 4 or 6 (x, y) pairs, or a flat list of 8 or 12 numbers interleaved
    ``x, y, x, y, ...`` (the official configuration's layout, (0, 0) and (1, 1) included).
    Both coordinates must be non-decreasing and in [0, 1]. Where the previous coordinate is
    already 1 the θ value is arbitrary; it is set to 0.
    """
    flat = [float(v) for pt in points for v in (pt if isinstance(pt, (tuple, list)) else (pt,))]
    if len(flat) == 12:
        if flat[:2] != [0.0, 0.0] or flat[-2:] != [1.0, 1.0]:
            raise GpLossError("control points: with six points the first must be (0, 0) "
                              f"and the last (1, 1), got {flat[:2]} and {flat[-2:]}")
        flat = flat[2:10]
    if len(flat) != 8:
        raise GpLossError(f"control points: expected 4 free points (8 numbers), got {len(flat)} numbers")
    theta = []
    prev = [0.0, 0.0]
    for k, v in enumerate(flat):
        c = k % 2
        if not math.isfinite(v) or not prev[c] <= v <= 1.0:
            raise GpLossError(f"control points: coordinate {k} = {v!r} is not in "
                              f"[{prev[c]}, 1] (coordinates must be non-decreasing, within [0, 1])")
        theta.append(0.0 if prev[c] >= 1.0 else min(1.0, max(0.0, (v - prev[c]) / (1.0 - prev[c]))))
        prev[c] = v
    return tuple(theta)


def grad_scale_from_theta(t: float) -> float:
    """The regression gradient scale ``10 ** (2 t − 1)`` of θ_41 = t (t = 0.5 gives 1)."""
    return 10.0 ** (2.0 * float(t) - 1.0)


def theta_from_grad_scale(scale: float) -> float:
    """θ_41 of a gradient scale in [0.1, 10]."""
    scale = float(scale)
    if not (math.isfinite(scale) and 0.1 * (1 - 1e-12) <= scale <= 10.0 * (1 + 1e-12)):
        raise GpLossError(f"gradient scale {scale!r} is outside [0.1, 10], the range θ_41 covers")
    return min(1.0, max(0.0, (math.log10(scale) + 1.0) / 2.0))


# ---------------------------------------------------------------------------------------------
# substitutions

class _ApplySubstitution(torch.autograd.Function):
    """y = f(clamp(x·scale + shift, 0, 1)) with f's own derivative: saves one tensor (dy/dx).

    The official loss builds these [k, P] maps with plain autograd ops, which keeps several
    [k, P] intermediates alive for the backward pass; here only the derivative is kept.
    The clamp passes the gradient at its bounds (inclusive), as ``torch.clamp`` does.
    """

    @staticmethod
    def forward(ctx, x, substitution, scale, shift):  # noqa: D401
        need = ctx.needs_input_grad[0]
        u = x * scale + shift if (scale != 1.0 or shift != 0.0) else x.clone()
        inside = ((u >= 0) & (u <= 1)) if need else None
        u.clamp_(0.0, 1.0)
        value, derivative = substitution._evaluate(u, need)
        if need:
            if scale != 1.0:
                derivative.mul_(scale)
            derivative.masked_fill_(~inside, 0.0)
            ctx.save_for_backward(derivative)
        return value

    @staticmethod
    def backward(ctx, grad):
        (derivative,) = ctx.saved_tensors
        return grad * derivative, None, None, None


class Substitution:
    """A monotone map used in place of a step or an indicator.

    ``f(x)`` evaluates on any tensor shape; inputs are clamped to [0, 1] first (the clamp's
    gradient is 0 outside). :meth:`of_difference` evaluates an ``H`` function on a raw score
    difference ``d = s_j − s_i``: by default ``f(clamp(d/2 + 1/2, 0, 1))``, as the official code.
    Differentiable with respect to the input (not with respect to θ).
    """

    name: str = "substitution"

    def __call__(self, x: Tensor) -> Tensor:
        return _ApplySubstitution.apply(x, self, 1.0, 0.0)

    def of_difference(self, d: Tensor) -> Tensor:
        """``H(d)`` for a score difference ``d = s_j − s_i``: ``f(clamp(d/2 + 1/2, 0, 1))``."""
        return _ApplySubstitution.apply(d, self, 0.5, 0.5)

    def _evaluate(self, u: Tensor, need_derivative: bool) -> tuple[Tensor, Tensor | None]:
        """(f(u), f'(u)) for u already in [0, 1]; may overwrite ``u``."""
        raise NotImplementedError

    def control_points(self, samples: int = 33) -> tuple[tuple[float, float], ...]:
        """Points to draw the function through: exact for a piecewise-linear one, sampled otherwise."""
        xs = torch.linspace(0.0, 1.0, samples, dtype=torch.float64)
        with torch.no_grad():
            ys = self(xs)
        return tuple((float(a), float(b)) for a, b in zip(xs.tolist(), ys.tolist()))

    def to_dict(self) -> dict:
        return {"name": self.name}


class PiecewiseLinear(Substitution):
    """Piecewise-linear f on [0, 1] through (0, 0), four free points, (1, 1).

    Build with :meth:`from_theta` (8 values in [0, 1], interleaved x/y, see the module's
    docstring) or :meth:`from_control_points`. Evaluation is one ``bucketize`` and four table
    look-ups per element, whatever the tensor's shape.
    """

    name = "piecewise_linear"

    def __init__(self, points: Sequence[tuple[float, float]], theta: Sequence[float] | None = None):
        points = tuple((float(x), float(y)) for x, y in points)
        if len(points) != 6 or points[0] != (0.0, 0.0) or points[-1] != (1.0, 1.0):
            raise GpLossError("piecewise-linear substitution: expected 6 control points from (0, 0) to (1, 1)")
        for (xa, ya), (xb, yb) in zip(points, points[1:]):
            if xb < xa or yb < ya:
                raise GpLossError(f"piecewise-linear substitution: control points {points} are not monotone")
        self.points = points
        self.theta = tuple(theta) if theta is not None else theta_from_control_points(points)
        self.is_identity = all(abs(x - y) <= 1e-12 for x, y in points)
        xs = [p[0] for p in points]
        ys = [p[1] for p in points]
        self._xs, self._ys = xs, ys
        self._tables: dict = {}

    @classmethod
    def from_theta(cls, theta: Sequence[float]) -> "PiecewiseLinear":
        theta = _check_unit_numbers(theta, THETA_PER_FUNCTION, "function θ")
        return cls(control_points_from_theta(theta), theta)

    @classmethod
    def from_control_points(cls, points) -> "PiecewiseLinear":
        theta = theta_from_control_points(points)
        return cls.from_theta(theta)

    @classmethod
    def identity(cls) -> "PiecewiseLinear":
        return cls.from_theta(IDENTITY_FUNCTION_THETA)

    def _table(self, device, dtype):
        """The control points rounded to ``dtype`` and the slopes of those rounded points (a
        segment that rounding makes vertical gets slope 0 and is never selected), on ``device``."""
        key = (device, dtype)
        table = self._tables.get(key)
        if table is None:
            xs = torch.tensor(self._xs, dtype=dtype).double()
            ys = torch.tensor(self._ys, dtype=dtype).double()
            dx, dy = xs[1:] - xs[:-1], ys[1:] - ys[:-1]
            big = torch.finfo(dtype).max
            slope = torch.where(dx > 0, dy / dx.clamp_min(1e-300), torch.zeros_like(dx)).clamp(0.0, big)
            # at u == 0 the official ``_linear`` takes the segment that starts at the last
            # control point with x == 0 (its ``(ctrl_x == 0).sum() * (x == 0)`` term)
            zero_interior = int((xs[1:5] == 0).sum())
            table = tuple(t.to(device=device, dtype=dtype) for t in (xs[1:5], xs[:5], ys[:5], ys[1:], slope))
            table += (zero_interior,)
            self._tables[key] = table
        return table

    def _evaluate(self, u, need_derivative):
        if self.is_identity:
            return u, (torch.ones_like(u) if need_derivative else None)
        bounds, x0, y0, y1, slope, zero_interior = self._table(u.device, u.dtype)
        # segment k holds x0[k] < u <= x0[k+1] (left continuous at a jump); never a vertical one
        seg = torch.bucketize(u, bounds, out_int32=True)
        at_zero = None
        if zero_interior:
            at_zero = u == 0
            seg.add_(at_zero.to(torch.int32), alpha=zero_interior)
        flat = seg.reshape(-1)  # index_select: much faster than advanced indexing on CPU

        def look_up(table):
            return table.index_select(0, flat).view(u.shape)

        at_one = u == 1
        s = look_up(slope)
        value = u.sub(look_up(x0)).mul_(s).add_(look_up(y0))
        # rounding may overshoot the segment's end (slope * dx > dy): stay monotone
        value = torch.minimum(value, look_up(y1), out=value)
        # pinned ends; at 0 the first segment gives exactly 0 unless it is a jump
        if at_zero is not None:
            value.masked_fill_(at_zero, 0.0)
        value.masked_fill_(at_one, 1.0)
        return value, (s if need_derivative else None)

    def control_points(self, samples: int = 33):
        return self.points

    def to_dict(self) -> dict:
        return {"name": self.name, "theta": list(self.theta), "points": [list(p) for p in self.points]}

    def __eq__(self, other):
        return isinstance(other, PiecewiseLinear) and other.points == self.points

    def __hash__(self):
        return hash(self.points)

    def __repr__(self):
        pts = ", ".join(f"({x:.4g}, {y:.4g})" for x, y in self.points[1:5])
        return f"PiecewiseLinear({'identity' if self.is_identity else pts})"


class Power(Substitution):
    """f(x) = x ** exponent on [0, 1] (``sqrt``: 0.5, ``linear``: 1, ``square``: 2).

    The derivative at x = 0 is taken as 0 for an exponent below 1 (it is infinite there),
    so that saturated pairs, whose gradient the clamp stops anyway, give no NaN.
    """

    def __init__(self, exponent: float, name: str):
        self.exponent = float(exponent)
        self.name = name

    def _evaluate(self, u, need_derivative):
        p = self.exponent
        if p == 1.0:
            return u, (torch.ones_like(u) if need_derivative else None)
        if p == 2.0:
            return u * u, (2.0 * u if need_derivative else None)
        value = u.pow(p)
        if not need_derivative:
            return value, None
        derivative = torch.where(u > 0, p * u.pow(p - 1.0), torch.zeros_like(u)) if p < 1 else p * u.pow(p - 1.0)
        return value, derivative

    def __eq__(self, other):
        return isinstance(other, Power) and other.exponent == self.exponent

    def __hash__(self):
        return hash(("power", self.exponent))

    def __repr__(self):
        return f"Power({self.exponent:g})"


class Sigmoid(Substitution):
    """The official ablation's ``sigmoid`` form: ``H(d) = sigmoid(s_j − s_i)`` on the raw,
    unclamped difference, and ``I(u) = sigmoid(2u − 1)`` on the quality u in [0, 1].

    It does not pass through (0, 0) and (1, 1): I(0) = sigmoid(−1) ≈ 0.269, so a negative's
    quality weight is 1 − 0.269, as in the official code (which feeds it u = 0).
    """

    name = "sigmoid"

    def of_difference(self, d: Tensor) -> Tensor:
        return torch.sigmoid(d)

    def _evaluate(self, u, need_derivative):
        value = torch.sigmoid(u.mul_(2.0).sub_(1.0))
        return value, (value * (1.0 - value) * 2.0 if need_derivative else None)

    def __eq__(self, other):
        return isinstance(other, Sigmoid)

    def __hash__(self):
        return hash("sigmoid")

    def __repr__(self):
        return "Sigmoid()"


# ---------------------------------------------------------------------------------------------
# the five functions and the gradient scale

@dataclass(frozen=True)
class PAPParameters:
    """The five substitutions and the regression gradient scale of one Parameterized AP Loss.

    ``theta`` is the 41-value vector (:data:`THETA_ORDER` blocks of 8, then θ_41) when the
    parameters come from one; ``None`` for a handcrafted ablation (:meth:`named`).
    ``grad_scale`` multiplies the gradient that flows into the boxes' qualities (the ious),
    leaving the loss's value unchanged.
    """

    H1: Substitution
    H2: Substitution
    I1: Substitution
    I2: Substitution
    I3: Substitution
    grad_scale: float = 1.0
    name: str = "custom"
    theta: tuple[float, ...] | None = field(default=None, repr=False)

    # --- construction -------------------------------------------------------------------------
    @classmethod
    def from_theta(cls, theta: Sequence[float], shared: bool = False) -> "PAPParameters":
        """Parameters of a θ vector in [0, 1].

        ``shared=False``: 41 values, 5 blocks of 8 in :data:`THETA_ORDER` (H2, I2, I3, I1, H1),
        then θ_41 (gradient scale ``10 ** (2 θ_41 − 1)``).
        ``shared=True`` ("searched shared" of the appendix's Table 3): 9 values, one function's 8
        used for all five, then the gradient-scale value (0.5 for a scale of 1).
        """
        if shared:
            t = _check_unit_numbers(theta, SHARED_THETA_SIZE, "shared PAP θ")
            full = t[:8] * 5 + (t[8],)
            params = cls._from_full_theta(full, "searched_shared")
            return params
        t = _check_unit_numbers(theta, THETA_SIZE, "PAP θ")
        return cls._from_full_theta(t, "searched")

    @classmethod
    def _from_full_theta(cls, t: tuple[float, ...], name: str) -> "PAPParameters":
        functions = {}
        for k, fname in enumerate(THETA_ORDER):
            functions[fname] = PiecewiseLinear.from_theta(t[8 * k: 8 * k + 8])
        return cls(**functions, grad_scale=grad_scale_from_theta(t[40]), name=name, theta=t)

    @classmethod
    def from_control_points(cls, points, grad_scale: float = 1.0, name: str = "searched") -> "PAPParameters":
        """Parameters from control points as the official training configs give them.

        ``points``: five functions in :data:`THETA_ORDER`, each as accepted by
        :func:`theta_from_control_points` (e.g. the 12-number rows of ``ctrl_points`` in
        ``configs/paploss/paploss_retinanet_r50_fpn.py``); ``grad_scale`` (the configs'
        ``reg_weight``) in [0.1, 10].
        """
        points = list(points)
        if len(points) != 5:
            raise GpLossError(f"control points: expected 5 functions ({', '.join(THETA_ORDER)}), got {len(points)}")
        theta: list[float] = []
        for row in points:
            theta.extend(theta_from_control_points(row))
        theta.append(theta_from_grad_scale(grad_scale))
        params = cls._from_full_theta(tuple(theta), name)
        # keep the exact scale given (θ_41 round-trips it to ~1e-16)
        return PAPParameters(params.H1, params.H2, params.I1, params.I2, params.I3,
                             grad_scale=float(grad_scale), name=name, theta=params.theta)

    @classmethod
    def identity(cls) -> "PAPParameters":
        """Every substitution y = x, gradient scale 1: plain (IoU-weighted) AP loss, soft ranking."""
        params = cls.from_theta(IDENTITY_FUNCTION_THETA + (IDENTITY_GRAD_SCALE_THETA,), shared=True)
        return PAPParameters(params.H1, params.H2, params.I1, params.I2, params.I3,
                             grad_scale=1.0, name="identity", theta=params.theta)

    @classmethod
    def named(cls, name: str) -> "PAPParameters":
        """A fixed substitution of the appendix's Table 3, gradient scale 1, the same map for all five.

        As the official ``paploss.py`` (``loss_form``) defines them, with x = clamp((s_j − s_i)/2 + 1/2)
        and u the quality in [0, 1]:

        - ``sigmoid``: H(d) = sigmoid(s_j − s_i) (raw difference, unclamped), I(u) = sigmoid(2u − 1);
        - ``sqrt``: H = sqrt(x), I = sqrt(u) (not in the official code; by analogy with ``square``);
        - ``linear`` (= ``identity``): H = x, I = u;
        - ``square``: H = x², I = u²;
        - ``searched_retinanet_coco``: the authors' searched RetinaNet parameters (gradient scale 4.1231).
        """
        key = str(name).strip().lower()
        if key in ("linear", "identity"):
            params = cls.identity()
            return PAPParameters(params.H1, params.H2, params.I1, params.I2, params.I3,
                                 grad_scale=1.0, name=key, theta=params.theta)
        if key == "searched_retinanet_coco":
            return cls.from_control_points(RETINANET_COCO_CONTROL_POINTS, RETINANET_COCO_GRAD_SCALE, name=key)
        if key == "sigmoid":
            f: Substitution = Sigmoid()
        elif key == "sqrt":
            f = Power(0.5, "sqrt")
        elif key == "square":
            f = Power(2.0, "square")
        else:
            raise GpLossError(f"unknown PAP substitution {name!r}; known: {', '.join(NAMED_SUBSTITUTIONS)}")
        return cls(f, f, f, f, f, grad_scale=1.0, name=key, theta=None)

    # --- access -------------------------------------------------------------------------------
    def functions(self) -> dict[str, Substitution]:
        """The five substitutions by name, in :data:`FUNCTION_NAMES` order."""
        return {n: getattr(self, n) for n in FUNCTION_NAMES}

    def __getitem__(self, fname: str) -> Substitution:
        if fname not in FUNCTION_NAMES:
            raise KeyError(fname)
        return getattr(self, fname)

    def control_points(self, samples: int = 33) -> dict[str, tuple[tuple[float, float], ...]]:
        """Per function, the (x, y) points to plot it through: the six control points of a
        piecewise-linear function, ``samples`` points of a handcrafted one."""
        return {n: f.control_points(samples) for n, f in self.functions().items()}

    # --- JSON ---------------------------------------------------------------------------------
    def to_json(self) -> str:
        """``{"format", "version", "name", "theta_order", "theta": [41 numbers]}``, or
        ``{"format", "version", "named": ...}`` for a handcrafted substitution."""
        doc: dict = {"format": JSON_FORMAT, "version": JSON_VERSION, "name": self.name}
        if self.theta is not None:
            doc["theta_order"] = list(THETA_ORDER) + ["grad_scale"]
            doc["theta"] = list(self.theta)
            doc["grad_scale"] = self.grad_scale
        elif self.name in NAMED_SUBSTITUTIONS:
            doc["named"] = self.name
        else:
            raise GpLossError(f"PAP parameters {self.name!r} have neither θ nor a known name: cannot write them")
        return json.dumps(doc)

    @classmethod
    def from_json(cls, text: str) -> "PAPParameters":
        """Read :meth:`to_json`'s text, or a bare JSON list of 41 θ values (or 9: a shared θ, :meth:`from_theta`).

        Raises :class:`~gp_loss.errors.GpLossError` naming the problem: text that is not JSON,
        another format, not exactly 41 finite numbers in [0, 1], an unknown name.
        """
        try:
            doc = json.loads(text)
        except (TypeError, ValueError) as exc:
            raise GpLossError(f"PAP parameters: not JSON: {exc}") from None
        if isinstance(doc, list):
            return cls.from_theta(doc, shared=len(doc) == SHARED_THETA_SIZE)
        if not isinstance(doc, dict):
            raise GpLossError(f"PAP parameters: expected a JSON object or list, got {type(doc).__name__}")
        fmt = doc.get("format", JSON_FORMAT)
        if fmt != JSON_FORMAT:
            raise GpLossError(f"PAP parameters: format {fmt!r} is not {JSON_FORMAT!r}")
        if doc.get("version", JSON_VERSION) != JSON_VERSION:
            raise GpLossError(f"PAP parameters: version {doc.get('version')!r} is not {JSON_VERSION}")
        if "named" in doc:
            if "theta" in doc:
                raise GpLossError("PAP parameters: give either 'named' or 'theta', not both")
            return cls.named(doc["named"])
        if "theta" not in doc:
            raise GpLossError("PAP parameters: no 'theta' (41 numbers in [0, 1]) and no 'named'")
        order = doc.get("theta_order")
        if order is not None and list(order) != list(THETA_ORDER) + ["grad_scale"]:
            raise GpLossError(f"PAP parameters: theta_order {order!r} is not "
                              f"{list(THETA_ORDER) + ['grad_scale']!r}")
        params = cls.from_theta(doc["theta"])
        name = doc.get("name", params.name)
        if not isinstance(name, str):
            raise GpLossError(f"PAP parameters: name {name!r} is not a string")
        return PAPParameters(params.H1, params.H2, params.I1, params.I2, params.I3,
                             grad_scale=params.grad_scale, name=name, theta=params.theta)

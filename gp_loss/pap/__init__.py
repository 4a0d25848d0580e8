"""Parameterized AP Loss (Tao et al., "Searching Parameterized AP Loss for Object Detection",
NeurIPS 2021): five monotone piecewise-linear substitutions (H1, H2, I1, I2, I3) of AP's
non-differentiable parts plus a regression gradient scale, 41 values of θ in [0, 1]
(:mod:`gp_loss.pap.substitutions`), the loss itself (:mod:`gp_loss.pap.loss`), and
:func:`read_pap_parameters` for a file of them (:mod:`gp_loss.pap.files`).
The search's PPO lives in :mod:`gp_loss.pap.ppo`; its names (``ppo_maximize``, ``PPOConfig``,
``PPOResult``) are reachable here too, imported on first use.
"""
from gp_loss.pap.files import read_pap_parameters
from gp_loss.pap.loss import (
    DEFAULT_TOP_K,
    dense_ious,
    pap_loss,
    pap_loss_terms,
    positive_indices,
    positive_ious,
    scale_gradient,
)
from gp_loss.pap.substitutions import (
    FUNCTION_NAMES,
    NAMED_SUBSTITUTIONS,
    SHARED_THETA_SIZE,
    THETA_ORDER,
    THETA_SIZE,
    PAPParameters,
    PiecewiseLinear,
    Power,
    Sigmoid,
    Substitution,
    control_points_from_theta,
    grad_scale_from_theta,
    theta_from_control_points,
    theta_from_grad_scale,
)

__all__ = [
    "DEFAULT_TOP_K", "FUNCTION_NAMES", "NAMED_SUBSTITUTIONS", "SHARED_THETA_SIZE", "THETA_ORDER",
    "THETA_SIZE", "PAPParameters", "PiecewiseLinear", "Power", "Sigmoid", "Substitution",
    "control_points_from_theta", "dense_ious", "grad_scale_from_theta", "pap_loss",
    "pap_loss_terms", "positive_indices", "positive_ious", "read_pap_parameters", "scale_gradient",
    "theta_from_control_points", "theta_from_grad_scale",
]

_PPO_NAMES = ("PPOConfig", "PPOResult", "ppo_maximize")


def __getattr__(name):  # lazy: the PPO module pulls in the search runtime
    if name in _PPO_NAMES:
        from gp_loss.pap import ppo
        return getattr(ppo, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

"""The GP's log marginal likelihood and its gradient for the surrogate's one kernel, fast.

scikit-learn's ``GaussianProcessRegressor`` fits its hyper-parameters by
L-BFGS-B on ``log_marginal_likelihood``, which rebuilds the kernel and its
``(n, n, d + 2)`` gradient tensor at every step, and a fit takes many steps.
For the kernel ``c * RBF(l) + s`` (``ConstantKernel * RBF + WhiteKernel``) the
squared differences per dimension do not depend on the hyper-parameters, so
they are computed once per fit and each step costs a weighted sum, a Cholesky
factorisation and a few products. Same quantity, same parameterisation
(scikit-learn's ``theta``: log c, log l_1..l_d, log s), same optimiser and
options: :func:`lbfgs_optimizer` plugs in as the regressor's ``optimizer``, and
scikit-learn still does the final fit and every prediction. A test checks value
and gradient against scikit-learn's.
"""
from __future__ import annotations

import math
from typing import Callable

import numpy as np
import scipy.optimize
from scipy.linalg import LinAlgError, cho_solve, cholesky

# scikit-learn's default ``alpha``: added to the diagonal for numerical stability.
JITTER = 1e-10


def squared_differences(x: np.ndarray) -> np.ndarray:
    """``(n, n, d)``: ``(x[i, k] - x[j, k])**2`` for inputs ``x`` ``(n, d)``."""
    return (x[:, None, :] - x[None, :, :]) ** 2


def negative_log_likelihood(theta: np.ndarray, sq: np.ndarray, y: np.ndarray) -> tuple[float, np.ndarray]:
    """Minus the log marginal likelihood of ``y`` ``(n,)`` and its gradient in ``theta`` ``(d + 2,)``.

    ``sq``: :func:`squared_differences` of the inputs. ``+inf`` and a zero
    gradient where the kernel matrix is not positive definite (as scikit-learn).
    """
    n, _, d = sq.shape
    c = math.exp(theta[0])
    inv_l2 = np.exp(-2.0 * theta[1:d + 1])
    noise = math.exp(theta[d + 1])
    rbf = np.exp(-0.5 * (sq @ inv_l2))  # (n, n)
    k = c * rbf
    k[np.diag_indices(n)] += noise + JITTER
    try:
        chol = cholesky(k, lower=True, check_finite=False)
    except LinAlgError:
        return math.inf, np.zeros_like(theta)
    alpha = cho_solve((chol, True), y, check_finite=False)
    log_likelihood = (-0.5 * float(y @ alpha) - float(np.log(np.diag(chol)).sum())
                      - 0.5 * n * math.log(2 * math.pi))
    # d log L / d theta_p = 0.5 * tr((alpha alpha^T - K^-1) dK/dtheta_p)
    inner = np.outer(alpha, alpha) - cho_solve((chol, True), np.eye(n), check_finite=False)
    weighted = inner * rbf
    grad = np.empty_like(theta)
    grad[0] = 0.5 * c * weighted.sum()
    # dK/dlog l_k = c * rbf * sq[..., k] / l_k^2 (weighted is symmetric, so the order of i, j is moot)
    grad[1:d + 1] = 0.5 * c * np.einsum("ij,ijk->k", weighted, sq) * inv_l2
    grad[d + 1] = 0.5 * noise * float(np.trace(inner))
    return -log_likelihood, -grad


def lbfgs_optimizer(x_unit: np.ndarray, y: np.ndarray) -> Callable:
    """An ``optimizer`` for ``GaussianProcessRegressor`` fitting ``x_unit`` ``(n, d)`` to ``y`` ``(n,)``.

    Ignores scikit-learn's objective (the same function, slower) and runs
    L-BFGS-B as scikit-learn does, on :func:`negative_log_likelihood`.
    """
    sq = squared_differences(np.asarray(x_unit, dtype=float))
    y = np.asarray(y, dtype=float)

    def optimizer(_obj_func, initial_theta, bounds):
        result = scipy.optimize.minimize(negative_log_likelihood, initial_theta, args=(sq, y),
                                         method="L-BFGS-B", jac=True, bounds=bounds)
        return result.x, result.fun

    return optimizer

"""The surrogate: scikit-learn's Gaussian process regressor, as pySOT's ``GPRegressor`` sets it up.

Kernel ``ConstantKernel * RBF(length_scale=ones(d)) + WhiteKernel`` (one length
scale per dimension), on inputs scaled to the unit box, with the outputs
standardised (mean 0, standard deviation 1) before fitting and mapped back when
predicting (Eriksson, Bindel & Shoemaker, 2019, pySOT). Refitted at each step
from the same starting hyper-parameters (every length scale 1), so a fit is a
function of the data (and the seed of its restarts) alone: that keeps a resumed
run exact. Starting from the previous fit instead would be faster, but loses on
Ackley and Levy: length scales pushed to their upper bound by the first 2(d+1)
points stay there, as the gradient vanishes at the bound.
"""
from __future__ import annotations

import warnings

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.gaussian_process import GaussianProcessRegressor
from sklearn.gaussian_process.kernels import RBF, ConstantKernel, WhiteKernel
from threadpoolctl import threadpool_limits

from gp_loss.hps.likelihood import lbfgs_optimizer
from gp_loss.hps.space import Box

# Hyper-parameter bounds on unit-box inputs and standardised outputs. Length
# scales from 0.05 (a twentieth of the range) up to 20 (a dimension that hardly
# matters); the white-noise variance up to 0.1 of the standardised variance so
# a noisy objective (a detector's AP) is smoothed rather than interpolated.
CONSTANT_BOUNDS = (1e-2, 1e2)
LENGTH_SCALE_BOUNDS = (5e-2, 2e1)
NOISE_BOUNDS = (1e-6, 1e-1)


def _one_blas_thread():
    """BLAS limited to one thread: the matrices here are ~100 x 100, where a second thread costs far
    more in synchronisation than it saves, and the cores are better left to the workers evaluating
    the objective."""
    return threadpool_limits(1)


class GPSurrogate:
    """Fit on integer points ``x`` ``(n, d)`` with finite values ``y`` ``(n,)``; predict mean and std.

    ``n_restarts``: extra starts of the hyper-parameter optimiser, drawn by
    ``random_state`` (pass a value derived from the run's seed and step).
    """

    def __init__(self, box: Box, n_restarts: int = 0):
        self.box = box
        self.n_restarts = n_restarts
        self._gp: GaussianProcessRegressor | None = None
        self._mean = 0.0
        self._std = 1.0

    def _kernel(self):
        return (ConstantKernel(1.0, CONSTANT_BOUNDS)
                * RBF(length_scale=np.ones(self.box.dim), length_scale_bounds=LENGTH_SCALE_BOUNDS)
                + WhiteKernel(1e-4, NOISE_BOUNDS))

    @property
    def theta(self) -> np.ndarray:
        """The fitted hyper-parameters (log scale, scikit-learn's ``kernel_.theta``), shape ``(d + 2,)``."""
        if self._gp is None:
            raise RuntimeError("the surrogate has not been fitted")
        return self._gp.kernel_.theta

    @property
    def fitted(self) -> bool:
        return self._gp is not None

    def fit(self, x: np.ndarray, y: np.ndarray, random_state: int = 0) -> "GPSurrogate":
        """Fit ``(n, d)`` integer points to ``(n,)`` finite values (n >= 1)."""
        y = np.asarray(y, dtype=float)
        self._mean = float(y.mean())
        # A constant y (or a single point) has no spread: leave the scale at 1 instead of dividing by 0.
        std = float(y.std())
        self._std = std if std > 1e-12 else 1.0
        x_unit, y_std = self.box.to_unit(x), (y - self._mean) / self._std
        # scikit-learn's own L-BFGS-B fit of the hyper-parameters, on a faster evaluation of the same
        # likelihood (gp_loss.hps.likelihood).
        gp = GaussianProcessRegressor(kernel=self._kernel(), normalize_y=False,
                                      optimizer=lbfgs_optimizer(x_unit, y_std),
                                      n_restarts_optimizer=self.n_restarts, random_state=random_state)
        with warnings.catch_warnings(), _one_blas_thread():
            # Hyper-parameters at a bound are expected (e.g. an irrelevant dimension); not worth a warning.
            warnings.simplefilter("ignore", ConvergenceWarning)
            gp.fit(x_unit, y_std)
        self._gp = gp
        return self

    def predict(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Mean and standard deviation at ``(m, d)`` points, each ``(m,)``, in the objective's units."""
        if self._gp is None:
            raise RuntimeError("the surrogate has not been fitted")
        with _one_blas_thread():
            mean, std = self._gp.predict(self.box.to_unit(x), return_std=True)
        return self._mean + self._std * mean, self._std * std

    def with_fantasies(self, x_pending: np.ndarray) -> "GPSurrogate":
        """A copy that also "observes" the pending points at its own predicted mean (kriging believer).

        The hyper-parameters stay as fitted; only the data grow. The predicted
        std collapses at the pending points, which keeps EI and LCB from
        proposing the same neighbourhood to every idle worker.
        """
        if self._gp is None or len(x_pending) == 0:
            return self
        x_seen = self._gp.X_train_
        y_seen = self._gp.y_train_
        with _one_blas_thread():
            mean = self._gp.predict(self.box.to_unit(x_pending))
            gp = GaussianProcessRegressor(kernel=self._gp.kernel_, optimizer=None, normalize_y=False)
            gp.fit(np.vstack([x_seen, self.box.to_unit(x_pending)]), np.concatenate([y_seen, mean]))
        copy = GPSurrogate(self.box, self.n_restarts)
        copy._gp, copy._mean, copy._std = gp, self._mean, self._std
        return copy

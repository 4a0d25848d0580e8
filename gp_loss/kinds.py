"""Everything gp-loss does differently per kind of loss branch, in one registry.

A kind (``cls``, ``bcls``, ``reg``, ``zero``, ``heat``) is two things:

- its **language** (:mod:`primitives`): inputs, operators and their types. A new
  operator goes into an operator set there (``primitives/cse_ops.py``,
  ``primitives/zero_ops.py``); a new kind gets a ``build_kind(...)`` there too;
- its **behaviour** (:class:`KindSpec`, below): how its output is reduced to a loss,
  the probe each filter stage judges its candidates on, and the sweeps the report draws
  its loss curves along. Those probes and sweeps live in :mod:`gp_loss.probes`, grouped by stage.

So a new kind is a :class:`~primitives.kind.Kind` in ``primitives``, its probes
in ``gp_loss/probes`` (reusing the metrics and box helpers there), and one
:class:`KindSpec` in :data:`KIND_SPECS`. A new filter stage is a module in
``gp_loss/filters``, listed in :func:`~gp_loss.filters.pipeline.default_stages`,
that takes what it needs per kind from the spec (add a field when it needs a
probe of its own). A new search task is registered in
:mod:`gp_loss.tasks.registry`; it builds each branch's inputs from its own
model's output and may give a branch its own normaliser (:mod:`gp_loss.reduction`).
Nothing outside this module compares kind names: the stages, the compiler and
the exporter look a kind's behaviour up with :func:`kind_spec`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from primitives import KINDS, Kind, UnknownKindError

from gp_loss.probes.box_sweeps import box_sweep, judge_box_sweeps
from gp_loss.probes.convergence import ConvergenceProbe
from gp_loss.probes.heatmaps import HEAT_SWEEPS, HeatmapProbe, heat_batch, heatmap_problem
from gp_loss.probes.curve_sweeps import BOX_SWEEPS, PIXEL_SWEEPS, SIGMOID_SWEEPS, SOFTMAX_SWEEPS, Sweep
from gp_loss.probes.logit_sweeps import judge_logit_sweeps, sigmoid_sweep, softmax_sweep
from gp_loss.probes.rejection import (
    BinaryClassificationProbe, BoxRegressionProbe, ClassificationProbe, RejectionProbe, SegmentationProbe,
)
from gp_loss.probes.samples import SampleBatch, SampleBuilder, box_batch, dense_batch, sigmoid_batch, softmax_batch
from gp_loss.probes.simulation import (
    SimulationProblem, box_problem, segmentation_problem, sigmoid_problem, softmax_problem,
)
from gp_loss.reduction import PER_BOX_PAIR, PER_PIXEL, PER_SAMPLE, Reduction


@dataclass(frozen=True)
class KindSpec:
    """One kind's behaviour beyond its operators.

    Attributes:
        name: the kind's name, as in :data:`primitives.KINDS`.
        reduction: raw output -> scalar loss (the default; a task may use its own normaliser).
        make_sample_batch: the validity stage's sample batch (:meth:`sample_batch` seeds it).
        convergence: the convergence stage's sweep and judge; ``None``: the stage passes
            the kind's candidates through.
        rejection_probe: makes the rejection protocol's default probe (B samples and a metric).
        simulation_problem: ``(seed, device) -> problem`` of the model-optimisation simulation.
        stacks_samples: how the filters evaluate a loss on B probe samples at once (the
            rejection protocol, the gradient-equivalence signature:
            :mod:`gp_loss.filters.probe_gradient`). ``True``: the kind's operators accept
            leading sample dimensions (``...×N×C×H×W``) and aggregate within each sample
            only, so the B samples are evaluated stacked (B×N×...) in one call, never
            merged into rows: a kind whose operators aggregate over the batch (``zero``'s
            ``mean_nhw``) must say ``True``. ``False``: the operators work row by row
            (class-wise over dim 1), so the B samples are merged into one batch of B*N rows.
        simulation_steps, simulation_lr: the simulation's Adam steps and learning rate.
        curve_sweeps: the sweeps along which the report draws a branch's loss and gradient
            (:mod:`gp_loss.report.curves`); empty: no curves for the kind.
    """

    name: str
    reduction: Reduction
    make_sample_batch: SampleBuilder
    convergence: ConvergenceProbe | None
    rejection_probe: Callable[[], RejectionProbe]
    simulation_problem: Callable[[int, str | torch.device], SimulationProblem]
    stacks_samples: bool
    simulation_steps: int
    simulation_lr: float
    curve_sweeps: tuple[Sweep, ...]

    @property
    def kind(self) -> Kind:
        """The kind's operator set (:mod:`primitives`)."""
        return KINDS[self.name]

    def sample_batch(self, seed: int = 0, device: str | torch.device = "cpu",
                     n: int = 16, classes: int = 5, size: int = 8) -> SampleBatch:
        """A deterministic sample batch of ``n`` rows (``classes`` classes, ``size``×``size`` pixels)."""
        return self.make_sample_batch(torch.Generator().manual_seed(seed), device, n, classes, size)


# Simulation settings. Adam (not SGD) because it is invariant to the scale of the loss, so
# that e.g. a loss 100× CE is judged like CE: the simulation tests the direction a loss pushes
# the model, not its step size. Sigmoid losses learn to discriminate more slowly than softmax
# ones (each class is pushed down by 9 negatives per positive): ``bcls`` gets more steps,
# enough for sigmoid focal and CSE-Autoloss-B to beat chance clearly.
KIND_SPECS: dict[str, KindSpec] = {spec.name: spec for spec in [
    KindSpec(
        name="cls",
        reduction=PER_SAMPLE,
        make_sample_batch=softmax_batch,
        convergence=ConvergenceProbe(softmax_sweep, judge_logit_sweeps),
        rejection_probe=ClassificationProbe,
        simulation_problem=softmax_problem,
        stacks_samples=False,
        simulation_steps=30,
        simulation_lr=0.01,
        curve_sweeps=SOFTMAX_SWEEPS,
    ),
    KindSpec(
        name="bcls",
        reduction=PER_SAMPLE,
        make_sample_batch=sigmoid_batch,
        convergence=ConvergenceProbe(sigmoid_sweep, judge_logit_sweeps),
        rejection_probe=BinaryClassificationProbe,
        simulation_problem=sigmoid_problem,
        stacks_samples=False,
        simulation_steps=80,
        simulation_lr=0.01,
        curve_sweeps=SIGMOID_SWEEPS,
    ),
    KindSpec(
        name="reg",
        reduction=PER_BOX_PAIR,
        make_sample_batch=box_batch,
        convergence=ConvergenceProbe(box_sweep, judge_box_sweeps),
        rejection_probe=BoxRegressionProbe,
        simulation_problem=box_problem,
        stacks_samples=False,
        simulation_steps=30,
        simulation_lr=0.05,
        curve_sweeps=BOX_SWEEPS,
    ),
    # AutoLoss-Zero's aggregation operators (mean_nhw, 3×3 pooling) couple pixels and
    # samples, so sweep points cannot share one batch: no convergence check, as AutoLoss-Zero
    # itself relies on its rejection protocol instead. They aggregate within each leading
    # index of a ...×N×C×H×W tensor, so the protocol's B samples are stacked, not merged.
    KindSpec(
        name="zero",
        reduction=PER_PIXEL,
        make_sample_batch=dense_batch,
        convergence=None,
        rejection_probe=SegmentationProbe,
        simulation_problem=segmentation_problem,
        stacks_samples=True,
        simulation_steps=30,
        simulation_lr=0.01,
        curve_sweeps=PIXEL_SWEEPS,
    ),
    # zero's operators on keypoint heatmaps (top-down pose): judged on heatmap regression, PCK its
    # metric, as the pose task's networks output them. Stacked and without a convergence check for
    # zero's reasons (its aggregations couple pixels and samples).
    KindSpec(
        name="heat",
        reduction=PER_PIXEL,
        make_sample_batch=heat_batch,
        convergence=None,
        rejection_probe=HeatmapProbe,
        simulation_problem=heatmap_problem,
        stacks_samples=True,
        simulation_steps=30,
        simulation_lr=0.01,
        curve_sweeps=HEAT_SWEEPS,
    ),
]}


def kind_spec(kind: Kind | str) -> KindSpec:
    """The spec of a kind, given as a :class:`~primitives.kind.Kind` or by name.

    Raises :class:`~primitives.UnknownKindError` (a ``KeyError``) for a name gp-loss does not have.
    """
    try:
        return KIND_SPECS[kind if isinstance(kind, str) else kind.name]
    except KeyError:
        raise UnknownKindError(kind if isinstance(kind, str) else kind.name) from None

"""The kind registry: every kind has a complete spec, and no kind name is compared outside it."""
import re
from dataclasses import fields

import pytest
import torch

from gp_loss.kinds import KIND_SPECS, KindSpec, kind_spec
from gp_loss.probes.convergence import ConvergenceSettings
from gp_loss.probes.rejection import B, RejectionProbe
from gp_loss.reduction import Reduction
from primitives import KINDS, UnknownKindError, get_kind
from tests.helpers import ROOT

REGISTRY = ROOT / "gp_loss" / "kinds.py"
# A comparison with a kind's name: ``kind == "cls"``, ``name in ("cls", "bcls")``, ...
KIND_NAME_CHECK = re.compile(r'(?P<left>[\w.\]\[]*)\s*(==|!=|\bin)\s*\(?"(cls|bcls|reg|zero)"')


def test_every_kind_has_a_spec_and_every_spec_a_kind():
    assert list(KIND_SPECS) == list(KINDS)
    for name, spec in KIND_SPECS.items():
        assert spec.name == name and spec.kind is get_kind(name)
        assert kind_spec(name) is spec and kind_spec(get_kind(name)) is spec


def test_unknown_kind_is_a_clear_error():
    with pytest.raises(UnknownKindError, match="unknown kind 'det'"):
        kind_spec("det")


@pytest.mark.parametrize("name", list(KINDS))
def test_spec_is_complete_and_its_probes_fit_the_kind(name):
    spec = KIND_SPECS[name]
    kind = get_kind(name)
    assert all(getattr(spec, f.name) is not None for f in fields(KindSpec) if f.name != "convergence")
    assert isinstance(spec.reduction, Reduction) and spec.reduction.source and spec.reduction.doc
    assert spec.simulation_steps > 0 and spec.simulation_lr > 0
    # sample batch: the kind's inputs, the prediction a differentiable leaf
    batch = spec.sample_batch(seed=1)
    inputs = batch.inputs()
    assert len(inputs) == len(kind.inputs)
    assert batch.prediction.requires_grad and batch.prediction.is_leaf
    # The prediction input is the leaf itself, or made from it: reg's boxes decoded from deltas, zero's softmax.
    assert inputs[kind.inputs.index(kind.prediction)] is batch.prediction or kind.prediction in ("i", "yhat")
    # convergence: a sweep of the kind's inputs, rows all the same length
    if spec.convergence is not None:
        sweep = spec.convergence.build(ConvergenceSettings())
        assert len(sweep.inputs) == len(kind.inputs)
        assert len({t.shape[0] for t in sweep.inputs}) == 1 and sweep.varying <= set(kind.inputs)
    # rejection: B samples of the kind's inputs and a metric in [0, 1]
    probe = spec.rejection_probe()
    assert isinstance(probe, RejectionProbe) and probe.kind_name == name
    samples = probe.make_samples(0)
    assert samples.kind_name == name and samples.size == B
    assert len(samples.make_inputs(samples.prediction)) == len(kind.inputs)
    metric = samples.metric(samples.prediction)
    assert metric.shape == (B,) and bool(((metric >= 0) & (metric <= 1)).all())
    # simulation: the kind's inputs from the untrained model, and a metric
    problem = spec.simulation_problem(0, "cpu")
    assert len(problem.inputs(problem.model)) == len(kind.inputs)
    with torch.no_grad():
        assert 0 <= problem.metric(problem.model) <= 1 and 0 <= problem.chance < 1
    # report curves: each sweep gives the kind's inputs from its prediction, one abscissa per point
    assert spec.curve_sweeps and len({s.key for s in spec.curve_sweeps}) == len(spec.curve_sweeps)
    for sweep in spec.curve_sweeps:
        x, predicted, inputs_of = sweep.make()
        assert predicted.requires_grad and predicted.shape[0] == len(x)
        assert len(inputs_of(predicted)) == len(kind.inputs)


def test_only_the_autoloss_zero_operator_kinds_stack_samples_and_have_no_convergence_probe():
    # zero's mean_nhw (also heat's) aggregates over the batch: their probe samples are stacked, never
    # merged into rows, and their sweep points could not share a batch.
    assert [n for n, s in KIND_SPECS.items() if s.stacks_samples] == ["zero", "heat"]
    assert [n for n, s in KIND_SPECS.items() if s.convergence is None] == ["zero", "heat"]


def _kind_name_checks(text: str) -> list[tuple[int, str]]:
    """``(line number, line)`` of every comparison with a kind's name in ``text``."""
    found = []
    for number, line in enumerate(text.splitlines(), 1):
        for match in KIND_NAME_CHECK.finditer(line):
            # ``zero`` is also AutoLoss-Zero's breeding scheme (the evolution's ``mode``), not a kind.
            if match["left"].split(".")[-1] not in ("mode", "scheme"):
                found.append((number, line.strip()))
                break
    return found


def test_the_scan_finds_kind_name_checks():
    text = ('if kind == "cls":\n    pass\nif name in ("cls", "bcls"):\n'
            'ok = b.kind.name != "zero"\nif mode == "zero": pass\nx = {"cls": 1}\nkind_spec("cls")\n')
    assert _kind_name_checks(text) == [(1, 'if kind == "cls":'), (3, 'if name in ("cls", "bcls"):'),
                                       (4, 'ok = b.kind.name != "zero"')]


def test_no_kind_name_checks_outside_the_registry():
    # Per-kind behaviour is looked up with kind_spec(); a string check on a kind's name
    # elsewhere is one more place a new kind would have to be added.
    sources = sorted((ROOT / "gp_loss").rglob("*.py")) + sorted((ROOT / "primitives").rglob("*.py"))
    checks = [f"{path.relative_to(ROOT)}:{number}: {line}" for path in sources if path != REGISTRY
              for number, line in _kind_name_checks(path.read_text())]
    assert not checks, "kind names compared outside gp_loss/kinds.py:\n" + "\n".join(checks)

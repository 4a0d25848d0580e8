"""The kinds' reductions: each is a constant times the sum, and that constant is its scale."""
import importlib.util

import pytest
import torch

from gp_loss.export import export_torch
from gp_loss.kinds import kind_spec
from gp_loss.language.genome import Genome
from primitives import get_kind
from gp_loss.reduction import PER_BOX_PAIR, PER_PIXEL, PER_SAMPLE

SHAPES = {"cls": (7, 5), "bcls": (7, 1), "reg": (9,), "zero": (2, 3, 4, 5)}


@pytest.mark.parametrize("kind_name", sorted(SHAPES))
def test_scale_is_the_reductions_factor(kind_name):
    shape = SHAPES[kind_name]
    o = torch.rand(shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    reduction = kind_spec(kind_name).reduction
    torch.testing.assert_close(reduction(o), o.sum() * reduction.scale(shape))


@pytest.mark.parametrize("kind_name", sorted(SHAPES))
def test_source_is_the_same_rule(kind_name, tmp_path):
    # Exported code runs ``source`` on the raw output ``o``: the exported loss of ``1 * prediction``
    # must compute what the reduction does on it.
    kind = get_kind(kind_name)
    genome = Genome.from_formulas([(kind_name, kind_name, f"mul(1, {kind.prediction})")])
    path = tmp_path / "exported.py"
    path.write_text(export_torch(genome))
    spec = importlib.util.spec_from_file_location("exported", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    o = torch.rand(SHAPES[kind_name], generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    inputs = [o if name == kind.prediction else torch.ones_like(o) for name in kind.inputs]
    assert getattr(module, kind_name)(*inputs) == kind_spec(kind_name).reduction(o)


@pytest.mark.parametrize("reduction, shape", [(PER_SAMPLE, (4, 3)), (PER_BOX_PAIR, (4,)), (PER_PIXEL, (4, 3, 2, 2))])
def test_merged_rows_give_the_mean_of_the_batches_losses(reduction, shape):
    # The rejection protocol evaluates B samples as one batch of merged rows (filters/probe_gradient.py).
    b = 5
    samples = torch.rand((b, *shape), generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    merged = reduction(samples.flatten(0, 1))
    torch.testing.assert_close(merged, torch.stack([reduction(s) for s in samples]).mean())
    assert reduction.scale((b * shape[0], *shape[1:])) * b == pytest.approx(reduction.scale(shape))


def test_kinds_reduce_as_documented():
    assert kind_spec("cls").reduction is kind_spec("bcls").reduction is PER_SAMPLE
    assert kind_spec("reg").reduction is PER_BOX_PAIR and kind_spec("zero").reduction is PER_PIXEL
    o = torch.ones(2, 3, 4, 5)
    assert PER_SAMPLE(torch.ones(4, 3)) == 3 and PER_BOX_PAIR(torch.ones(4)) == 1 and PER_PIXEL(o) == 3

"""Exported modules import with torch alone and agree with the compiled trees."""
import importlib.util
import random
import subprocess
import sys
import textwrap

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from gp_loss.export import export_torch
from gp_loss.kinds import kind_spec
from gp_loss.language import Genome, compile_loss
from gp_loss.language.generate import random_tree
from gp_loss.language.genome import Branch
from gp_loss.paper_losses import PAPER_LOSSES
from primitives import KINDS, get_kind


def _load(path, name="exported_losses"):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _paper_genome():
    return Genome.from_formulas((name, p.kind, p.formula) for name, p in PAPER_LOSSES.items())


def test_paper_losses_export_and_agree(tmp_path):
    genome = _paper_genome()
    path = tmp_path / "losses.py"
    path.write_text(export_torch(genome))
    module = _load(path)
    for b in genome:
        batch = kind_spec(b.kind.name).sample_batch(seed=5)
        inputs = [t.detach().double() for t in batch.inputs()]
        want = compile_loss(b.kind, b.tree)(*inputs)
        got = getattr(module, b.name)(*inputs)
        torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-9)
        module_cls = getattr(module, "".join(p.capitalize() for p in b.name.split("_")) + "Loss")
        torch.testing.assert_close(module_cls()(*inputs), want, rtol=1e-6, atol=1e-9)
        assert b.formula in getattr(module, b.name).__doc__


def test_exported_module_needs_only_torch(tmp_path):
    genome = _paper_genome()
    path = tmp_path / "standalone.py"
    path.write_text(export_torch(genome))
    code = textwrap.dedent(f"""
        import sys
        sys.modules['gp_loss'] = None  # importing gp-loss now fails
        sys.modules['primitives'] = None
        sys.modules['deap'] = None
        sys.path.insert(0, {str(tmp_path)!r})
        import torch, standalone
        x = torch.randn(8, 5); y = torch.nn.functional.one_hot(torch.arange(8) % 5, 5).float()
        ce = standalone.ce(x, y, y)
        assert torch.allclose(ce, torch.nn.functional.cross_entropy(x, torch.arange(8) % 5))
        total = standalone.GenomeLoss()(ce=(x, y, y), cei=(x, y, y))
        assert torch.allclose(total, ce + standalone.cei(x, y, y))
        print("ok")
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    imports = [line for line in path.read_text().splitlines() if line.startswith(("import", "from"))]
    assert imports == ["import math  # noqa: F401  (used by some helpers)", "import torch"]


def test_export_is_readable_infix():
    genome = Genome.from_specs(["cls=neg(dot(y, log(softmax(x))))", "reg=add(sub(1, div(i, u)), div(sub(e, u), e))"])
    src = export_torch(genome)
    assert "o = -(y * torch.log(torch.softmax(x, 1) + 1e-20)).sum(1)" in src
    assert "o = 1 - i / (u + 1e-20) + (e - u) / (e + 1e-20)" in src
    assert "def cls(x, y, w):" in src and "def reg(i, u, e):" in src


def test_very_deep_tree_exports_with_temporaries(tmp_path):
    kind = get_kind("reg")
    text = "i"
    for _ in range(300):
        text = f"tanh({text})"
    genome = Genome.from_formulas([("deep", "reg", f"sub(1, div({text}, u))")])
    path = tmp_path / "deep.py"
    path.write_text(export_torch(genome))
    module = _load(path, "deep")
    i, u, e = kind_spec("reg").sample_batch().inputs()
    torch.testing.assert_close(module.deep(i.detach(), u.detach(), e.detach()),
                               compile_loss(kind, genome["deep"].tree)(i.detach(), u.detach(), e.detach()))


@settings(max_examples=60, deadline=None)
@given(kind=st.sampled_from(sorted(KINDS)), seed=st.integers(0, 2**32 - 1), depth=st.integers(1, 5))
def test_random_trees_export_and_agree(tmp_path_factory, kind, seed, depth):
    k = get_kind(kind)
    tree = random_tree(k, depth, random.Random(seed))
    genome = Genome([Branch("loss", k, tree)])
    path = tmp_path_factory.mktemp("rand") / "rand_loss.py"
    path.write_text(export_torch(genome))
    module = _load(path, f"rand_{seed}")
    inputs = [t.detach().double() for t in kind_spec(kind).sample_batch(seed=seed % 5).inputs()]
    want = compile_loss(k, tree)(*inputs)
    got = module.loss(*inputs)
    if torch.isfinite(want):
        torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-9)
    else:
        assert not torch.isfinite(got)


def test_an_alias_names_a_branch_function_again_and_is_checked(tmp_path):
    import pytest
    from gp_loss.errors import GpLossError
    genome = Genome.from_formulas([("top1_seg", "zero", PAPER_LOSSES["seg_ce"].formula),
                                   ("top2_seg", "zero", PAPER_LOSSES["seg_dice"].formula)])
    path = tmp_path / "hof.py"
    path.write_text(export_torch(genome, aliases={"seg": "top1_seg"}))
    module = _load(path, "aliased")
    assert module.seg is module.top1_seg and set(module.LOSSES) == {"top1_seg", "top2_seg"}
    for alias in ("torch", "GenomeLoss", "top2_seg", "not a name"):
        with pytest.raises(GpLossError):
            export_torch(genome, aliases={alias: "top1_seg"})
    with pytest.raises(GpLossError, match="has no branch 'top3_seg'"):
        export_torch(genome, aliases={"seg": "top3_seg"})


def test_exported_docstrings_describe_each_input_as_every_task_passes_it(tmp_path):
    genome = Genome.from_formulas([("cls", "cls", PAPER_LOSSES["ce"].formula),
                                   ("bcls", "bcls", PAPER_LOSSES["bce"].formula)])
    path = tmp_path / "losses.py"
    path.write_text(export_torch(genome))
    module = _load(path, "docstring_losses")
    for name in ("cls", "bcls"):
        doc = getattr(module, name).__doc__
        w = next(line.strip() for line in doc.splitlines() if line.strip().startswith("w:"))
        # A weight: the IoU in detection only; image classification (no boxes) passes 1.
        assert w.startswith("w: sample weight") and "in detection the IoU" in w and "1 in image classification" in w
        for n, text in get_kind(name).input_docs.items():  # every argument from the kind's definition
            assert f"{n}: {text}" in doc

"""gp_loss.pap.export_torch and gp_loss.pap.plot: the exported module is the library's loss, needs only torch."""
import ast
import importlib.util
import subprocess
import sys

import pytest
import torch

from gp_loss.errors import GpLossError
from gp_loss.pap import PAPParameters, pap_loss
from gp_loss.pap.export_torch import export_pap_module
from gp_loss.pap.plot import plot_substitutions


def _load(tmp_path, params, name="exported_pap"):
    path = tmp_path / f"{name}.py"
    path.write_text(export_pap_module(params))
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module, path


def _params():
    g = torch.Generator().manual_seed(3)
    theta = torch.rand(41, generator=g).tolist()
    theta[0] = 0.0  # a jump at x = 0 in H2
    theta[17] = 1.0  # a point reaching y = 1 in I3
    return [PAPParameters.from_theta(theta), PAPParameters.identity(), PAPParameters.named("searched_retinanet_coco")]


@pytest.mark.parametrize("index", range(3))
@pytest.mark.parametrize("block", [True, False])
@pytest.mark.parametrize("top_k", [100000, 25])
def test_exported_module_equals_the_library_loss_values_and_gradients(tmp_path, index, block, top_k):
    params = _params()[index]
    module, _ = _load(tmp_path, params)
    g = torch.Generator().manual_seed(index)
    for dtype in (torch.float32, torch.float64):
        logits = torch.randn(60, 4, generator=g).to(dtype) * 2
        targets = torch.randint(-1, 2, (60, 4), generator=g)
        ious = (torch.rand(int((targets == 1).sum()), generator=g) * 2 - 1).to(dtype)
        a = [logits.clone().requires_grad_(), ious.clone().requires_grad_()]
        b = [logits.clone().requires_grad_(), ious.clone().requires_grad_()]
        la = pap_loss(a[0], targets, a[1], params, top_k=top_k, block_h1_gradient=block)
        lb = module.pap_loss(b[0], targets, b[1], top_k=top_k, block_h1_gradient=block)
        la.backward()
        lb.backward()
        assert torch.equal(la.detach(), lb.detach())
        assert torch.equal(a[0].grad, b[0].grad) and torch.equal(a[1].grad, b[1].grad)


def test_no_positives_is_zero_and_connected(tmp_path):
    module, _ = _load(tmp_path, _params()[0])
    logits = torch.randn(10, requires_grad=True)
    loss = module.pap_loss(logits, torch.zeros(10), torch.zeros(0))
    loss.backward()
    assert loss.item() == 0.0 and logits.grad is not None


def test_exported_module_imports_only_torch_and_runs_alone(tmp_path):
    params = _params()[0]
    _, path = _load(tmp_path, params)
    tree = ast.parse(path.read_text())
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            imported.add((node.module or "").split(".")[0])
    assert imported == {"torch"}
    # the control points are literals equal to the library's
    module, _ = _load(tmp_path, params, "again")
    for fname in ("H1", "H2", "I1", "I2", "I3"):
        assert module.CONTROL_POINTS[fname] == params[fname].points
    assert module.GRAD_SCALE == params.grad_scale and module.THETA == list(params.theta)
    # in a fresh interpreter, from the file's folder, without gp_loss on the path
    code = (f"import sys; sys.path.insert(0, {str(tmp_path)!r}); import torch, pap_loss; "
            "assert not any(m.split('.')[0] == 'gp_loss' for m in sys.modules); "
            "t = torch.tensor([1., 0., -1., 1.]); "
            "print(float(pap_loss.pap_loss(torch.tensor([2., 1., 0., -1.]), t, torch.tensor([0.5, 0.2]))))")
    (tmp_path / "pap_loss.py").write_text(path.read_text())
    done = subprocess.run([sys.executable, "-I", "-c", code], cwd=tmp_path, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    expected = pap_loss(torch.tensor([2., 1., 0., -1.]), torch.tensor([1., 0., -1., 1.]), torch.tensor([0.5, 0.2]),
                        params)
    assert float(done.stdout) == pytest.approx(float(expected), rel=1e-6)


def test_a_name_with_quotes_stays_a_literal(tmp_path):
    p = _params()[0]
    odd = PAPParameters(p.H1, p.H2, p.I1, p.I2, p.I3, grad_scale=p.grad_scale, name='x"""\n import os', theta=p.theta)
    module, path = _load(tmp_path, odd, "odd")
    assert module.NAME == 'x"""\n import os'
    assert "import os" not in [line.strip() for line in path.read_text().splitlines()]


def test_handcrafted_substitutions_are_refused_in_one_line():
    with pytest.raises(GpLossError, match="not piecewise linear"):
        export_pap_module(PAPParameters.named("sigmoid"))
    with pytest.raises(GpLossError):
        export_pap_module("theta")


@pytest.mark.parametrize("params", [PAPParameters.identity(), PAPParameters.named("sqrt"), _params()[0]])
def test_plot_writes_a_png(tmp_path, params):
    path = plot_substitutions(params, tmp_path / "sub" / "substitutions.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

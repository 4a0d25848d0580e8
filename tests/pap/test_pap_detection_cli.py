"""``gp-loss evaluate --task detection --loss pap...``: the loss specs, a θ file's round trip, bad files
as one line (exit 2), and ``gp-loss bench pap``'s pieces on tiny sizes."""
import json

import pytest
import torch

from gp_loss.cli import main
from gp_loss.cli.evaluate_cmd import losses_from
from gp_loss.errors import GpLossError
from gp_loss.pap import THETA_SIZE, PAPParameters, read_pap_parameters
from gp_loss.tasks import task_info


def _theta(seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(THETA_SIZE, generator=g, dtype=torch.float64) * 0.9 + 0.05).tolist()


def _losses(*specs, model="retinanet"):
    info = task_info("detection")
    return losses_from(list(specs), info, info.make_options({"model": model}))


def test_pap_specs_parse_to_detection_losses(tmp_path):
    path = tmp_path / "theta.json"
    params = PAPParameters.from_theta(_theta())
    path.write_text(params.to_json())
    rows = _losses("pap", "pap_unblocked", f"pap={path}", "pap:sigmoid", "pap_unblocked:square",
                   f"pap_unblocked={path}", "fl_giou")
    names = [name for name, _ in rows]
    assert names == ["pap", "pap_unblocked", f"pap={path}", "pap:sigmoid", "pap_unblocked:square",
                     f"pap_unblocked={path}", "fl_giou"]
    assert rows[0][1] == "pap" and rows[1][1] == "pap_unblocked"  # baselines, trained by name
    from_file = rows[2][1]
    assert from_file.genome is None and from_file.pap_block_h1
    assert from_file.pap.theta == params.theta and from_file.pap == params
    assert from_file.pap.grad_scale == pytest.approx(params.grad_scale)
    assert rows[3][1].pap == PAPParameters.named("sigmoid") and rows[3][1].pap_block_h1
    assert rows[4][1].pap == PAPParameters.named("square") and not rows[4][1].pap_block_h1
    assert rows[5][1].pap == params and not rows[5][1].pap_block_h1
    assert rows[2][1].formulas()["pap"].startswith("PAP-Loss, searched substitutions")
    # a branch formula after a pap spec still starts its own loss
    mixed = _losses("pap:sqrt", "cls=neg(x)")
    assert [n for n, _ in mixed] == ["pap:sqrt", "cls=neg(x) (+ fl_giou for reg)"]


def test_a_theta_file_holds_any_of_its_formats(tmp_path):
    theta = _theta(1)
    want = PAPParameters.from_theta(theta)
    for name, doc in (("list.json", theta), ("object.json", {"theta": theta}),
                      ("results.json", {"best_theta": theta, "best_reward": 0.3, "rounds_done": 2, "history": []}),
                      ("named.json", json.loads(PAPParameters.named("sqrt").to_json()))):
        (tmp_path / name).write_text(json.dumps(doc))
        got = read_pap_parameters(tmp_path / name)
        assert got == (PAPParameters.named("sqrt") if name == "named.json" else want), name


def test_a_shared_theta_of_9_values_is_read_as_one_function_for_all_five(tmp_path):
    shared = [0.1, 0.2, 0.3, 0.35, 0.5, 0.6, 0.7, 0.9, 0.75]
    want = PAPParameters.from_theta(shared, shared=True)
    assert want.H1 == want.H2 == want.I1 == want.I2 == want.I3 and len(want.theta) == 41
    for name, doc in (("list.json", shared), ("results.json", {"best_theta": shared, "history": []})):
        (tmp_path / name).write_text(json.dumps(doc))
        assert read_pap_parameters(tmp_path / name) == want, name


@pytest.mark.parametrize("content, message", [
    (None, "no such file"),
    ("{theta: [0.5]", "not JSON"),
    (json.dumps([0.5] * 40), "expected exactly 41 numbers in [0, 1], got 40"),
    (json.dumps({"theta": [0.5] * 42}), "expected exactly 41 numbers in [0, 1], got 42"),
    (json.dumps([0.5] * 40 + [1.5]), "value 40 = 1.5 is outside [0, 1]"),
    (json.dumps({"best_theta": None, "history": []}), "no best_theta yet"),
    (json.dumps({"format": "other"}), "format 'other' is not"),
    ("", "not JSON"),
])
def test_a_bad_theta_file_is_one_line_and_exit_2(tmp_path, capsys, content, message):
    path = tmp_path / "theta.json"
    if content is not None:
        path.write_text(content)
    assert main(["evaluate", "--task", "detection", "--loss", f"pap={path}", "--seeds", "1"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("gp-loss: error: PAP parameters file") and str(path) in err, err
    assert message in err and "\n" not in err, err


@pytest.mark.parametrize("spec, message", [
    ("pap:cube", "unknown PAP substitution 'cube'; known: sigmoid, sqrt"),
    ("pap:", "give a substitution after ':'"),
    ("pap=", "PAP parameters: give a file"),
    ("pap_blocked", "neither BRANCH=FORMULA nor a baseline"),
])
def test_bad_pap_specs_are_one_line_and_exit_2(capsys, spec, message):
    assert main(["evaluate", "--task", "detection", "--loss", spec]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err, err


def test_pap_is_a_detection_loss_only(capsys):
    assert main(["evaluate", "--task", "classification", "--loss", "pap:sigmoid"]) == 2
    assert "neither BRANCH=FORMULA nor a baseline" in capsys.readouterr().err
    with pytest.raises(GpLossError, match="names branch 'pap'"):
        losses_from(["pap=x.json"], task_info("classification"), task_info("classification").make_options({}))


def test_evaluate_trains_with_a_theta_file(tmp_path, capsys):
    """The θ written by PAPParameters.to_json trains the detector (one step) through the CLI."""
    path = tmp_path / "theta.json"
    path.write_text(PAPParameters.from_theta(_theta(2)).to_json())
    argv = ["evaluate", "--task", "detection", "--model", "retinanet", "--loss", f"pap={path}", "--loss", "pap",
            "--steps", "1", "--seeds", "1", "--image-size", "48", "--json"]
    assert main(argv) == 0
    out = json.loads(capsys.readouterr().out)
    rows = {r["loss"]: r for r in out["rows"]}
    assert set(rows) == {f"pap={path}", "pap"}
    for row in rows.values():
        assert row["status"] == ["ok"] and set(row["metrics"]) >= {"AP", "AP50"}
    assert rows[f"pap={path}"]["formulas"]["pap"].startswith("PAP-Loss, searched substitutions")
    assert set(rows["pap"]["formulas"].values()) == {"PAP-Loss, identity substitutions"}


# ---------------------------------------------------------------------------------------------
# gp-loss bench pap, on tiny sizes

def test_peak_tensor_memory_counts_what_a_step_allocates():
    from gp_loss.bench.pap import PeakTensorMemory

    x = torch.randn(256, 256, requires_grad=True)
    with PeakTensorMemory() as probe:
        y = (x @ x).relu()  # 256 KiB each: the product, the relu
        y.sum().backward()
        del y
    mib = 256 * 256 * 4
    assert 2 * mib <= probe.peak <= 6 * mib
    assert probe.live == mib  # what is left: x.grad


def test_bench_pap_cost_on_a_tiny_batch():
    from gp_loss.bench.pap import bench_pap_cost, format_cost

    result = bench_pap_cost("retinanet", "small", size=48, batch=2, steps=1, warmup=0, device="cpu")
    assert set(result["ms"]) == {"pap", "fl_giou"} and result["time_ratio"] > 0
    assert result["peak_bytes"]["pap"] > 0 and result["peak_bytes"]["fl_giou"] > 0
    assert set(result["loss_terms"]["pap"]) == {"pap"}
    assert set(result["loss_terms"]["fl_giou"]) == {"classification", "bbox_regression"}
    assert "pap / fl_giou: time" in "\n".join(format_cost(result))


def test_bench_pap_bad_options_are_one_line(capsys):
    assert main(["bench", "pap", "--losses", "pap,nope"]) == 2
    assert "unknown baseline 'nope' for retinanet" in capsys.readouterr().err
    assert main(["bench", "pap", "--no-ablation", "--cost-batch", "0"]) == 2
    assert "--cost-batch must be at least 1, got 0" in capsys.readouterr().err
    assert main(["bench", "pap", "--no-ablation", "--no-cost"]) == 2


@pytest.mark.slow
def test_bench_pap_quick_prints_both_tables(capsys):
    assert main(["bench", "pap", "--quick", "--size", "48", "--cost-batch", "2", "--cost-steps", "1",
                 "--cost-warmup", "0", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "pap_unblocked" in out and "pap / fl_giou: time" in out

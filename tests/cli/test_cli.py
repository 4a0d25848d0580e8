"""The gp-loss command line as a user runs it."""
import json
import subprocess
import sys

import pytest

from gp_loss.cli import main
from tests.helpers import ROOT, assert_user_error


def test_check_passes_ce_and_giou(capsys):
    code = main(["check", "cls=neg(dot(y, log(softmax(x))))", "reg=add(sub(1, div(i, u)), div(sub(e, u), e))"])
    out = capsys.readouterr().out
    assert code == 0
    assert "validity   pass" in out and out.strip().endswith("passed")


def test_check_rejects_with_reason_and_exit_1(capsys):
    assert main(["check", "cls=neg(dot(x, log(softmax(x))))"]) == 1  # blind to the target
    assert "does not decrease towards the target" in capsys.readouterr().out


def test_check_json(capsys):
    assert main(["check", "--json", "bcls=log(x)"]) == 1
    data = json.loads(capsys.readouterr().out)
    stages = data["branches"]["bcls"]["stages"]
    assert data["passed"] is False
    assert [s["stage"] for s in stages] == ["parse", "compile", "convergence"]
    assert "not finite" in stages[-1]["reason"]


@pytest.mark.parametrize("argv, fragment", [
    (["check", "cls=neg(dot(y, log(softmax(x)))"], "never closed"),
    (["check", "cls=frob(x)"], "unknown operator 'frob'"),
    (["check", "nokind=x"], "unknown kind"),
    (["check", "cls"], "KIND=FORMULA"),
    (["export", "cls=x", "--out", "file.txt"], "must end in .py"),
    (["primitives", "--kind", "nope"], "invalid choice"),
    (["bogus"], "invalid choice"),
])
def test_user_errors_exit_2_with_one_line(argv, fragment, capsys):
    with pytest.raises(SystemExit) as info:
        sys.exit(main(argv))
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert fragment in err and "Traceback" not in err


def test_export_writes_module_and_latex(tmp_path, capsys):
    out = tmp_path / "sub" / "my_losses.py"
    assert main(["export", "cls=neg(dot(y, log(softmax(x))))", "rcnn_reg:reg=sub(1, div(i, u))",
                 "--out", str(out), "--latex"]) == 0
    text = capsys.readouterr().out
    assert "rcnn_reg: 1 - \\frac{i}{u}" in text
    src = out.read_text()
    assert "def cls(x, y, w):" in src and "def rcnn_reg(i, u, e):" in src


def test_export_to_unwritable_place_is_a_user_error(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert main(["export", "cls=neg(dot(y, log(softmax(x))))", "--out", str(blocker / "x.py")]) == 2
    assert "cannot write" in capsys.readouterr().err


def test_primitives_lists_every_operator(capsys):
    assert main(["primitives", "--kind", "zero"]) == 0
    out = capsys.readouterr().out
    for name in ["add", "mul", "neg", "abs", "inv", "log", "exp", "tanh", "square", "sqrt",
                 "mean_nhw", "mean_c", "maxpool3x3", "minpool3x3"]:
        assert f"\n  {name} " in out
    assert "yhat" in out


def test_console_script_runs_as_module():
    out = subprocess.run([sys.executable, "-m", "gp_loss", "check", "cls=frob(x)"],
                         capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 2
    assert out.stderr.count("\n") == 1 and "unknown operator 'frob'" in out.stderr
    out = subprocess.run([sys.executable, "-m", "gp_loss", "--help"], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0 and "primitives" in out.stdout


def test_check_runs_every_stage_and_simulate(capsys):
    assert main(["check", "--simulate", "--json", "cls=neg(dot(y, log(softmax(x))))"]) == 0
    stages = json.loads(capsys.readouterr().out)["branches"]["cls"]["stages"]
    assert [s["stage"] for s in stages] == ["parse", "compile", "convergence", "validity", "range", "rejection",
                                            "equivalence", "simulation"]


def test_check_rejects_negated_ce_at_convergence(capsys):
    assert main(["check", "--json", "cls=dot(y, log(softmax(x)))"]) == 1
    stages = json.loads(capsys.readouterr().out)["branches"]["cls"]["stages"]
    assert stages[-1]["stage"] == "convergence" and not stages[-1]["passed"]


def test_equiv_exit_codes(capsys):
    assert main(["equiv", "cls=neg(dot(y, log(softmax(x))))", "cls=dot(y, neg(log(softmax(x))))"]) == 0
    assert main(["equiv", "cls=neg(dot(y, log(softmax(x))))", "cls=mul(2, neg(dot(y, log(softmax(x)))))"]) == 1
    out = capsys.readouterr().out
    assert "signature" in out and "not equivalent" in out
    assert main(["equiv", "cls=neg(dot(y, log(softmax(x))))", "reg=sub(1, div(i, u))"]) == 2


def test_bench_filters_prints_rates_and_funnel(capsys):
    assert main(["bench", "filters", "--kind", "reg", "--seconds", "2", "--random-trees", "50", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    for part in ("search", "random_init"):
        assert data[part]["candidates"] > 0 and data[part]["candidates_per_minute"] > 0
        assert set(data[part]["funnel"]["stages"]) == {"validity", "convergence", "range", "rejection", "equivalence"}
        assert data[part]["passed"] == data[part]["reused"] + data[part]["to_proxy_training"]
    assert data["random_init"]["candidates"] == 50
    assert main(["bench", "filters", "--kind", "cls", "--seconds", "1", "--random-trees", "10"]) == 0
    out = capsys.readouterr().out
    assert "random depth-3 trees" in out and "to proxy training" in out
    assert main(["bench", "filters", "--seconds", "0"]) == 2


@pytest.mark.parametrize("argv, fragment", [
    (["check", "cls=mul(1e400, x)"], "number '1e400' at position 4 is out of range"),
    (["check", "cls=mul(x, " + "9" * 300 + ")"], "at position 7 is out of range"),
    (["export", "cls=mul(1e400, x)", "--out", "never.py"], "'1e400'"),
    (["check", "self:cls=neg(dot(y, log(softmax(x))))"], "bad branch name 'self'"),
    (["check", "total:cls=neg(dot(y, log(softmax(x))))"], "bad branch name 'total'"),
    (["export", "genome:cls=x", "--out", "never.py"], "'GenomeLoss'"),
    (["export", "cls=x", "cls_fn:cls=x", "--out", "never.py"], "clash"),
    (["export", "a_b:cls=x", "a__b:cls=x", "--out", "never.py"], "'ABLoss'"),
])
def test_bad_literals_and_clashing_names_exit_2_with_one_line(argv, fragment, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert fragment in assert_user_error(main(argv), capsys.readouterr().err)
    assert not (tmp_path / "never.py").exists()


def test_check_judges_a_5000_level_tree_not_the_recursion_limit(capsys):
    # neg applied 5000 times is the identity: this is CE with the sign flipped, which the
    # convergence stage rejects on its merits.
    text = "neg(" * 5000 + "dot(y, log(softmax(x)))" + ")" * 5000
    assert main(["check", "--json", "cls=" + text]) == 1
    stages = json.loads(capsys.readouterr().out)["branches"]["cls"]["stages"]
    assert [s["stage"] for s in stages] == ["parse", "compile", "convergence"]
    assert "Recursion" not in stages[-1]["reason"] and "does not decrease" in stages[-1]["reason"]


def test_export_to_a_directory_or_an_unwritable_path_is_one_line(tmp_path, capsys):
    (tmp_path / "dir.py").mkdir()
    assert main(["export", "cls=neg(dot(y, log(softmax(x))))", "--out", str(tmp_path / "dir.py")]) == 2
    assert "is a directory" in capsys.readouterr().err
    (tmp_path / "a_file").write_text("")
    assert main(["export", "cls=neg(dot(y, log(softmax(x))))", "--out", str(tmp_path / "a_file" / "m.py")]) == 2
    assert "cannot write" in capsys.readouterr().err

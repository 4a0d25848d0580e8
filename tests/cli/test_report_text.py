"""``gp-loss report RUN_DIR`` as text: safe on a terminal, quiet on a closed pipe, and saying what the page says.

The run directories are written here file by file, as a search writes them (no training).
"""
import json
import os
import subprocess
import sys

import pytest

from gp_loss.cli import EXIT_BROKEN_PIPE, main
from gp_loss.evolution.config import SearchConfig
from gp_loss.paper_losses import PAPER_LOSSES
from gp_loss.runtime.checkpoint import save_checkpoint
from primitives import get_kind
from tests.helpers import ROOT

CE = PAPER_LOSSES["ce"].formula
RAW = ("\x1b", "\x07", "\x9b", "\u202e", "\r")


def write_search(path, formulas=None, kinds=None, evaluations=3, damaged=0):
    """A finished classification search: hall of fame, baselines, final comparison, evaluations, checkpoint."""
    formulas = formulas or {"cls": CE}
    kinds = kinds or {n: "cls" for n in formulas}
    path.mkdir(parents=True, exist_ok=True)
    (path / "config.json").write_text(json.dumps(SearchConfig(max_evaluations=evaluations).to_dict()))
    (path / "hall_of_fame.json").write_text(json.dumps({"metric": "validation accuracy", "hall_of_fame": [
        {"rank": 1, "fitness": 0.9, "evaluation": 2, "generation": 0, "formulas": formulas, "kinds": kinds,
         "latex": {n: "?" for n in formulas}}]}))
    (path / "baselines.json").write_text(json.dumps({"ce": 0.95}))
    (path / "final.json").write_text(json.dumps({"metric": "test accuracy", "evaluations": evaluations, "rows": [
        {"name": "top1", "baseline": False, "formulas": formulas, "mean": 0.9, "std": 0.01},
        {"name": "ce", "baseline": True, "formulas": {"cls": CE}, "mean": 0.95, "std": 0.0}]}))
    with open(path / "evaluations.jsonl", "w") as fh:
        for k in range(1, evaluations + 1):
            fh.write(json.dumps({"evaluation": k, "fitness": 0.5, "status": "ok", "formulas": formulas}) + "\n")
        for _ in range(damaged):
            fh.write('{"evaluation": 9, "fitn\n')
    save_checkpoint(path, {"evaluations": evaluations, "generation": 1, "reused": 0})
    return path


def _report(capsys, run, *extra):
    assert main(["report", str(run), *extra]) == 0
    captured = capsys.readouterr()
    return captured.out, captured.err


def test_control_characters_in_run_files_never_reach_the_terminal(tmp_path, capsys):
    run = write_search(tmp_path / "hostile\x1b[31m", formulas={"cls\x9b2J": "add(x, \x1b]52;c;ZXZpbA==\x07)",
                                                               "reg\u202e": CE + "\r"})
    (run / "baselines.json").write_text(json.dumps({"ce\x1b[2J": 0.5}))
    out, err = _report(capsys, run)
    for char in RAW:
        assert char not in out and char not in err, repr(char)
    assert "add(x, \\x1b]52;c;ZXZpbA==\\x07)" in out  # shown, escaped
    assert "cls\\x9b2J" in out and "reg\\u202e" in out and "ce\\x1b[2J" in out and "hostile\\x1b[31m" in out
    assert main(["report", str(tmp_path / "missing\x1b]52;c;eA==\x07")]) == 2  # an error quoting the path
    err = capsys.readouterr().err
    assert "\x1b" not in err and "\x07" not in err and "missing\\x1b]52" in err


def test_a_reader_that_stops_reading_gets_no_traceback(tmp_path):
    run = write_search(tmp_path / "run")
    read, write = os.pipe()
    os.close(read)  # the reader is gone before the report writes its first line (as `| head -0` would be)
    try:
        proc = subprocess.run([sys.executable, "-m", "gp_loss", "report", str(run)], stdout=write,
                              stderr=subprocess.PIPE, text=True, timeout=120,
                              cwd=ROOT)
    finally:
        os.close(write)
    assert proc.returncode == EXIT_BROKEN_PIPE == 141, proc.stderr
    assert proc.stderr == ""  # no traceback, no "Exception ignored" at exit


def test_a_broken_pipe_that_is_not_standard_output_is_not_swallowed(tmp_path, monkeypatch):
    from gp_loss.cli import report_cmd

    def worker_pipe_broke(args):
        raise BrokenPipeError("a worker's pipe")
    monkeypatch.setattr(report_cmd, "run", worker_pipe_broke)
    with pytest.raises(BrokenPipeError):
        main(["report", str(tmp_path)])


def test_text_report_lists_damaged_evaluation_lines_as_the_page_does(tmp_path, capsys):
    run = write_search(tmp_path / "run", damaged=1)
    out, _ = _report(capsys, run)
    assert "warning:" in out and "evaluations.jsonl: 1 of 4 line(s) damaged or not an evaluation record" in out
    _, err = _report(capsys, run, "--json")
    assert "1 of 4 line(s) damaged" in err
    assert main(["report", str(run), "--html"]) == 0
    assert "1 of 4 line(s) damaged" in (run / "report.html").read_text(encoding="utf-8")


def test_every_metric_of_the_text_report_is_on_one_scale(tmp_path, capsys):
    out, _ = _report(capsys, write_search(tmp_path / "run"))
    assert "hall of fame, validation accuracy (×100):" in out and "#1 90.00  cls = " in out
    assert "baselines, validation accuracy (×100): ce 95.00" in out
    assert "final comparison, test accuracy (×100):" in out and "90.00 ± 1.00" in out
    assert "0.9000" not in out and "0.9500" not in out


def test_operators_drawn_by_name_are_explained_from_their_definitions(tmp_path, capsys):
    zero = get_kind("zero")
    run = write_search(tmp_path / "run", formulas={"seg": "neg(mul(y, log(yhat)))"}, kinds={"seg": "zero"})
    out, _ = _report(capsys, run)
    assert "operatorname{slog}" in out  # the LaTeX names it ...
    legend = out.split("operators drawn by name")[1]
    assert f"slog(x) = {zero.operators['log'].definition}" in legend  # ... and the legend says what it is
    assert '("log" in the formula text of kind zero)' in legend
    out, _ = _report(capsys, write_search(tmp_path / "plain"))  # CE: log, dot, softmax
    assert f"softmax(x) = {get_kind('cls').operators['softmax'].definition}" in out and "slog" not in out


def test_json_report_escapes_control_characters_and_stays_json(tmp_path, capsys):
    formula = "add(x, \x1b]52;c;ZXZpbA==\x07\x7f\x9b\u202e)"
    out, _ = _report(capsys, write_search(tmp_path / "run", formulas={"cls": formula}), "--json")
    for char in RAW + ("\x7f",):
        assert char not in out, repr(char)
    assert json.loads(out)["hall_of_fame"][0]["formulas"]["cls"] == formula  # the file's text, exactly

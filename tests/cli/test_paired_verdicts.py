"""The paired verdicts where a user reads them: `gp-loss report` (text and page) and `gp-loss evaluate`.

The run directories are written here file by file, as a search writes them (no training).
"""
import base64
import json
import re

import pytest

from gp_loss.cli import main
from gp_loss.evolution.config import SearchConfig
from gp_loss.metrics.paired import add_verdicts, verdict_summary
from gp_loss.paper_losses import PAPER_LOSSES
from gp_loss.runtime.checkpoint import save_checkpoint

CE = PAPER_LOSSES["ce"].formula
FOUND = "neg(dot(y, log(softmax(mul(2, x)))))"
SEEDS = [1000, 1001, 1002]


def _row(name, scores, baseline, formula):
    return {"name": name, "baseline": baseline, "formulas": {"cls": formula}, "seeds": SEEDS, "scores": scores,
            "mean": sum(scores) / len(scores), "std": 0.01}


def write_search(path, verdicts=True):
    """A finished classification search whose final retraining has a found loss beat ce, one level with it."""
    path.mkdir(parents=True, exist_ok=True)
    (path / "config.json").write_text(json.dumps(SearchConfig(max_evaluations=3, baselines=["ce"]).to_dict()))
    (path / "hall_of_fame.json").write_text(json.dumps({"metric": "validation accuracy", "hall_of_fame": [
        {"rank": r, "fitness": 0.9, "evaluation": r, "generation": 0, "formulas": {"cls": FOUND},
         "kinds": {"cls": "cls"}, "latex": {"cls": "?"}} for r in (1, 2)]}))
    (path / "baselines.json").write_text(json.dumps({"ce": 0.95}))
    rows = [_row("top1", [0.92, 0.93, 0.94], False, FOUND), _row("top2", [0.95, 0.85, 0.91], False, FOUND),
            _row("ce", [0.90, 0.91, 0.92], True, CE)]
    final = {"metric": "test accuracy", "evaluations": 3, "rows": rows}
    if verdicts:
        add_verdicts(rows, "ce")
        final.update(reference="ce", summary=verdict_summary(rows, "test accuracy"))
    (path / "final.json").write_text(json.dumps(final))
    with open(path / "evaluations.jsonl", "w") as fh:
        for k in range(1, 4):
            fh.write(json.dumps({"evaluation": k, "fitness": 0.5, "status": "ok", "formulas": {"cls": FOUND}}) + "\n")
    save_checkpoint(path, {"evaluations": 3, "generation": 1, "reused": 0})
    return path


SUMMARY = "top1 beat ce (test accuracy 93.00 vs 91.00: +2.00, 95% CI [+2.00, +2.00])"


def _text(capsys, run):
    assert main(["report", str(run)]) == 0
    return capsys.readouterr().out.split("final comparison")[1]


def _page(capsys, run):
    assert main(["report", str(run), "--html"]) == 0
    capsys.readouterr()
    return (run / "report.html").read_text(encoding="utf-8")


def test_the_text_report_shows_each_verdict_and_the_summary(tmp_path, capsys):
    table = _text(capsys, write_search(tmp_path / "run"))
    head, top1, top2, ce, summary = table.splitlines()[1:6]
    assert head.startswith("loss") and "vs ce (paired, 95% CI)" in head
    assert top1.startswith("top1") and "+2.00 [+2.00, +2.00] better than ce" in top1
    assert top2.startswith("top2") and "-0.67 [-14.35, +13.01] no clear difference from ce" in top2
    assert ce.startswith("ce") and "reference" in ce
    assert summary == SUMMARY


def test_the_page_draws_the_intervals_and_says_the_summary(tmp_path, capsys):
    page = _page(capsys, write_search(tmp_path / "run"))
    glance = page.split('class="glance">')[1].split("</div>")[0]
    assert SUMMARY in glance
    section = page.split("<h2>Final retraining: each loss against ce</h2>")[1].split("<h2>")[0]
    assert f"<b>{SUMMARY}</b>" in section
    assert "<td class=num>+2.00</td><td class=num>[+2.00, +2.00]</td><td>better than ce</td>" in section
    assert "<td>no clear difference</td>" in section and "the reference" in section
    forest = re.search(r'alt="paired differences from ce" src="data:image/png;base64,([^"]+)"', section)
    assert forest and base64.b64decode(forest.group(1)).startswith(b"\x89PNG")


def test_an_older_run_without_verdicts_still_renders_without_them(tmp_path, capsys):
    run = write_search(tmp_path / "old", verdicts=False)
    table = _text(capsys, run)
    assert "93.00 ± 1.00" in table and "paired" not in table and "better" not in table
    page = _page(capsys, run)
    assert "Final retraining: each loss against" not in page and "paired differences" not in page
    glance = page.split('class="glance">')[1].split("</div>")[0]
    assert "93.00 ± 1.00" in glance and "beat" not in glance


def test_a_verdict_from_a_run_file_is_escaped(tmp_path, capsys):
    run = write_search(tmp_path / "run")
    final = json.loads((run / "final.json").read_text())
    final["summary"] = "top1 beat <b>ce</b>\x1b[2J"
    final["rows"][0]["vs_reference"]["baseline"] = "ce\u202e<i>"
    (run / "final.json").write_text(json.dumps(final))
    table = _text(capsys, run)
    assert "\x1b" not in table and "\u202e" not in table and "top1 beat <b>ce</b>\\x1b[2J" in table
    page = _page(capsys, run)
    assert "\x1b" not in page and "\u202e" not in page and "beat <b>ce</b>" not in page and "<i>" not in page
    assert "top1 beat &lt;b&gt;ce&lt;/b&gt;\\x1b[2J" in page
    assert "better than ce\\u202e&lt;i&gt;" in page


@pytest.mark.parametrize("fmt", ["json", "text"])
def test_evaluate_compares_each_loss_with_the_first_on_the_same_seeds(capsys, fmt):
    argv = ["evaluate", "--loss", "ce", "--loss", "ce", "--seeds", "2", "--epochs", "1", "--device", "cpu"]
    assert main(argv + (["--json"] if fmt == "json" else [])) == 0
    out = capsys.readouterr().out
    if fmt == "text":
        last = out.splitlines()[-1]
        assert last.endswith("ce  vs the first (paired, 95% CI): +0.00 [+0.00, +0.00] no clear difference")
        return
    first, second = json.loads(out)["rows"]
    assert "vs_reference" not in first
    assert second["vs_reference"] == {"baseline": "ce", "delta": 0.0, "ci95": [0.0, 0.0],
                                      "verdict": "no clear difference"}

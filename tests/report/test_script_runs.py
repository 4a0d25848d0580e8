"""``gp-loss report`` on the run directories of runs/hps_det.py and runs/search_pap.py (conftest.py writes
them as the scripts do)."""
import json
import re
import shutil

import pytest

from gp_loss.cli import main
from gp_loss.report.script_runs import HPS_DET, PAP, SEARCH, report_kind


def _text(capsys, run, *extra):
    assert main(["report", str(run), *extra]) == 0
    return capsys.readouterr().out


def _page(capsys, run):
    assert main(["report", str(run), "--html"]) == 0
    assert capsys.readouterr().out.startswith("wrote ")
    page = (run / "report.html").read_text(encoding="utf-8")
    sources = re.findall(r'src="([^"]*)"', page)
    assert sources and all(s.startswith("data:image/png;base64,") for s in sources)  # self-contained
    return page


def _files(path):
    return {p.name: p.read_bytes() for p in path.iterdir()}


def test_the_kind_of_a_run_directory_is_told_by_its_files(hps_run, pap_run, tmp_path):
    assert report_kind(hps_run) == HPS_DET and report_kind(pap_run) == PAP
    search = tmp_path / "search"
    search.mkdir()
    (search / "config.json").write_text(json.dumps({"task": "classification", "scheme": "cse"}))
    assert report_kind(search) == SEARCH and report_kind(tmp_path / "nothing") == SEARCH
    for run, kind in ((hps_run, HPS_DET), (pap_run, PAP)):  # without its config.json, from its other files
        bare = tmp_path / f"bare_{kind}"
        shutil.copytree(run, bare)
        (bare / "config.json").write_text("{damaged")
        assert report_kind(bare) == kind


def test_text_report_of_an_hps_det_run_shows_history_best_and_final(hps_run, capsys):
    out = _text(capsys, hps_run)
    assert "has not finished a generation" not in out and "warning" not in out
    assert out.startswith("HPS-Det search (runs/hps_det.py)")
    assert "4 of 4 proxy trainings of 150 steps (stopped: budget)" in out
    history = out.split("history, AP (×100)")[1].split("best point")[0]
    assert re.search(r"3\s+15\.65\s+15\.65\s+s = \[3, 2, 3\]", history)  # each training and the best so far
    assert re.search(r"2\s+failed\s+10\.10\s+s = \[2, 2, 3\]\s+\(RuntimeError: boom\)", history)
    assert "best point: s = [3, 2, 3], proxy AP (×100) 15.65" in out and "P1 any w/h: 2" in out
    assert re.search(r"dynamic assignment, s = \[3, 2, 3\]:\s+17\.00 ± 1\.41", out)  # std over the seeds
    assert re.search(r"default assignment \(fcos\):\s+15\.00 ± 0\.00", out)
    assert re.search(r"gain over the default assignment:\s+\+2\.00", out)
    assert "ap_over_iterations.png" in out


def test_text_report_of_a_pap_run_shows_history_best_and_final(pap_run, capsys):
    out = _text(capsys, pap_run)
    assert out.startswith("PAP-Loss search (runs/search_pap.py)") and "has not finished a generation" not in out
    assert "4 of 4 proxy trainings" in out and "15.65" in out.split("best point")[0]
    assert "best point: θ = [0.250" in out and "H2: 0.250, 0.250" in out and "gradient scale: 1" in out
    assert re.search(r"PAP-Loss, searched θ \(\w+\):\s+17\.00 ± 1\.00", out)
    assert re.search(r"PAP-Loss, identity substitutions \(pap\):\s+7\.50 ± 7\.50\s+\(seed 1: non-finite \(loss is "
                     r"nan\)\)", out)
    assert re.search(r"gain over Focal \+ GIoU \(fl_giou\):\s+\+2\.00", out)
    data = json.loads(_text(capsys, pap_run, "--json"))
    assert data["kind"] == "pap" and len(data["history"]) == 4 and data["final"]["rows"][0]["mean"] == 0.17


def test_page_of_hps_and_pap_runs_shows_history_best_and_final(hps_run, pap_run, capsys):
    for run in (hps_run, pap_run):
        page = _page(capsys, run)
        for section in (">The run<", ">History of the search<", ">Best point<", ">Final comparison<",
                        ">Configuration<", "The script's pictures"):
            assert section in page, (run, section)
        assert "remove" not in page and "Missing" not in page and "hall_of_fame" not in page
        assert "AP (×100)" in page and "15.65" in page and "17.00 ± " in page


def test_a_running_hps_det_search_is_reported_from_its_checkpoint(tmp_path, capsys, writers):
    run = tmp_path / "running"
    writers.hps_config(run)
    writers.hps_checkpoint(run, [0.101, 0.12])
    before = _files(run)
    out = _text(capsys, run)
    assert "2 of 4 proxy trainings" in out and "from checkpoint.json; the search has not ended" in out
    assert "best point: s = [2, 2, 3], proxy AP (×100) 12.00" in out
    assert "final.json is missing: the final comparison has not run" in out
    assert _files(run) == before  # a report writes nothing


def test_a_pap_run_before_its_first_round_ends_still_has_a_report(tmp_path, capsys, writers):
    run = tmp_path / "starting"
    writers.pap_config(run)
    out = _text(capsys, run)
    assert "0 of 4 proxy trainings" in out and "no history of proxy trainings: the search has not ended" in out
    assert "Page" not in out and "Traceback" not in out


@pytest.mark.parametrize("name, text", [("final.json", '{"metric": "AP", "dynamic": 1, "default": {}}'),
                                        ("final.json", "[1, 2]"), ("best.json", '{"positives": "many"}'),
                                        ("history.json", '{"evaluations": [{"AP": 1}]}'), ("final.json", "{bad")])
def test_a_file_not_understood_is_said_so_and_left_alone(hps_run, capsys, name, text):
    (hps_run / name).write_text(text)
    before = _files(hps_run)
    out = _text(capsys, hps_run)
    page = _page(capsys, hps_run)
    (hps_run / "report.html").unlink()
    assert _files(hps_run) == before
    for shown in (out, page):
        assert name in shown and "remove" not in shown
        assert "not understood" in shown or "not readable JSON" in shown
        assert "left as it is" in shown


def test_a_directory_with_nothing_of_the_script_is_one_line(tmp_path, capsys):
    run = tmp_path / "empty_pap"
    run.mkdir()
    (run / "theta.json").write_text("[")
    assert main(["report", str(run)]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "nothing to report" in err and "PAP-Loss" in err


def _add_verdicts(run, comparisons, reference):
    """final.json of ``run`` with ``vs_reference`` on the rows of ``comparisons`` and ``"reference"``, as the
    scripts' compare writes them."""
    final = json.loads((run / "final.json").read_text())
    rows = final["losses"] if "losses" in final else final
    for name, comparison in comparisons.items():
        rows[name]["vs_reference"] = {"baseline": reference, **comparison}
    final["reference"] = reference
    (run / "final.json").write_text(json.dumps(final, indent=1) + "\n")


def test_an_hps_det_report_shows_the_paired_verdict_of_the_searched_assignment(hps_run, capsys):
    _add_verdicts(hps_run, {"dynamic": {"delta": 0.02, "ci95": [0.005, 0.035], "verdict": "better"}}, "default")
    out = _text(capsys, hps_run)
    assert re.search(r"dynamic assignment, s = \[3, 2, 3\]:\s+17\.00 ± 1\.41  \+2\.00 \[\+0\.50, \+3\.50\] better "
                     r"than default", out)
    assert re.search(r"default assignment \(fcos\):\s+15\.00 ± 0\.00  reference", out)
    data = json.loads(_text(capsys, hps_run, "--json"))
    assert data["final"]["reference"] == "default"
    rows = {r["name"]: r for r in data["final"]["rows"]}
    assert rows["dynamic"]["vs_reference"] == {"baseline": "default", "delta": 0.02, "ci95": [0.005, 0.035],
                                               "verdict": "better"}
    assert rows["default"]["vs_reference"] is None
    page = _page(capsys, hps_run)
    final = page.split(">Final comparison<")[1]
    assert "<th>vs default (paired, ×100, 95% CI)</th>" in final
    assert "<td>+2.00 [+0.50, +3.50] better than default</td>" in final and "<td>reference</td>" in final
    assert "+2.00 [+0.50, +3.50] better than default" in page.split(">The run<")[0]  # at a glance too


def test_a_pap_report_shows_each_loss_against_fl_giou(pap_run, capsys):
    _add_verdicts(pap_run, {"searched": {"delta": 0.02, "ci95": [-0.107, 0.147], "verdict": "no clear difference"},
                            "pap": {"delta": -0.075, "ci95": None, "verdict": "no clear difference"}}, "fl_giou")
    out = _text(capsys, pap_run)
    assert re.search(r"PAP-Loss, searched θ \(\w+\):\s+17\.00 ± 1\.00  \+2\.00 \[-10\.70, \+14\.70\] no clear "
                     r"difference from fl_giou", out)
    assert re.search(r"Focal \+ GIoU \(fl_giou\):\s+15\.00 ± 0\.00  reference", out)
    assert re.search(r"identity substitutions \(pap\):\s+7\.50 ± 7\.50  -7\.50 \[one seed: no interval\] no clear "
                     r"difference from fl_giou  \(seed 1: non-finite", out)
    page = _page(capsys, pap_run)
    assert "<th>vs fl_giou (paired, ×100, 95% CI)</th>" in page
    assert "+2.00 [-10.70, +14.70] no clear difference from fl_giou" in page


def test_a_final_json_without_verdicts_or_with_a_damaged_one_still_renders(hps_run, pap_run, capsys):
    for run in (hps_run, pap_run):  # the fixtures' final.json holds no verdicts
        out = _text(capsys, run)
        assert "final comparison" in out and " than " not in out and "difference from" not in out
        assert "reference" not in out.split("final comparison")[1]
        page = _page(capsys, run)
        assert ">Final comparison<" in page and "paired, ×100" not in page and "17.00 ± " in page
    _add_verdicts(hps_run, {"dynamic": {"delta": "big", "ci95": [0, 1], "verdict": "great"}}, "default")
    out = _text(capsys, hps_run)
    assert "great" not in out and "big" not in out and re.search(r"dynamic assignment.*17\.00 ± 1\.41\n", out)
    assert "warning" not in out
    assert ">Final comparison<" in _page(capsys, hps_run)

"""Paired comparisons on the same seeds: the Student-t interval of the mean difference, its verdict, the summary
sentence and the final table that shows them."""
import math

import pytest

from gp_loss.evolution.config import SearchConfig
from gp_loss.evolution.run_search import final_table, run_search
from gp_loss.metrics.paired import (add_verdicts, comparison_text, paired_comparison, read_comparison,
                                    reference_name, verdict_summary)
from gp_loss.paper_losses import PAPER_LOSSES
from gp_loss.tasks import TrainOutcome
from gp_loss.tasks.classification import ClassificationTask

T_975_2 = 4.302653  # Student's t, 97.5% quantile, 2 degrees of freedom (tables)
T_975_3 = 3.182446  # 3 degrees of freedom


def test_differences_1_2_3_are_no_clear_difference():
    # mean 2, sd 1: half-width t(0.975, 2) / sqrt(3) = 2.484138
    c = paired_comparison([1.0, 2.0, 3.0], [0.0, 0.0, 0.0])
    assert c["delta"] == pytest.approx(2.0)
    assert c["ci95"] == pytest.approx([2 - T_975_2 / math.sqrt(3), 2 + T_975_2 / math.sqrt(3)], abs=1e-6)
    assert c["ci95"] == pytest.approx([-0.484138, 4.484138], abs=1e-6)
    assert c["verdict"] == "no clear difference"


def test_an_interval_above_zero_is_better_and_below_is_worse():
    # differences 0.02, 0.03, 0.01, 0.02: mean 0.02, sd sqrt(0.0002 / 3) = 0.0081650
    ref = [0.80, 0.81, 0.82, 0.83]
    mine = [0.82, 0.84, 0.83, 0.85]
    half = T_975_3 * math.sqrt(0.0002 / 3) / 2  # 0.012992
    better = paired_comparison(mine, ref)
    assert better["delta"] == pytest.approx(0.02)
    assert better["ci95"] == pytest.approx([0.02 - half, 0.02 + half], abs=1e-6)
    assert better["verdict"] == "better"
    worse = paired_comparison(ref, mine)
    assert worse["delta"] == pytest.approx(-0.02)
    assert worse["ci95"] == pytest.approx([-0.02 - half, -0.02 + half], abs=1e-6)
    assert worse["verdict"] == "worse"


def test_pairing_removes_the_seeds_shared_noise():
    # The seeds differ a lot from each other, the loss beats the reference on every one by about 1 point.
    ref = [0.50, 0.70, 0.60, 0.90, 0.40]
    mine = [0.51, 0.71, 0.612, 0.909, 0.41]
    assert paired_comparison(mine, ref)["verdict"] == "better"


def test_a_loss_against_itself_is_no_clear_difference():
    scores = [0.913, 0.874, 0.902]
    assert paired_comparison(scores, list(scores)) == {"delta": 0.0, "ci95": [0.0, 0.0],
                                                      "verdict": "no clear difference"}


def test_one_seed_has_no_interval():
    assert paired_comparison([0.9], [0.5]) == pytest.approx({"delta": 0.4, "ci95": None,
                                                            "verdict": "no clear difference"})


def test_lengths_must_match():
    with pytest.raises(ValueError, match="2 score"):
        paired_comparison([0.1, 0.2], [0.1])
    with pytest.raises(ValueError, match="confidence"):
        paired_comparison([0.1, 0.2], [0.1, 0.3], confidence=1.0)


def test_a_failed_training_is_compared_as_its_score_0_and_a_non_finite_pair_is_left_out():
    assert paired_comparison([0.0, 0.0, 0.0], [0.8, 0.82, 0.81])["verdict"] == "worse"
    c = paired_comparison([1.0, math.nan, 2.0, 3.0], [0.0, 0.5, 0.0, 0.0])
    assert c["delta"] == pytest.approx(2.0) and c["ci95"] == pytest.approx([-0.484138, 4.484138], abs=1e-6)
    assert paired_comparison([math.inf], [0.5]) == {"delta": None, "ci95": None, "verdict": "no clear difference"}


def test_reference_name():
    assert reference_name("ce", ["focal", "ce"]) == "ce"
    assert reference_name("fl_giou", ["torchvision", "pap"]) == "torchvision"
    assert reference_name(None, ["dice"]) == "dice"
    assert reference_name("ce", []) is None


def _row(name, scores, baseline, seeds=(1000, 1001, 1002)):
    return {"name": name, "baseline": baseline, "formulas": {"cls": f"{name}(x)"}, "seeds": list(seeds),
            "scores": list(scores), "mean": sum(scores) / len(scores), "std": 0.01}


def test_add_verdicts_pairs_by_seed_and_skips_the_reference():
    ref = _row("ce", [0.80, 0.81, 0.82], True)
    shuffled = _row("top1", [0.84, 0.82, 0.83], False, seeds=(1002, 1000, 1001))  # +0.02 on every seed
    rows = [shuffled, ref]
    add_verdicts(rows, "ce")
    assert "vs_reference" not in ref
    vs = shuffled["vs_reference"]
    assert vs["baseline"] == "ce" and vs["delta"] == pytest.approx(0.02)
    assert vs["ci95"] == pytest.approx([0.02, 0.02]) and vs["verdict"] == "better"
    assert read_comparison(vs) == vs
    assert comparison_text(vs) == "+2.00 [+2.00, +2.00] better than ce"
    with pytest.raises(ValueError, match="no row named 'dice'"):
        add_verdicts(rows, "dice")


def test_summary_names_the_found_losses_that_beat_the_best_baseline():
    rows = [_row("top1", [0.82, 0.83, 0.84], False), _row("top2", [0.90, 0.92, 0.91], False),
            _row("top1_refined", [0.85, 0.80, 0.90], False),
            _row("ce", [0.80, 0.81, 0.82], True), _row("dice", [0.85, 0.86, 0.88], True)]
    text = verdict_summary(rows, "test BF1")
    # top2 - dice = 0.05, 0.06, 0.03: mean 0.04667, sd 0.015275, half-width 0.037946
    assert text == "top2 beat dice (test BF1 91.00 vs 86.33: +4.67, 95% CI [+0.87, +8.46])"


def test_summary_says_plainly_when_no_found_loss_beat_the_best_baseline():
    rows = [_row("top1", [0.70, 0.72, 0.71], False), _row("top2", [0.60, 0.61, 0.62], False),
            _row("dice", [0.85, 0.86, 0.88], True), _row("ce", [0.71, 0.70, 0.69], True)]
    assert verdict_summary(rows, "test BF1") == (
        "no found loss beat dice (test BF1 86.33): the best, top1, scored 71.00 (-15.33, 95% CI [-19.13, "
        "-11.54]: worse)")
    assert verdict_summary([r for r in rows if r["baseline"]], "test BF1") == ""


def test_final_table_shows_each_verdict_and_the_summary():
    rows = [_row("top1", [0.82, 0.83, 0.84], False), _row("top1_refined", [0.81, 0.90, 0.79], False),
            _row("ce", [0.80, 0.81, 0.82], True)]
    add_verdicts(rows, "ce")
    result = {"metric": "test accuracy", "rows": rows, "reference": "ce",
              "summary": verdict_summary(rows, "test accuracy")}
    lines = final_table(result).splitlines()
    assert "vs ce (paired, 95% CI)" in lines[0]
    assert "+2.00 [+2.00, +2.00] better than ce" in lines[1]
    assert lines[2].startswith("top1_refined") and "no clear difference from ce" in lines[2]
    assert lines[3].startswith("ce") and "reference" in lines[3]
    assert lines[4] == "top1 beat ce (test accuracy 83.00 vs 81.00: +2.00, 95% CI [+2.00, +2.00])"


def test_final_table_of_an_older_run_shows_no_verdict_column():
    rows = [_row("top1", [0.82, 0.83, 0.84], False), _row("ce", [0.80, 0.81, 0.82], True)]
    rows[0]["vs_reference"] = {"baseline": "ce", "delta": "big", "ci95": None, "verdict": "better"}  # edited
    text = final_table({"metric": "test accuracy", "rows": rows})
    assert "paired" not in text and "better" not in text and "reference" not in text
    assert len(text.splitlines()) == 3


def test_a_search_ends_with_verdicts_against_its_reference_baseline(tmp_path, monkeypatch):
    ce = PAPER_LOSSES["ce"].formula

    def final(self, genome, seed):  # ce a point above every other loss, seed by seed, with seed noise
        noise = [0.0, 0.05, -0.03][seed - 1000]
        return TrainOutcome(0.8 + noise + (0.01 if genome.formulas()["cls"] == ce else 0.0))

    monkeypatch.setattr(ClassificationTask, "proxy_fitness",
                        lambda self, genome, seed, time_limit_s=None, fidelity=1.0: TrainOutcome(0.5))
    monkeypatch.setattr(ClassificationTask, "final_score", final)
    config = SearchConfig(population=3, max_evaluations=3, offspring_per_generation=3, final_seeds=3, final_top=1,
                          baselines=["focal", "ce"], task_options={"proxy_epochs": 1, "final_epochs": 1})
    result = run_search(config, str(tmp_path / "run"), progress=False)
    assert result["reference"] == "focal"  # classification names no reference baseline: the run's first
    rows = {r["name"]: r for r in result["rows"]}
    assert "vs_reference" not in rows["focal"]
    assert rows["top1"]["vs_reference"] == {"baseline": "focal", "delta": 0.0, "ci95": [0.0, 0.0],
                                            "verdict": "no clear difference"}
    assert rows["ce"]["vs_reference"]["verdict"] == "better"
    assert rows["ce"]["vs_reference"]["delta"] == pytest.approx(0.01)
    # The summary judges the found losses against the best baseline by mean, ce.
    assert result["summary"] == ("no found loss beat ce (test accuracy 81.67): the best, top1, scored 80.67 "
                                 "(-1.00, 95% CI [-1.00, -1.00]: worse)")
    assert "better than focal" in final_table(result)


def test_a_baseline_the_search_kept_is_no_found_loss_in_the_summary_and_is_marked_in_the_table():
    dice = _row("dice", [0.85, 0.86, 0.88], True)
    kept = {**_row("top1", [0.85, 0.86, 0.88], False), "formulas": dice["formulas"], "same_as": "dice"}
    found = _row("top2", [0.70, 0.72, 0.71], False)
    ce = _row("ce", [0.71, 0.70, 0.69], True)
    assert verdict_summary([kept, dice, ce], "test BF1") == (
        "no found loss beat dice (test BF1 86.33): the search's best were baselines (top1 is dice)")
    assert verdict_summary([kept, found, dice, ce], "test BF1").startswith(
        "no found loss beat dice (test BF1 86.33): the best, top2, scored 71.00")
    rows = [kept, found, dice, ce]
    add_verdicts(rows, "ce")
    table = final_table({"metric": "test BF1", "rows": rows, "reference": "ce"})
    (line,) = [ln for ln in table.splitlines() if ln.startswith("top1 ")]
    assert line.endswith("(= dice) cls=dice(x)")

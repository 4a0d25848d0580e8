"""The filter benchmark counts survivors that gradient equivalence would reuse, and checks the baselines."""
import json

import pytest

from primitives import get_kind

from gp_loss.bench.filters import bench_filters, check_baselines, format_baselines
from gp_loss.language.parse import parse_formula
from gp_loss.paper_losses import PAPER_LOSSES


def test_copies_of_a_survivor_are_reused_not_trained():
    kind = get_kind("bcls")
    bce = parse_formula(kind, PAPER_LOSSES["bce"].formula)
    # max_candidates keeps this deterministic: the same seed gives the same candidates.
    a = bench_filters(kind, seconds=120, seed=3, max_candidates=200, random_trees=100, parents=[bce])
    b = bench_filters(kind, seconds=120, seed=3, max_candidates=200, random_trees=100, parents=[bce])
    search = a["search"]
    assert search["candidates"] == 200
    # The offspring rule copies parents 10% of the time: copies of survivors are cache hits.
    assert search["reused"] > 0 and search["to_proxy_training"] > 0
    assert search["to_proxy_training"] + search["reused"] == search["passed"]
    assert a["search"]["passed"] == b["search"]["passed"]
    assert a["random_init"]["passed"] == b["random_init"]["passed"]
    # Random depth-3 trees are almost all rejected by stages 1-4.
    assert a["random_init"]["rejected_fraction"] >= 0.9


def test_zero_baselines_pass_and_are_reported():
    # Every segmentation paper loss must pass stages 1-4 (the filters must not reject a baseline).
    kind = get_kind("zero")
    result = bench_filters(kind, seconds=120, seed=0, max_candidates=30, random_trees=20)
    expected = [name for name, p in PAPER_LOSSES.items() if p.kind == "zero"]
    assert set(expected) >= {"seg_ce", "seg_focal", "seg_dice", "seg_ce_dice", "zero_ce"}
    baselines = result["baselines"]
    assert list(baselines) == expected
    for name, b in baselines.items():
        assert b["passed"] and b["stage"] is None and b["reason"] == "", (name, b)
        assert b["gain"] > 0.1, name  # well above the rejection threshold eta


@pytest.mark.parametrize("kind", ["cls", "bcls", "reg"])
def test_other_kinds_baselines_pass(kind):
    baselines = check_baselines(get_kind(kind))
    assert list(baselines) == [name for name, p in PAPER_LOSSES.items() if p.kind == kind]
    assert all(b["passed"] for b in baselines.values()), baselines


def test_format_baselines_names_the_stage_and_reason_of_a_rejection():
    line = format_baselines({
        "seg_ce": {"passed": True, "stage": None, "reason": "", "gain": 0.687},
        "seg_dice": {"passed": False, "stage": "rejection", "reason": "metric gain 0.05 < eta 0.1", "gain": 0.05},
    })
    assert line.startswith("baselines (1 of 2 rejected): ")
    assert "seg_ce passed (gain 0.687)" in line
    assert "seg_dice REJECTED by rejection: metric gain 0.05 < eta 0.1" in line
    assert format_baselines({"a": {"passed": True, "stage": None, "reason": "", "gain": None}}) == \
        "baselines (all 1 pass stages 1-4): a passed"


def test_cli_prints_the_baselines(capsys):
    from gp_loss.cli import main

    assert main(["bench", "filters", "--kind", "zero", "--seconds", "0.5", "--random-trees", "5"]) == 0
    out = capsys.readouterr().out
    line = next(line for line in out.splitlines() if line.startswith("baselines"))
    assert line.startswith("baselines (all 5 pass stages 1-4): zero_ce passed")
    assert "seg_dice passed" in line
    assert main(["bench", "filters", "--kind", "zero", "--seconds", "0.2", "--random-trees", "2", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert set(data["baselines"]) == {"zero_ce", "seg_ce", "seg_focal", "seg_dice", "seg_ce_dice"}
    assert all(b["passed"] for b in data["baselines"].values())

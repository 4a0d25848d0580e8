"""Constant refinement (--refine N): the literals' grid, the refined text, refinement.json, final.json, resume."""
import json
from types import SimpleNamespace

import pytest

from gp_loss.errors import GpLossError
from gp_loss.evolution import script
from gp_loss.evolution.config import SearchConfig
from gp_loss.evolution.refine import (NO_LITERAL, NOT_BETTER, REFINEMENT, Literal, ProxyObjective, find_literals,
                                      grid_value, literal_bounds, refine_top, refined_formulas)
from gp_loss.evolution.run_search import open_run, run_search
from gp_loss.language import parse_formula
from gp_loss.runtime.parallel import open_backend
from gp_loss.runtime.run_dir import RunDir
from primitives import get_kind

CLS = {"cls": "cls"}
SCALED_CE = "neg(dot(y, log(softmax(mul(2, x)))))"


# -- literals and their grid ---------------------------------------------------------

def test_literals_are_found_in_layout_then_reading_order():
    layout = {"a": "cls", "b": "cls"}
    formulas = {"b": "mul(x, 3)", "a": "add(mul(x, -0.25), 0)"}
    found = find_literals(layout, formulas)
    assert [(lit.branch, lit.value) for lit in found] == [("a", -0.25), ("a", 0), ("b", 3)]
    assert find_literals(CLS, {"cls": "neg(dot(y, log(softmax(x))))"}) == []


def test_grid_hand_examples():
    assert grid_value(2, 0) == 2 and grid_value(2, 4) == 4 and grid_value(2, -4) == 1
    assert grid_value(2, 8) == 8 and grid_value(2, -8) == 0.5
    assert grid_value(-0.25, 4) == -0.5  # the sign is kept
    assert grid_value(0.1, 1) == 0.1189  # 0.1 * 2**0.25, 4 significant digits
    assert grid_value(0.123456789, 0) == 0.123456789  # k = 0 is the literal exactly
    assert grid_value(0, 0) == 0 and grid_value(0, 4) == 0.5 and grid_value(0, -8) == -1
    assert type(grid_value(2, 4)) is int and type(grid_value(2, 1)) is float


def test_a_literal_near_the_float_range_end_gets_only_finite_values():
    assert literal_bounds(2) == (-8, 8)
    low, high = literal_bounds(1.7e308)
    assert (low, high) == (-8, 0)


@pytest.mark.parametrize("text", ["neg(dot(y, log(softmax(mul(2, x)))))", "add(mul(x, -0.25), 0)",
                                  "mul(add(x, 0.001), 1e20)", "sub(mul(3, x), mul(y, 0.7071))"])
def test_refined_text_parses_back_with_the_grid_values(text):
    formulas = {"cls": text}
    literals = find_literals(CLS, formulas)
    for k in (-8, -3, 0, 1, 5, 8):
        x = [k] * len(literals)
        refined = refined_formulas(CLS, formulas, literals, x)
        tree = parse_formula(get_kind("cls"), refined["cls"])
        assert str(tree) == refined["cls"]
        assert [lit.value for lit in find_literals(CLS, refined)] == [grid_value(lit.value, k) for lit in literals]
    canonical = {"cls": str(parse_formula(get_kind("cls"), text))}
    assert refined_formulas(CLS, formulas, literals, [0] * len(literals)) == canonical


def test_the_objective_pickles_and_a_failure_scores_zero():
    import pickle

    objective = ProxyObjective(config={"seed": 0, "no_such_field": 1}, layout=CLS, formulas={"cls": SCALED_CE},
                               literals=(Literal("cls", 6, 2),))
    assert pickle.loads(pickle.dumps(objective)) == objective
    assert objective([3]) == 0.0  # a configuration no worker can build: a failed point, not an exception


# -- refine_top without training: a stand-in proxy ---------------------------------------

def _search(refine_budget: int, layout=CLS) -> SimpleNamespace:
    config = SimpleNamespace(refine=refine_budget, seed=5)
    return SimpleNamespace(config=config, layout=layout, config_dict={"seed": 5}, mapper=open_backend("serial", 1),
                           recorder=SimpleNamespace(progress_enabled=False))


def _peak_at(best_k: int):
    def proxy(self, x):
        return 0.5 - 0.01 * abs(x[0] - best_k)
    return proxy


def test_a_better_grid_point_gives_a_refined_entry(tmp_path, monkeypatch):
    monkeypatch.setattr(ProxyObjective, "__call__", _peak_at(3))
    run = RunDir(tmp_path)
    out = refine_top(_search(8), [("top1", {"cls": SCALED_CE}, 0.4)], run)
    item, = json.loads((tmp_path / REFINEMENT).read_text())
    assert item["literals_before"] == [2] and item["literals_after"] == [grid_value(2, 3)]
    assert item["proxy_before"] == pytest.approx(0.47) and item["proxy_after"] == pytest.approx(0.5)
    assert item["proxy_after"] >= item["proxy_before"] and item["evaluations"] == 8
    assert item["refined_formula"] == {"cls": "neg(dot(y, log(softmax(mul(3.364, x)))))"}
    assert out == [("top1_refined", item["refined_formula"], item["proxy_after"])]
    assert len(list((tmp_path / "refinement" / "top1").iterdir())) == 1  # one directory per formula


def test_nothing_better_keeps_the_unrefined_formula_and_adds_no_entry(tmp_path, monkeypatch):
    monkeypatch.setattr(ProxyObjective, "__call__", _peak_at(0))
    out = refine_top(_search(6), [("top1", {"cls": SCALED_CE}, 0.4)], RunDir(tmp_path))
    item, = json.loads((tmp_path / REFINEMENT).read_text())
    assert out == []
    assert item["kept"] == NOT_BETTER and item["refined_formula"] == item["formula"]
    assert item["proxy_after"] == item["proxy_before"] == 0.5 and item["literals_after"] == [2]


def test_a_formula_without_literals_or_budget_is_skipped_with_the_reason(tmp_path, monkeypatch):
    monkeypatch.setattr(ProxyObjective, "__call__", _peak_at(3))
    entries = [("top1", {"cls": "neg(dot(y, log(softmax(x))))"}, 0.4), ("top2", {"cls": SCALED_CE}, 0.3)]
    assert refine_top(_search(2), entries, RunDir(tmp_path)) == []
    first, second = json.loads((tmp_path / REFINEMENT).read_text())
    assert first["skipped"] == NO_LITERAL and "refined_formula" not in first
    assert "refine = 2 evaluations are too few for 1 literal(s)" in second["skipped"]


def test_an_interrupted_refinement_resumes_exactly(tmp_path, monkeypatch):
    calls = []

    def counted(self, x):
        calls.append(list(x))
        if len(calls) == 4:
            raise KeyboardInterrupt
        return _peak_at(3)(self, x)

    monkeypatch.setattr(ProxyObjective, "__call__", _peak_at(3))
    entries = [("top1", {"cls": SCALED_CE}, 0.4)]
    refine_top(_search(9), entries, RunDir(tmp_path / "whole"))
    monkeypatch.setattr(ProxyObjective, "__call__", counted)
    with pytest.raises(KeyboardInterrupt):
        refine_top(_search(9), entries, RunDir(tmp_path / "cut"))
    assert not (tmp_path / "cut" / REFINEMENT).exists()
    refine_top(_search(9), entries, RunDir(tmp_path / "cut"))
    assert len(calls) == 4 + 9 - 3  # the 3 finished points are not trained again
    assert (tmp_path / "cut" / REFINEMENT).read_text() == (tmp_path / "whole" / REFINEMENT).read_text()


# -- the flag ---------------------------------------------------------------------------

def test_the_flag_sets_the_field_and_a_resume_may_not_change_it(tmp_path):
    args = script.build_parser("search", {}).parse_args(["--refine", "12", "--out", str(tmp_path / "r")])
    config, _, _ = script.config_from_args(args, {}, SearchConfig(), "out")
    assert config.refine == 12
    run = RunDir(tmp_path / "r")
    run.prepare()
    open_run(config, run, resume=False)
    assert json.loads(run.file("config.json").read_text())["refine"] == 12
    config.refine = 3
    with pytest.raises(GpLossError, match="refine: 12 -> 3"):
        open_run(config, run, resume=True)


# -- a real search on digits ---------------------------------------------------------------

@pytest.fixture(scope="module")
def searched(tmp_path_factory):
    out = tmp_path_factory.mktemp("refine") / "run"
    config = SearchConfig(task="classification", scheme="cse", start={"cls": SCALED_CE}, max_evaluations=4,
                          population=2, offspring_per_generation=2, final_top=1, final_seeds=1, refine=4,
                          device="cpu", task_options={"proxy_epochs": 1, "final_epochs": 1})
    result = run_search(config, str(out), progress=False)
    return config, out, result


def test_a_search_writes_refinement_and_retrains_the_refined_formula(searched):
    _, out, result = searched
    item, = json.loads((out / REFINEMENT).read_text())
    top1 = next(r for r in result["rows"] if r["name"] == "top1")
    assert item["formula"] == top1["formulas"] and item["evaluations"] == 4
    assert item["proxy_after"] >= item["proxy_before"]
    assert item["proxy_before"] == pytest.approx(top1["proxy_fitness"])  # the same proxy, the same seed
    refined = [r for r in result["rows"] if r["name"] == "top1_refined"]
    if "kept" in item:
        assert refined == []
    else:
        row, = refined
        assert row["baseline"] is False and row["formulas"] == item["refined_formula"]
        assert row["proxy_fitness"] == item["proxy_after"] and len(row["scores"]) == 1
    assert json.loads((out / "final.json").read_text())["rows"] == result["rows"]


def test_a_resume_does_not_redo_the_refinement(searched, monkeypatch):
    config, out, result = searched

    def forbidden(self, x):
        raise AssertionError("a finished refinement trained again")

    monkeypatch.setattr(ProxyObjective, "__call__", forbidden)
    before = (out / REFINEMENT).read_text()
    again = run_search(config, str(out), resume=True, progress=False)
    assert again == result and (out / REFINEMENT).read_text() == before
    # Without final.json the retraining is redone, the refinement read back from its checkpoints.
    (out / "final.json").unlink()
    again = run_search(config, str(out), resume=True, progress=False)
    assert [r["name"] for r in again["rows"]] == [r["name"] for r in result["rows"]]
    assert (out / REFINEMENT).read_text() == before

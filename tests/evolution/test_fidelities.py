"""Successive halving in the evolution search (Li et al., JMLR 2018).

A generation's children train at the lowest fidelity; the best ``promote`` of each rung train at the
next, up to the whole proxy. The budget counts a training at fidelity f as f, the hall of fame holds
whole-proxy scores only, one fidelity is the plain search, and a run interrupted anywhere in a rung
resumes to the result of one that ran through.
"""
import argparse
import json
import random

import pytest
from deap import tools

from gp_loss.errors import GpLossError
from gp_loss.evolution import jobs, script
from gp_loss.evolution.config import SearchConfig
from gp_loss.evolution.individual import individual_from_formulas
from gp_loss.evolution.recorder import Recorder
from gp_loss.evolution.run_search import run_search
from gp_loss.evolution.search import (Search, generation_cost, promoted_count, promotions, select_best,
                                      select_tournament)
from gp_loss.runtime.parallel import open_backend
from gp_loss.runtime.run_dir import RunDir
from gp_loss.tasks.base import FAILED_STATUSES

from tests.evolution.run_records import (logbook as _logbook, read_json as _json, records as _records,
                                       without_seconds as _without_seconds)
from tests.helpers import assert_user_error

CE = "neg(dot(y, log(softmax(x))))"
FIDELITIES = [0.25, 0.5, 1.0]
PROMOTE = 0.5
# Four children a generation: 4 at 1/4, 2 at 1/2, 1 whole (3 trainings' worth); the budget of 8 takes
# two whole generations and a smaller third.
TINY = dict(task="classification", population=4, offspring_per_generation=4, max_evaluations=8, final_top=1,
            final_seeds=1, task_options={"proxy_epochs": 1, "final_epochs": 1})


def halving(**changes) -> SearchConfig:
    return SearchConfig(**{**TINY, "fidelities": FIDELITIES, "promote": PROMOTE, **changes})


def _rung(record):
    return FIDELITIES.index(record["fidelity"])


def _key(formulas):
    return json.dumps(formulas, sort_keys=True)


def _serial_search(config, path):
    return Search(config, open_backend("serial"), Recorder(RunDir(path), config, progress=False))


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """A successive-halving search that ran through."""
    path = tmp_path_factory.mktemp("fidelities") / "run"
    run_search(halving(), str(path), progress=False)
    return path


# -- the rules, by hand ---------------------------------------------------------------------------------
def test_promotions_take_the_best_in_slot_order_with_ties_to_the_earlier_slot():
    scored = [(0, .5), (1, .9), (2, .9), (3, .1), (4, .7)]
    assert promotions(scored, 1 / 3) == [1, 2]
    assert promotions(scored, 0.5) == [1, 2, 4]
    assert promotions(list(reversed(scored)), 1 / 3) == [1, 2]  # slot order, whatever order they come in
    assert promotions([(0, .5), (1, .5), (2, .5)], 1 / 3) == [0]
    assert promotions([(3, .5), (1, .5), (2, .8), (0, .1)], 0.5) == [1, 2]
    assert promotions([(4, .2), (7, .3)], 1 / 3) == [7]  # slots need not be contiguous (some reused)
    assert promotions([], 0.5) == []


@pytest.mark.parametrize("candidates, promote, expected", [
    (0, 1 / 3, 0), (1, 1 / 3, 1), (2, 1 / 3, 1), (3, 1 / 3, 1), (4, 1 / 3, 2), (9, 1 / 3, 3), (10, 1 / 3, 4),
    (4, 0.5, 2), (5, 0.5, 3), (10, 0.1, 1), (10, 0.7, 7), (20, 0.05, 1), (100, 0.99, 99),
    (1, 1e-12, 1), (50, 1e-12, 1),  # a non-empty rung always sends one on
])
def test_promoted_count_is_the_ceiling_of_the_share(candidates, promote, expected):
    assert promoted_count(candidates, promote) == expected


def test_generation_cost_by_hand():
    assert generation_cost(9, [1 / 9, 1 / 3, 1.0], 1 / 3) == pytest.approx(9 / 9 + 3 / 3 + 1)
    assert generation_cost(4, FIDELITIES, 0.5) == pytest.approx(4 * .25 + 2 * .5 + 1 * 1)
    assert generation_cost(5, FIDELITIES, 0.5) == pytest.approx(5 * .25 + 3 * .5 + 2 * 1)
    assert generation_cost(1, [0.1, 0.3, 1.0], 1 / 3) == pytest.approx(1.4)
    assert generation_cost(7, [1.0], 1 / 3) == 7
    assert generation_cost(0, FIDELITIES, 0.5) == 0


def _member(fidelity, fitness):
    ind = individual_from_formulas({"cls": "cls"}, {"cls": CE})
    ind.fitness.values, ind.fidelity = (fitness,), fidelity
    return ind


def test_selection_by_rank_compares_the_fidelity_before_the_fitness():
    low, middle, whole = _member(0.25, 0.9), _member(0.5, 0.8), _member(1.0, 0.1)
    population = [low, middle, whole]
    assert select_best(population, 1, by_rank=True)[0] is whole
    assert [i is j for i, j in zip(select_best(population, 3, by_rank=True), [whole, middle, low])] == [True] * 3
    assert select_best(population, 1)[0] is low  # DEAP's selBest: the fitness alone
    # DEAP's own draw of the entrants; the winner of each is the one measured furthest along.
    random.seed(3)
    picks = select_tournament(population, 40, fraction=1.0, by_rank=True)
    random.seed(3)
    entrants = [tools.selRandom(population, 3) for _ in range(40)]
    winners = [max(e, key=lambda i: (i.fidelity, i.fitness.values[0])) for e in entrants]
    assert [p is w for p, w in zip(picks, winners)] == [True] * 40
    assert any(p is whole for p in picks) and any(p is not whole for p in picks)
    random.seed(3)
    plain = select_tournament(population, 40, fraction=1.0)
    random.seed(3)
    assert [p is q for p, q in zip(plain, tools.selTournament(population, 40, tournsize=3))] == [True] * 40


# -- the configuration ----------------------------------------------------------------------------------
@pytest.mark.parametrize("changes, message", [
    ({"fidelities": [0.5]}, "fidelities must be fractions in (0, 1] ending at 1"),
    ({"fidelities": [0.25, 0.5]}, "ending at 1"),
    ({"fidelities": [0.5, 1.5]}, "ending at 1"),
    ({"fidelities": [0.5, 0.25, 1.0]}, "fidelities must ascend strictly"),
    ({"fidelities": [0.5, 0.5, 1.0]}, "fidelities must ascend strictly"),
    ({"fidelities": [1.0, 1.0]}, "fidelities must ascend strictly"),
    ({"fidelities": [0.0, 1.0]}, "in (0, 1]"),
    ({"fidelities": [-0.5, 1.0]}, "in (0, 1]"),
    ({"fidelities": [float("nan"), 1.0]}, "in (0, 1]"),
    ({"fidelities": [float("inf")]}, "in (0, 1]"),
    ({"fidelities": [i / 10 for i in range(1, 10)] + [1.0]}, "at most 8 rungs, got 10"),
    ({"fidelities": []}, "fidelities must be a list of fractions"),
    ({"fidelities": [True]}, "fidelities must be a list of fractions"),
    ({"fidelities": ["0.5", 1.0]}, "fidelities must be a list of fractions"),
    ({"promote": 0.0}, "promote is the fraction of a rung"),
    ({"promote": 1.0}, "promote is the fraction of a rung"),
    ({"promote": -0.2}, "promote is the fraction of a rung"),
    ({"promote": float("nan")}, "promote must be a finite number"),
])
def test_bad_fidelities_and_promote_are_refused_in_one_line(changes, message):
    with pytest.raises(GpLossError) as err:
        halving(**changes).check()
    assert message in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize("fidelities", [[1.0], [1], [1 / 9, 1 / 3, 1.0], [i / 8 for i in range(1, 9)]])
def test_good_fidelities_pass(fidelities):
    halving(fidelities=fidelities).check()


def test_fraction_flags_take_decimals_and_ratios():
    assert script.fractions("1/9,1/3,1") == [1 / 9, 1 / 3, 1.0]
    assert script.fractions("0.25, 0.5 ,1") == [0.25, 0.5, 1.0]
    assert script.fraction(" 1/3 ") == 1 / 3
    for bad in ("1/0", "abc", "", "1e999999", "0.5;1"):
        with pytest.raises(argparse.ArgumentTypeError, match="expected a number such as 0.25 or 1/3"):
            script.fraction(bad)


# -- a search with successive halving ---------------------------------------------------------------------
def test_each_rung_trains_the_best_of_the_rung_below_after_it(reference):
    records = _records(reference)
    assert all("fidelity" in r for r in records)
    assert {r["fidelity"] for r in records} == set(FIDELITIES)
    assert [r["evaluation"] for r in records] == list(range(1, len(records) + 1))
    generations = [r["generation"] for r in records]
    assert generations == sorted(generations) and len(set(generations)) >= 2
    widest = 0
    for generation in sorted(set(generations)):
        mine = [r for r in records if r["generation"] == generation]
        rungs = [_rung(r) for r in mine]
        assert rungs[0] == 0 and rungs == sorted(rungs)  # every rung-r record after the rung below's
        for rung in range(len(FIDELITIES)):
            here = [r for r in mine if _rung(r) == rung]
            slots = [r["slot"] for r in here]
            assert slots == sorted(set(slots))  # slot order, one record per slot
            if rung == 0:
                continue
            # Candidates: every child trained at the rung below (a training that failed above rung 0
            # measured nothing there, and ranks with the lowest rung's).
            below = [r for r in mine if _rung(r) == rung - 1
                     and (rung == 1 or r["status"] not in FAILED_STATUSES)]
            count = promoted_count(len(below), PROMOTE)
            best = sorted(below, key=lambda r: (-r["fitness"], r["slot"]))[:count]
            assert slots == sorted(r["slot"] for r in best), (generation, rung)
            by_slot = {r["slot"]: r for r in below}
            assert all(r["formulas"] == by_slot[r["slot"]]["formulas"] for r in here)
            assert all(r["signature"] == by_slot[r["slot"]]["signature"] for r in here)
            widest = max(widest, len(here))
    assert widest >= 2  # the run promoted more than one child somewhere: the rule was exercised


def test_the_hall_of_fame_holds_whole_proxy_scores_only(reference):
    records = _records(reference)
    whole = {_key(r["formulas"]): r for r in records if r["fidelity"] == 1.0}
    rows = _json(reference / "hall_of_fame.json")["hall_of_fame"]
    assert len(rows) == min(halving().hall_of_fame_size, len(whole))
    for row in rows:
        record = whole[_key(row["formulas"])]
        assert row["fitness"] == record["fitness"] and row["evaluation"] == record["evaluation"]
    assert any(r["fidelity"] < 1 and _key(r["formulas"]) not in whole for r in records)  # some never made it
    final = _json(reference / "final.json")
    (top,) = [row for row in final["rows"] if not row["baseline"]]
    assert top["formulas"] == rows[0]["formulas"] and top["proxy_fitness"] == rows[0]["fitness"]


def test_members_carry_the_fidelity_of_their_score(reference):
    records = _records(reference)
    state = _json(reference / "checkpoint.json")["state"]
    assert any(m["reused"] for m in state["population"]) and any(m["fidelity"] < 1 for m in state["population"])
    for member in state["population"]:
        assert member["fidelity"] in FIDELITIES
        if member["reused"]:  # the score of the equivalent loss, at the furthest rung it reached by then
            same = [r for r in records if json.dumps(r["signature"]) == json.dumps(member["signature"])
                    and r["generation"] <= member["generation"]]
            assert (member["fitness"], member["fidelity"]) == (same[-1]["fitness"], same[-1]["fidelity"])
        else:  # scored by its own trainings: the last of them
            record = records[member["id"] - 1]
            assert record["formulas"] == member["formulas"] and record["fitness"] == member["fitness"]
            assert member["fidelity"] == (FIDELITIES[0] if record["status"] in FAILED_STATUSES
                                          else record["fidelity"])
            assert not any(r["formulas"] == member["formulas"] and r["evaluation"] > member["id"] for r in records)


def test_a_twin_takes_its_siblings_score_at_the_rung_the_sibling_reached(tmp_path, monkeypatch):
    search = _serial_search(halving(p_copy=1.0), tmp_path)  # every aging child is a copy of its parent
    search.recorder.run.prepare()
    ce = search.start_individual()
    trainings = []
    real = jobs.evaluate
    monkeypatch.setattr(jobs, "evaluate", lambda job: trainings.append(job.fidelity) or real(job))
    first, given_twin, copy = search.make_children([("given", [ce]), ("given", [ce]), ("aging", [ce])])
    assert trainings == FIDELITIES  # one loss, trained once at each rung
    records = search.recorder.read_evaluations()
    assert [(r["slot"], r["fidelity"]) for r in records] == [(0, f) for f in FIDELITIES]
    assert not first.reused and given_twin.reused and copy.reused
    for child in (first, given_twin, copy):
        assert (child.fitness.values[0], child.fidelity) == (records[-1]["fitness"], 1.0)
    assert first.id == records[-1]["evaluation"] and search.reused == 2
    assert [m.id for m in search.hall_of_fame] == [first.id]
    assert search.spent == pytest.approx(sum(FIDELITIES)) and search.rung_counts == [1, 1, 1]


def test_the_budget_counts_a_training_at_fidelity_f_as_f(reference):
    records = _records(reference)
    state = _json(reference / "checkpoint.json")["state"]
    spent = sum(r["fidelity"] for r in records)
    budget = halving().max_evaluations
    assert state["spent"] == pytest.approx(spent) and spent <= budget + 1e-9
    assert state["evaluations"] == len(records) > budget  # more trainings than the budget's whole ones
    assert state["rung_counts"] == [sum(r["fidelity"] == f for r in records) for f in FIDELITIES]
    # It stopped because one more child could not go through every rung.
    assert budget - spent < generation_cost(1, FIDELITIES, PROMOTE)
    assert _json(reference / "final.json")["evaluations"] == len(records)
    rows = _logbook(reference)
    columns = [f"trained_at_{f:g}" for f in FIDELITIES]
    assert set(columns + ["spent"]) <= set(rows[0])
    assert len(rows) == len({r["generation"] for r in records})
    for gen, row in enumerate(rows):
        so_far = [r for r in records if r["generation"] <= gen]
        assert [int(row[c]) for c in columns] == [sum(r["fidelity"] == f for r in so_far) for f in FIDELITIES]
        assert float(row["spent"]) == pytest.approx(sum(r["fidelity"] for r in so_far), abs=1e-6)
        assert int(row["evaluations"]) == len(so_far)


def test_successive_halving_affords_the_children_whose_rungs_fit(tmp_path):
    search = _serial_search(halving(), tmp_path)
    per_child = generation_cost(1, FIDELITIES, PROMOTE)
    for spent in (0.0, 1.0, 1.75, 2.0, 3.5, 5.0, 6.0, 6.25, 6.5, 7.0, 8.0):
        search.spent = spent
        left = 8 - spent
        fits = max(k for k in range(5) if generation_cost(k, FIDELITIES, PROMOTE) <= left + 1e-9)
        assert search.affordable(4) == fits, spent
        assert search.slots() == max(1, fits)
        assert search.budget_left() == (left + 1e-9 >= per_child), spent
    # Sums of thirds carry rounding: a budget of exactly 9 children through 1/9, 1/3, 1 affords them.
    thirds = _serial_search(halving(fidelities=[1 / 9, 1 / 3, 1.0], promote=1 / 3, max_evaluations=3,
                                    offspring_per_generation=9), tmp_path)
    assert thirds.affordable(9) == 9
    thirds.spent = 1 / 9 * 9 + 1 / 3 * 3 + 1.0
    assert not thirds.budget_left()


# -- one fidelity is the plain search -------------------------------------------------------------------
@pytest.mark.parametrize("budget, offspring", [(6, 3), (10, 4), (3, 20)])
def test_one_fidelity_affords_what_the_plain_search_did(tmp_path, budget, offspring):
    config = SearchConfig(**{**TINY, "max_evaluations": budget, "offspring_per_generation": offspring})
    search = _serial_search(config, tmp_path)
    assert not search.multi_fidelity
    for done in range(budget + 1):
        search.evaluations, search.spent = done, float(done)
        assert search.slots() == max(1, min(offspring, budget - done))
        assert search.affordable(offspring) == min(offspring, budget - done)
        assert search.budget_left() == (done < budget)


def test_one_fidelity_is_the_plain_search(tmp_path):
    plain = tmp_path / "plain"
    run_search(SearchConfig(**{**TINY, "max_evaluations": 6}), str(plain), progress=False)
    one = tmp_path / "one"
    # promote means nothing with one rung; an integer 1 is the whole proxy as 1.0 is.
    run_search(SearchConfig(**{**TINY, "max_evaluations": 6, "fidelities": [1], "promote": 0.5}), str(one),
               progress=False)
    records = _records(plain)
    assert len(records) == 6 and all(r["fidelity"] == 1.0 for r in records)
    assert _without_seconds(_records(one)) == _without_seconds(records)
    assert _json(one / "hall_of_fame.json") == _json(plain / "hall_of_fame.json")
    assert _json(one / "final.json")["rows"] == _json(plain / "final.json")["rows"]
    for run in (plain, one):
        columns = set(_logbook(run)[0])
        assert "spent" not in columns and not any(c.startswith("trained_at_") for c in columns)
        state = _json(run / "checkpoint.json")["state"]
        assert state["spent"] == state["evaluations"] == 6 and state["rung_counts"] == [6]
        assert all(m["fidelity"] == 1.0 for m in state["population"])


# -- workers ---------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_two_workers_give_the_serial_result(reference, tmp_path):
    run_search(halving(), str(tmp_path / "mp"), workers=2, map_kind="multiprocessing", progress=False)
    assert _without_seconds(_records(tmp_path / "mp")) == _without_seconds(_records(reference))
    assert _json(tmp_path / "mp" / "hall_of_fame.json") == _json(reference / "hall_of_fame.json")
    assert _json(tmp_path / "mp" / "final.json")["rows"] == _json(reference / "final.json")["rows"]


# -- resume ----------------------------------------------------------------------------------------------
def _interrupted(monkeypatch, path, lines):
    """Run (or resume) the search at ``path`` and interrupt it once ``evaluations.jsonl`` holds ``lines``
    lines, right after the last of them was written."""
    real = Recorder.evaluation

    def evaluation(self, record):
        real(self, record)
        if len(self.evaluation_lines()) >= lines:
            raise KeyboardInterrupt

    resume = (path / "checkpoint.json").exists()
    with monkeypatch.context() as m:
        m.setattr(Recorder, "evaluation", evaluation)
        with pytest.raises(KeyboardInterrupt):
            run_search(halving(), str(path), resume=resume, progress=False)
    assert not (path / "final.json").exists()
    return (path / "evaluations.jsonl").read_text().splitlines()


def _assert_same_run(run, reference):
    assert _without_seconds(_records(run)) == _without_seconds(_records(reference))
    assert _json(run / "hall_of_fame.json") == _json(reference / "hall_of_fame.json")
    final, expected = _json(run / "final.json"), _json(reference / "final.json")
    assert final["rows"] == expected["rows"] and final["evaluations"] == expected["evaluations"]
    state, ref = _json(run / "checkpoint.json")["state"], _json(reference / "checkpoint.json")["state"]
    for key in ("generation", "evaluations", "spent", "rung_counts", "evaluation_lines", "children", "reused",
                "random_state", "population", "hall_of_fame", "cache", "cache_fidelity"):
        assert state[key] == ref[key], key


def _mid_rung_zero(records):
    """Lines written when interrupted inside generation 0's first rung."""
    assert [(_rung(r), r["generation"]) for r in records[:3]] == [(0, 0)] * 3
    return 2


def _mid_upper_rung(records):
    """Lines written when interrupted between two trainings of one rung above the first."""
    return next(i for i in range(1, len(records)) if _rung(records[i]) == _rung(records[i - 1]) > 0
                and records[i]["generation"] == records[i - 1]["generation"])


def _between_rungs_later(records):
    """Lines written when interrupted between two rungs of a generation after the first checkpoint."""
    return next(i for i in range(1, len(records)) if records[i - 1]["generation"] >= 1
                and records[i]["generation"] == records[i - 1]["generation"]
                and _rung(records[i]) > _rung(records[i - 1]))


@pytest.mark.parametrize("where", [_mid_rung_zero, _mid_upper_rung, _between_rungs_later])
def test_a_resume_inside_a_generation_ends_as_the_run_that_ran_through(reference, tmp_path, monkeypatch, where):
    lines = where(_records(reference))
    run = tmp_path / "run"
    written = _interrupted(monkeypatch, run, lines)
    assert len(written) == lines
    run_search(halving(), str(run), resume=True, progress=False)
    _assert_same_run(run, reference)
    assert (run / "evaluations.jsonl").read_text().splitlines()[:lines] == written  # reused, not retrained
    assert not (run / "evaluations.set_aside.jsonl").exists()


def test_a_kill_that_cut_a_line_in_a_rung_short_and_a_second_interruption_resume_exactly(reference, tmp_path,
                                                                                          monkeypatch):
    lines = _mid_upper_rung(_records(reference))
    run = tmp_path / "run"
    written = _interrupted(monkeypatch, run, lines)
    cut = written[-1][: len(written[-1]) // 2]  # killed while writing the first training of a rung
    (run / "evaluations.jsonl").write_text("\n".join(written[:-1]) + "\n" + cut)
    again = _interrupted(monkeypatch, run, lines + 1)  # the cut one trained again, then one more
    assert again[:lines - 1] == written[:-1]
    run_search(halving(), str(run), resume=True, progress=False)
    _assert_same_run(run, reference)
    assert (run / "evaluations.jsonl").read_text().splitlines()[:lines + 1] == again
    (aside,) = [json.loads(line) for line in (run / "evaluations.set_aside.jsonl").read_text().splitlines()]
    assert aside["line"] == lines and aside["text"] == cut and "cut short" in aside["reason"]


# -- the command line ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def cli(load_script):
    return load_script("search_classification")


def _main(cli, argv):
    return script.main(cli.__doc__, cli.DEFAULTS, "out/unused", cli.TASK_FLAGS, argv)


@pytest.mark.parametrize("flags, message", [
    (["--fidelities", "0.5,0.25,1"], "fidelities must ascend strictly, e.g. 0.25,0.5,1; got 0.5,0.25,1"),
    (["--fidelities", "0.5"], "fidelities must be fractions in (0, 1] ending at 1"),
    (["--fidelities", "0,1"], "fidelities must be fractions in (0, 1] ending at 1"),
    (["--fidelities", "1/9,1/3,1", "--promote", "0"], "promote is the fraction of a rung"),
    (["--promote", "1"], "promote is the fraction of a rung"),
])
def test_bad_successive_halving_flags_are_one_line_before_anything_is_written(cli, capsys, tmp_path, flags,
                                                                              message):
    assert message in assert_user_error(_main(cli, ["--out", str(tmp_path / "r")] + flags), capsys.readouterr().err)
    assert not (tmp_path / "r").exists()


def test_a_promote_that_is_no_number_is_a_usage_error(cli, capsys, tmp_path):
    code = _main(cli, ["--out", str(tmp_path / "r"), "--promote", "1/0"])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    (line,) = [line for line in err.splitlines() if "error" in line]  # argparse's usage, then its one error
    assert line.endswith("argument --promote: expected a number such as 0.25 or 1/3, got '1/0'")
    assert not (tmp_path / "r").exists()


def test_the_flags_set_the_configuration(cli):
    args = script.build_parser("", cli.TASK_FLAGS).parse_args(["--fidelities", "1/9,1/3,1", "--promote", "1/2"])
    config, _, _ = script.config_from_args(args, cli.TASK_FLAGS, cli.DEFAULTS, "out/x")
    assert config.fidelities == [1 / 9, 1 / 3, 1.0] and config.promote == 0.5
    config.check()
    args = script.build_parser("", cli.TASK_FLAGS).parse_args(["--fidelities", "1"])
    config, _, _ = script.config_from_args(args, cli.TASK_FLAGS, cli.DEFAULTS, "out/x")
    assert config.fidelities == [1.0]  # the plain search, whatever the script's default
    args = script.build_parser("", cli.TASK_FLAGS).parse_args([])
    config, _, _ = script.config_from_args(args, cli.TASK_FLAGS, cli.DEFAULTS, "out/x")
    assert config.fidelities == cli.DEFAULTS.fidelities and config.promote == cli.DEFAULTS.promote

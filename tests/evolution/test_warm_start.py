"""Warm start (DiscoPOP, Lu et al., NeurIPS 2024): the run's baselines join the initial population.

A baseline that is itself a genome of the run joins with its proxy fitness (no training, no budget,
in the hall of fame like any loss, its score reused by an equivalent child); one that only gives the searched
branches their formulas is trained as a given child of generation 0; one that is no formula (a
detector's own loss code) is left out.
"""
import json

import pytest

from gp_loss.evolution import jobs, script
from gp_loss.evolution.config import SearchConfig
from gp_loss.evolution.individual import freeze, individual_from_formulas, individual_to_dict
from gp_loss.evolution.jobs import SignatureJob
from gp_loss.evolution.recorder import Recorder
from gp_loss.evolution.run_search import run_search
from gp_loss.evolution.search import Search
from gp_loss.runtime.parallel import open_backend
from gp_loss.runtime.run_dir import RunDir
from gp_loss.tasks import task_info

from tests.evolution.run_records import read_json as _json, records as _records, without_seconds as _without_seconds

CE = "neg(dot(y, log(softmax(x))))"
BASELINES = ["ce", "focal", "label_smoothing_ce", "gce"]
# Four baselines in a population of 6: generation 0 trains 2 random children; 3 more generations follow.
TINY = dict(task="classification", population=6, offspring_per_generation=4, max_evaluations=6, final_top=1,
            final_seeds=1, task_options={"proxy_epochs": 1, "final_epochs": 1}, baselines=BASELINES)
# Trained as a given member in the tests that hand the schemes one: no baseline, and unlike any.
GIVEN = "sub(1, dot(y, softmax(x)))"


def warm(**changes) -> SearchConfig:
    return SearchConfig(**{**TINY, "warm_start": "baselines", **changes})


def _texts(names):
    info = task_info("classification")
    texts = info.baselines_for(info.make_options(TINY["task_options"]))
    return [texts[name] for name in names]


def _search(monkeypatch, config, path, warm_start=None):
    """Run the search of ``config`` into ``path``; return generation 0's population as it ended (dicts).

    ``warm_start``: stands in for :meth:`Search.warm_start` (given the real one and the search).
    """
    seen = {}
    real_end, real_warm = Search.end_generation, Search.warm_start

    def end_generation(self, **row):
        if self.generation == 0:
            # As the checkpoint holds it (JSON): signatures as lists.
            seen["population"] = json.loads(json.dumps([individual_to_dict(self.layout, i)
                                                        for i in self.population]))
        real_end(self, **row)

    with monkeypatch.context() as m:
        m.setattr(Search, "end_generation", end_generation)
        if warm_start is not None:
            m.setattr(Search, "warm_start", lambda self: warm_start(real_warm, self))
        run_search(config, str(path), progress=False)
    return seen["population"]


@pytest.fixture(scope="module")
def zero_run(tmp_path_factory):
    path = tmp_path_factory.mktemp("warm") / "zero"
    with pytest.MonkeyPatch.context() as m:
        return path, _search(m, warm(), path)


# -- the zero scheme -------------------------------------------------------------------------------------
def test_the_baselines_join_generation_zero_with_their_proxy_fitness(zero_run):
    path, population = zero_run
    fitness = _json(path / "baselines.json")
    known = population[:len(BASELINES)]
    assert [m["formulas"] for m in known] == _texts(BASELINES)
    assert [m["fitness"] for m in known] == [fitness[name] for name in BASELINES]
    assert all(m["reused"] and m["id"] is None and m["generation"] == 0 and m["fidelity"] == 1.0 for m in known)
    # The rest of the population: random children, as many as the population has room for.
    children = population[len(BASELINES):]
    assert len(children) == TINY["population"] - len(BASELINES)
    trained = [r for r in _records(path) if r["generation"] == 0]
    assert [r["evaluation"] for r in trained] == [m["id"] for m in children if not m["reused"]]
    assert [r["formulas"] for r in trained] == [m["formulas"] for m in children if not m["reused"]]
    row = (path / "logbook.csv").read_text().splitlines()
    header, first = row[0].split(","), dict(zip(row[0].split(","), row[1].split(",")))
    assert "population" in header and int(first["population"]) == TINY["population"]
    assert int(first["children"]) == len(children)
    # Aging keeps them: the run's last population still starts with the baselines.
    final = _json(path / "checkpoint.json")["state"]["population"]
    assert final[:len(BASELINES)] == known


def test_no_baseline_is_trained_or_counted_and_each_competes_in_the_hall_of_fame(zero_run):
    path, population = zero_run
    texts = _texts(BASELINES)
    signatures = [json.dumps(m["signature"]) for m in population[:len(BASELINES)]]
    records = _records(path)
    assert len(records) == TINY["max_evaluations"]  # the budget went to found losses only
    assert not [r for r in records if r["formulas"] in texts or json.dumps(r["signature"]) in signatures]
    hall = _json(path / "hall_of_fame.json")["hall_of_fame"]
    fitness = _json(path / "baselines.json")
    kept = [row for row in hall if row["formulas"] in texts]
    # every baseline is in the hall of fame unless found losses outscore it there
    for name, text in zip(BASELINES, texts):
        if fitness[name] > hall[-1]["fitness"]:
            assert any(row["formulas"] == text and row["fitness"] == fitness[name] for row in kept)
    final = _json(path / "final.json")
    found = [row for row in final["rows"] if not row["baseline"]]
    assert [row["name"] for row in final["rows"] if row["baseline"]] == BASELINES
    for row in found:  # a baseline the search kept says which
        assert row.get("same_as") == (BASELINES[texts.index(row["formulas"])] if row["formulas"] in texts else None)


def test_a_found_loss_that_is_a_baseline_shares_its_final_trainings(tmp_path, monkeypatch, capsys):
    trained = []
    real = jobs.evaluate

    def evaluate(job):
        trained.append((job.baseline, json.dumps(job.formulas, sort_keys=True), job.seed))
        return real(job)

    # A final top as large as the hall of fame holds every baseline it kept.
    config = warm(final_top=10, final_seeds=2, selection_seeds=0)
    with monkeypatch.context() as m:
        m.setattr(jobs, "evaluate", evaluate)
        _search(m, config, tmp_path / "run")
    out = capsys.readouterr().out
    rows = _json(tmp_path / "run" / "final.json")["rows"]
    kept = [row for row in rows if row.get("same_as")]
    assert kept, "the hall of fame kept no baseline: the test needs one"
    by_name = {row["name"]: row for row in rows}
    for row in kept:  # the baseline's own scores, not a second training of the same loss
        assert row["scores"] == by_name[row["same_as"]]["scores"]
        assert f"{row['name']} is {row['same_as']}" in out
    finals = [t for t in trained if t[2] in by_name[BASELINES[0]]["seeds"]]
    assert len(set(finals)) == len(finals)  # no loss trained twice on a seed
    assert len(finals) == (len(rows) - len(kept)) * 2


def test_without_warm_start_no_baseline_is_in_the_population(tmp_path, monkeypatch, capsys):
    population = _search(monkeypatch, warm(warm_start="none", max_evaluations=6), tmp_path / "run")
    out = capsys.readouterr().out
    assert "warm start" not in out
    texts = _texts(BASELINES)
    assert len(population) == TINY["population"]  # all random children
    assert not [m for m in population if m["formulas"] in texts]
    assert len([r for r in _records(tmp_path / "run") if r["generation"] == 0]) + sum(
        m["reused"] for m in population) == TINY["population"]


def test_a_resume_inside_generation_zero_ends_as_the_run_that_ran_through(zero_run, tmp_path, monkeypatch):
    reference, _ = zero_run
    run = tmp_path / "run"
    real = Recorder.evaluation

    def evaluation(self, record):
        real(self, record)
        raise KeyboardInterrupt  # after generation 0's first training

    with monkeypatch.context() as m:
        m.setattr(Recorder, "evaluation", evaluation)
        with pytest.raises(KeyboardInterrupt):
            run_search(warm(), str(run), progress=False)
    first = (run / "evaluations.jsonl").read_text().splitlines()
    assert len(first) == 1
    run_search(warm(), str(run), resume=True, progress=False)
    assert (run / "evaluations.jsonl").read_text().splitlines()[:1] == first
    assert _without_seconds(_records(run)) == _without_seconds(_records(reference))
    assert _json(run / "hall_of_fame.json") == _json(reference / "hall_of_fame.json")
    assert _json(run / "final.json")["rows"] == _json(reference / "final.json")["rows"]
    state, ref = _json(run / "checkpoint.json")["state"], _json(reference / "checkpoint.json")["state"]
    for key in ("population", "cache", "random_state", "evaluations", "reused", "baseline_fitness"):
        assert state[key] == ref[key], key


@pytest.mark.parametrize("fidelities", [[1.0], [0.5, 1.0]])
def test_a_child_equivalent_to_a_baseline_reuses_its_score(tmp_path, monkeypatch, fidelities):
    config = warm(p_copy=1.0, fidelities=fidelities)  # every aging child is a copy of its parent
    search = Search(config, open_backend("serial"), Recorder(RunDir(tmp_path), config, progress=False))
    search.recorder.run.prepare()
    search.baseline_fitness = {name: 0.1 * (i + 1) for i, name in enumerate(BASELINES)}
    known, given = search.warm_start()
    assert given == [] and [str(m[0]) for m in known] == [t["cls"] for t in _texts(BASELINES)]
    trainings = []
    real = jobs.evaluate
    monkeypatch.setattr(jobs, "evaluate", lambda job: trainings.append(job) or real(job))
    (child,) = search.make_children([("aging", [known[1]])])
    assert trainings == [] and search.evaluations == 0 and search.spent == 0
    assert child.reused and child.fitness.values == (0.2,) and child.fidelity == 1.0
    assert str(child[0]) == _texts(["focal"])[0]["cls"]
    assert search.recorder.read_evaluations() == [] and len(search.hall_of_fame) == len(BASELINES)


# -- given members, and the cse scheme ------------------------------------------------------------------
def _with_a_given_member(real_warm_start, search):
    """The real warm start, and a genome that is no baseline to train as a given member."""
    known, given = real_warm_start(search)
    assert given == []  # a classification baseline is a whole genome: never given
    formulas = {"cls": GIVEN}
    ind = individual_from_formulas(search.layout, formulas)
    ind.generation = search.generation
    (signature,) = search.toolbox.map(jobs.signature_of, [SignatureJob(search.config_dict, formulas)])
    ind.signature = freeze(signature)
    return known, [ind]


@pytest.mark.parametrize("scheme", ["zero", "cse"])
def test_given_members_are_generation_zeros_first_trained_children(tmp_path, monkeypatch, scheme):
    # cse: "ce" is the start, so not a warm-start member; zero: all four are. Either way two children more.
    known = BASELINES[1:] if scheme == "cse" else BASELINES
    population_size = len(known) + 3
    config = warm(scheme=scheme, population=population_size, max_evaluations=3)
    population = _search(monkeypatch, config, tmp_path / "run", warm_start=_with_a_given_member)
    records = _records(tmp_path / "run")
    assert [m["formulas"] for m in population[:len(known)]] == _texts(known)
    assert all(m["reused"] for m in population[:len(known)])
    trained = [r["formulas"]["cls"] for r in records if r["generation"] == 0]
    if scheme == "cse":  # the start, then the given member, then mutants of the start
        assert trained[:2] == [CE, GIVEN]
        assert [m["formulas"]["cls"] for m in population[len(known):len(known) + 2]] == [CE, GIVEN]
    else:  # the given member, then random genomes
        assert trained[0] == GIVEN
        assert population[len(known)]["formulas"]["cls"] == GIVEN
    assert len(population) == population_size
    assert [r["slot"] for r in records if r["generation"] == 0][:2] == [0, 1]


def test_the_cse_scheme_starts_from_its_start_beside_the_baselines(tmp_path, monkeypatch, capsys):
    config = warm(scheme="cse", population=5, max_evaluations=2, baselines=["ce", "focal", "gce"])
    population = _search(monkeypatch, config, tmp_path / "run")
    out = capsys.readouterr().out
    assert "warm start: focal (proxy fitness known), gce (proxy fitness known)" in out
    fitness = _json(tmp_path / "run" / "baselines.json")
    assert [m["formulas"] for m in population[:2]] == _texts(["focal", "gce"])
    assert [m["fitness"] for m in population[:2]] == [fitness["focal"], fitness["gce"]]
    assert all(m["reused"] and m["id"] is None for m in population[:2])
    records = _records(tmp_path / "run")
    # The start (cross-entropy, also the "ce" baseline) is trained as the cse scheme always does, and
    # scores what the baseline scored: proxies share the seed, so a known score is what training gives.
    assert records[0]["slot"] == 0 and records[0]["formulas"] == {"cls": CE}
    assert records[0]["fitness"] == fitness["ce"]
    assert population[2]["formulas"] == {"cls": CE} and population[2]["id"] == 1
    assert len(population) == 2 + 2  # the known, the start and one mutant (the budget of 2)
    assert not [r for r in records if r["formulas"] in _texts(["focal", "gce"])]


# -- a layout whose baselines are not all formulas ------------------------------------------------------
def test_a_detector_baseline_that_is_no_formula_is_left_out(tmp_path, capsys):
    from gp_loss.tasks.detection.task import baseline_loss

    start = baseline_loss("fcos", "fl_giou").genome
    # Searching only the classification branch: a baseline gives it its formula, the regression
    # branch keeps the start's.
    config = SearchConfig(task="detection", scheme="zero", branches={b.name: b.kind.name for b in start},
                          start=start.formulas(), search=["cls"], warm_start="baselines",
                          baselines=["torchvision", "fl_giou", "cse_autoloss_b", "fl_l1"])
    search = Search(config, open_backend("serial"), Recorder(RunDir(tmp_path), config, progress=False))
    search.baseline_fitness = {"torchvision": 0.3, "fl_giou": 0.2, "cse_autoloss_b": 0.25, "fl_l1": 0.1}
    texts = search.baseline_texts()
    known, given = search.warm_start()
    assert "warm start: fl_giou (proxy fitness known), cse_autoloss_b (trained)" in capsys.readouterr().out
    # fl_giou is its own genome: known. fl_l1 on the searched branch is fl_giou's genome again: left out.
    (member,) = known
    assert [str(t) for t in member] == [texts["fl_giou"]["cls"], texts["fl_giou"]["reg"]]
    assert member.fitness.values == (0.2,) and member.reused and member.signature is not None
    assert member.signature in search.cache
    # cse_autoloss_b gives the classification branch only: a new genome, trained as a given child.
    (child,) = given
    assert [str(t) for t in child] == [texts["cse_autoloss_b"]["cls"], start.formulas()["reg"]]
    assert not child.fitness.valid and not child.reused and child.signature is not None


# -- the command line ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def cli(load_script):
    return load_script("search_classification")


def test_an_unknown_warm_start_is_one_line_before_anything_is_written(cli, capsys, tmp_path):
    code = script.main(cli.__doc__, cli.DEFAULTS, "out/unused", cli.TASK_FLAGS,
                       ["--out", str(tmp_path / "r"), "--warm-start", "foo"])
    err = capsys.readouterr().err
    assert code == 2
    assert err.strip().splitlines() == ["error: warm_start must be one of none, baselines, got 'foo'"]
    assert not (tmp_path / "r").exists()


def test_the_flag_sets_the_configuration(cli):
    for value in ("none", "baselines"):
        args = script.build_parser("", cli.TASK_FLAGS).parse_args(["--warm-start", value])
        config, _, _ = script.config_from_args(args, cli.TASK_FLAGS, cli.DEFAULTS, "out/x")
        assert config.warm_start == value
        config.check()

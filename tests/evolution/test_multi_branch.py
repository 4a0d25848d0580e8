"""Genomes of several searched branches: children bred one branch at a time, and branches searched in turn."""
import json
import random
import shutil

import pytest

from gp_loss.errors import GpLossError
from gp_loss.evolution import jobs, variation, worker
from gp_loss.evolution.config import SearchConfig, config_diff, with_added_fields
from gp_loss.evolution.crossover import limited_crossover
from gp_loss.evolution.individual import formulas_of, individual_from_formulas
from gp_loss.evolution.jobs import BreedJob
from gp_loss.evolution.mutation import make_offspring, mutate
from gp_loss.evolution.recorder import Recorder
from gp_loss.evolution.run_search import run_search
from gp_loss.filters.funnel import Funnel
from gp_loss.filters.pipeline import FilterPipeline, default_stages
from gp_loss.language import parse_formula
from primitives import get_kind

from tests.evolution.run_records import logbook as _logbook, records as _records, without_seconds as _without_seconds

CE = "neg(dot(y, log(softmax(x))))"
CE_W = "neg(dot(mul(add(1, sin(w)), y), log(softmax(x))))"
TWO = {"a": "cls", "b": "cls"}
FAST = {"proxy_epochs": 1, "final_epochs": 1}


def _config(**changes):
    base = dict(branches=TWO, start={}, baselines=[], task_options=FAST)
    return SearchConfig(**{**base, **changes})


def _job(config, mode, seed, parents=(), branches=None):
    return BreedJob(config=config.to_dict(), seed=seed, mode=mode, parents=list(parents), branches=branches)


def _counts(funnel):
    """The funnel without its timings."""
    return {k: v if k != "stages" else {n: {m: x for m, x in s.items() if m != "seconds"} for n, s in v.items()}
            for k, v in funnel.to_dict().items() if k != "seconds"}


def _passes(formula):
    kind = get_kind("cls")
    return FilterPipeline(default_stages(seed=0)).check(kind, parse_formula(kind, formula)).passed


# -- (a) per-branch breeding --------------------------------------------------------------

def test_random_genome_of_two_branches_is_bred_one_branch_at_a_time():
    config = _config()
    result = jobs.breed(_job(config, "init", 2))
    assert result.formulas is not None and set(result.formulas) == {"a", "b"}
    assert result.formulas["a"] != result.formulas["b"]
    assert all(_passes(f) for f in result.formulas.values())
    # each try checks one branch; each branch passed once; random trees rarely pass, hence the wide bound
    assert result.funnel.candidates == result.tries and result.funnel.passed == 2
    assert 2 < result.tries < 20_000
    assert len(result.signature) == 2


def test_tries_are_counted_across_branches():
    full = jobs.breed(_job(_config(), "init", 2))
    enough = jobs.breed(_job(_config(max_breed_tries=full.tries), "init", 2))
    assert (enough.formulas, enough.tries) == (full.formulas, full.tries)
    short = jobs.breed(_job(_config(max_breed_tries=full.tries - 1), "init", 2))
    assert short.formulas is None and short.signature is None
    assert short.tries == full.tries - 1
    assert short.funnel.passed == 1  # branch a passed; branch b ran out of tries


def test_batch_size_changes_no_child_of_two_branches(monkeypatch):
    config = _config(p_copy=0.0, p_reinit=1.0)  # aging children are re-initialised

    def bred(batch):
        monkeypatch.setattr(jobs, "RANDOM_BATCH", batch)
        worker._CONTEXTS.clear()
        out = []
        for seed in (1, 2):
            for mode, parents in (("init", []), ("aging", [{"a": CE, "b": CE_W}])):
                r = jobs.breed(_job(config, mode, seed, parents))
                out.append((r.formulas, r.signature, r.how, r.tries, _counts(r.funnel)))
        return out

    one, many = bred(1), bred(32)
    assert many == one
    assert all(r[0] is not None for r in one) and {r[2] for r in one} == {"init", "reinit"}


def test_aging_mutation_of_two_branches():
    config = _config(p_copy=0.0, p_reinit=0.0)
    parent = {"a": CE, "b": CE_W}
    changed = set()
    for seed in range(4):
        r = jobs.breed(_job(config, "aging", seed, [parent]))
        assert r.how == "mutation" and r.formulas is not None
        assert r.funnel.candidates == r.tries and r.funnel.passed == 2
        assert all(_passes(f) for f in r.formulas.values())
        changed |= {name for name in parent if r.formulas[name] != parent[name]}
    assert changed == {"a", "b"}


@pytest.mark.parametrize("mode, parents", [
    ("aging", [{"a": CE, "b": CE_W}]),
    ("pair", [{"a": CE, "b": CE_W}, {"a": CE_W, "b": CE}]),
])
def test_a_job_varies_only_its_branches(mode, parents):
    config = _config(scheme="cse", start={"a": CE, "b": CE_W}, p_copy=0.0)
    varied = set()
    for seed in range(5):
        r = jobs.breed(_job(config, mode, seed, parents, branches=["b"]))
        assert r.formulas["a"] == parents[0]["a"]
        assert r.funnel.candidates == r.tries and r.funnel.passed == 1  # only branch b is checked
        varied.add(r.formulas["b"])
    assert varied - {parents[0]["b"]}


def test_zero_search_of_two_branches_from_random_genomes_trains_children(tmp_path):
    config = _config(population=2, max_evaluations=4, offspring_per_generation=2, final_top=1, final_seeds=1)
    run_search(config, str(tmp_path / "r"), progress=False)
    records = _records(tmp_path / "r")
    state = json.loads((tmp_path / "r" / "checkpoint.json").read_text())["state"]
    assert len(records) == state["evaluations"] == 4 and state["dropped"] == 0
    for r in records:
        assert set(r["formulas"]) == {"a", "b"} and all(_passes(f) for f in r["formulas"].values())
    funnel = state["funnel"]
    # every bred child passed both branches; each try checked one branch
    assert funnel["passed"] % 2 == 0 and funnel["passed"] >= 2 * len(records)
    assert funnel["candidates"] > funnel["passed"]


# -- (b) one searched branch: the children of the loop before per-branch breeding ------------

def _old_vary(ctx, mode, how, parents, rng):
    """variation.vary before per-branch breeding: one attempt redraws every searched branch."""
    cfg, layout, searched = ctx.config, ctx.layout, ctx.config.searched
    if how == variation.COPY:
        return list(parents[0])
    if how == variation.INIT:
        return [variation.random_tree(ctx, kind, rng) if name in searched
                else ctx.start[name].tree for name, kind in layout.items()]
    if mode == variation.AGING:
        child = []
        for (name, kind), tree in zip(layout.items(), parents[0]):
            if name not in searched:
                child.append(tree)
            elif how == variation.REINIT:
                child.append(variation.random_tree(ctx, kind, rng))
            else:
                child.append(make_offspring(get_kind(kind), tree, rng, ctx.offspring))
        return child
    child = list(parents[0])
    i = list(layout).index(rng.choice(cfg.searched))
    kind = get_kind(layout[list(layout)[i]])
    tree = child[i]
    crossed = False
    if how == variation.CROSSOVER:
        a, _ = limited_crossover(tree, parents[1][i], rng, cfg.max_height)
        crossed = str(a) != str(tree)
        tree = a
    if not crossed or rng.random() < cfg.p_mutation:
        mutated = mutate(kind, tree, rng)
        if mutated.height <= cfg.max_height and len(mutated) <= cfg.max_size:
            tree = mutated
    child[i] = tree
    return child


def _old_breed(job):
    """jobs.breed before per-branch breeding: attempts repeated until every searched branch passes at once."""
    ctx = worker.context_for(job.config)
    cfg, layout = ctx.config, ctx.layout
    rng = random.Random(job.seed)
    parents = [individual_from_formulas(layout, p) for p in job.parents]
    stage_names = [s.name for s in ctx.pipeline.stages]
    funnel = ctx.pipeline.funnel = Funnel(stage_names)
    how = variation.draw_variation(job.mode, cfg, rng)
    formulas, signature = None, None
    branches = [] if how == variation.COPY else [(i, n) for i, n in enumerate(layout) if n in cfg.searched]
    batch = jobs.RANDOM_BATCH if how in (variation.INIT, variation.REINIT) else 1
    tries = 0
    while tries < cfg.max_breed_tries and formulas is None:
        attempts = [_old_vary(ctx, job.mode, how, parents, rng)
                    for _ in range(min(batch, cfg.max_breed_tries - tries))]
        firsts = (ctx.pipeline.check_many(get_kind(layout[branches[0][1]]), [a[branches[0][0]] for a in attempts])
                  if branches else [None] * len(attempts))
        for child, first in zip(attempts, firsts):
            tries += 1
            candidates = {}
            for n, (i, name) in enumerate(branches):
                verdict = first if n == 0 else ctx.pipeline.check(get_kind(layout[name]), child[i])
                if not verdict.passed:
                    candidates = None
                    break
                candidates[name] = verdict.candidate
            if candidates is not None:
                signature = tuple(ctx.signature(layout[name], tree, candidates.get(name))
                                  for name, tree in zip(layout, child))
                formulas = formulas_of(layout, child)
                break
    ctx.pipeline.funnel = Funnel(stage_names)
    return formulas, signature, how, tries, _counts(funnel)


@pytest.mark.parametrize("config", [
    SearchConfig(task_options=FAST),
    SearchConfig(scheme="cse", task_options=FAST),
    # one searched branch beside a fixed one
    SearchConfig(scheme="cse", branches=TWO, search=["a"], start={"a": CE, "b": CE_W}, baselines=[],
                 task_options=FAST),
], ids=["zero", "cse", "cse-fixed-branch"])
def test_one_searched_branch_breeds_the_children_of_the_old_loop(config):
    searched = config.searched[0]
    fixed = {n: config.start[n] for n in config.branches if n != searched}
    parent = {searched: CE, **fixed}
    other = {searched: CE_W, **fixed}
    aging_seeds = list(range(16)) + [31]  # 31: a copy
    plan = ([("init", s, []) for s in range(2)] + [("aging", s, [parent]) for s in aging_seeds]
            + [("pair", s, [parent, other]) for s in range(8)])

    def bred(breed):
        worker._CONTEXTS.clear()  # fresh memos for each implementation
        return [breed(BreedJob(config=config.to_dict(), seed=s, mode=m, parents=p)) for m, s, p in plan]

    def new(job):
        r = jobs.breed(job)
        return r.formulas, r.signature, r.how, r.tries, _counts(r.funnel)

    old = bred(_old_breed)
    assert bred(new) == old
    assert {r[2] for r in old} == {"init", "copy", "reinit", "mutation", "crossover"}


# -- (c) branches searched in turn -------------------------------------------------------

IN_TURN = dict(scheme="cse", start={"a": CE, "b": CE_W}, search_in_turn=True, population=3,
               max_evaluations=8, offspring_per_generation=2, final_top=1, final_seeds=1)


def test_search_in_turn_is_checked():
    for changes, words in [({"scheme": "zero"}, "needs the cse scheme"),
                           ({"search": ["a"]}, "at least 2"),
                           ({"max_evaluations": 1}, "equal share")]:
        with pytest.raises(GpLossError, match=words) as err:
            _config(**{**IN_TURN, **changes}).check()
        assert "\n" not in str(err.value) and "search_in_turn" in str(err.value)
    assert _config(**IN_TURN).check().search_in_turn


def test_a_run_made_before_search_in_turn_resumes():
    old = SearchConfig().to_dict()
    del old["search_in_turn"]
    assert config_diff(with_added_fields(old), SearchConfig().to_dict()) == []


def test_phases_split_the_budget():
    c = _config(**{**IN_TURN, "max_evaluations": 7})
    assert [c.phase_at(e) for e in range(9)] == [0, 0, 0, 1, 1, 1, 1, 1, 1]
    assert (c.phase_end(0), c.phase_end(1)) == (3, 7)
    three = _config(**{**IN_TURN, "branches": {"a": "cls", "b": "cls", "c": "cls"},
                       "start": {"a": CE, "b": CE_W, "c": CE}, "max_evaluations": 10})
    assert [three.phase_at(e) for e in range(10)] == [0, 0, 0, 1, 1, 1, 2, 2, 2, 2]


@pytest.fixture(scope="module")
def in_turn_run(tmp_path_factory):
    """An uninterrupted search_in_turn run, and the proxy trainings it made."""
    path = tmp_path_factory.mktemp("in_turn") / "run"
    trainings = []
    real = jobs.evaluate
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(jobs, "evaluate", lambda job: trainings.append(job) or real(job))
        run_search(_config(**IN_TURN), str(path), progress=False)
    return path, [t.formulas for t in trainings if not (t.final or t.selection)]


def test_search_in_turn_varies_one_branch_per_phase(in_turn_run):
    path, trainings = in_turn_run
    records, rows = _records(path), _logbook(path)
    phase_of = {int(row["gen"]): row["phase"] for row in rows}
    assert [row["phase"] for row in rows] == sorted(row["phase"] for row in rows)  # a, ..., a, b, ..., b
    assert set(phase_of.values()) == {"a", "b"}
    # phase a ends at exactly half the budget
    last_a = max(g for g, p in phase_of.items() if p == "a")
    assert int(rows[last_a]["evaluations"]) == 4
    phase_a = [r for r in records if phase_of[r["generation"]] == "a"]
    phase_b = [r for r in records if phase_of[r["generation"]] == "b"]
    assert len(phase_a) == len(phase_b) == 4
    assert phase_a[0]["formulas"] == IN_TURN["start"]  # the start genome first
    # phase a varies branch a only; phase b only b, from the best genome of phase a
    assert all(r["formulas"]["b"] == CE_W for r in phase_a)
    assert any(r["formulas"]["a"] != CE for r in phase_a)
    best = max(r["fitness"] for r in phase_a)
    best_a = {r["formulas"]["a"] for r in phase_a if r["fitness"] == best}
    (kept_a,) = {r["formulas"]["a"] for r in phase_b}
    assert kept_a in best_a
    assert any(r["formulas"]["b"] != CE_W for r in phase_b)
    # the re-seeded best is kept with its score, not trained again: one training per evaluation
    trained = sorted(json.dumps(f, sort_keys=True) for f in trainings)  # handed out longest first
    assert trained == sorted(json.dumps(r["formulas"], sort_keys=True) for r in records)
    assert len(set(trained)) == len(trained) == 8
    reseed = rows[last_a + 1]
    assert reseed["phase"] == "b" and int(reseed["population"]) <= IN_TURN["population"]


class _Interrupted(Exception):
    pass


@pytest.mark.parametrize("where", ["at the phase boundary", "in the first generation of phase b"])
def test_search_in_turn_resumes_across_the_phase_boundary(in_turn_run, tmp_path, monkeypatch, where):
    whole, _ = in_turn_run
    run = tmp_path / "run"
    real_generation, real_evaluation = Recorder.generation, Recorder.evaluation

    def generation(self, search):
        real_generation(self, search)
        if where == "at the phase boundary" and search.evaluations == 4:
            raise _Interrupted  # right after the checkpoint that ends phase a

    def evaluation(self, record):
        real_evaluation(self, record)
        if where != "at the phase boundary" and record["evaluation"] == 5:
            raise _Interrupted  # the first training of phase b is recorded, its generation is not

    monkeypatch.setattr(Recorder, "generation", generation)
    monkeypatch.setattr(Recorder, "evaluation", evaluation)
    with pytest.raises(_Interrupted):
        run_search(_config(**IN_TURN), str(run), progress=False)
    state = json.loads((run / "checkpoint.json").read_text())["state"]
    assert state["evaluations"] == 4 and not (run / "final.json").exists()
    monkeypatch.setattr(Recorder, "generation", real_generation)
    monkeypatch.setattr(Recorder, "evaluation", real_evaluation)
    trainings = []
    real = jobs.evaluate
    monkeypatch.setattr(jobs, "evaluate", lambda job: trainings.append(job) or real(job))
    run_search(_config(**IN_TURN), str(run), resume=True, progress=False)
    assert _without_seconds(_records(run)) == _without_seconds(_records(whole))
    hall_of_fame = [json.loads((r / "hall_of_fame.json").read_text()) for r in (run, whole)]
    assert hall_of_fame[0] == hall_of_fame[1]
    assert [r["phase"] for r in _logbook(run)] == [r["phase"] for r in _logbook(whole)]
    # a training recorded before the interruption is not made again
    assert sum(not (t.final or t.selection) for t in trainings) == (4 if where == "at the phase boundary" else 3)


def test_search_in_turn_copy_of_a_finished_run_resumes_to_the_same_end(in_turn_run, tmp_path):
    """The previous checkpoint of a finished run (killed in its last generation) resumes to the same records."""
    whole, _ = in_turn_run
    run = tmp_path / "run"
    shutil.copytree(whole, run)
    (run / "checkpoint.json").unlink()
    (run / "final.json").unlink()
    run_search(_config(**IN_TURN), str(run), resume=True, progress=False)
    assert _records(run) == _records(whole)

"""breed, evaluate and make_child: typed jobs of plain data whose results depend only on the job."""
import dataclasses
import gc
import itertools
import math
import pickle
import random

import pytest

from gp_loss.evolution import jobs, worker
from gp_loss.evolution.config import SearchConfig
from gp_loss.evolution.individual import freeze
from gp_loss.evolution.jobs import BreedJob, BreedResult, ChildJob, ChildResult, TrainJob
from gp_loss.filters.funnel import Funnel
from gp_loss.filters.pipeline import FilterPipeline, default_stages
from gp_loss.language import parse_formula
from gp_loss.tasks import TrainOutcome
from primitives import get_kind

CE = "neg(dot(y, log(softmax(x))))"
CONFIG = SearchConfig(task_options={"proxy_epochs": 1, "final_epochs": 2}).to_dict()


def _job(mode, seed, parents=(), config=CONFIG):
    return BreedJob(config=config, seed=seed, mode=mode, parents=list(parents))


def _train(formulas, seed=0, final=False):
    return jobs.evaluate(TrainJob(config=CONFIG, formulas=formulas, seed=seed, final=final))


def _passes_filters(formula, seed=0):
    kind = get_kind("cls")
    return FilterPipeline(default_stages(seed=seed)).check(kind, parse_formula(kind, formula)).passed


@pytest.mark.parametrize("mode, seed, parents", [
    ("init", 2, []),
    ("aging", 1, [{"cls": CE}]),
    ("pair", 1, [{"cls": CE}, {"cls": "neg(dot(y, softmax(x)))"}]),
])
def test_same_job_same_child(mode, seed, parents):
    first = jobs.breed(_job(mode, seed, parents))
    jobs.breed(_job("aging", 5, [{"cls": CE}]))  # other work in between changes nothing
    worker._CONTEXTS.clear()                     # nor does a fresh worker
    second = jobs.breed(_job(mode, seed, parents))
    assert first.formulas is not None
    for key in ("formulas", "signature", "how", "tries"):
        assert getattr(first, key) == getattr(second, key), key
    assert _counts(first.funnel) == _counts(second.funnel)


def _counts(funnel):
    """The funnel without its timings."""
    return {k: v if k != "stages" else {n: {m: x for m, x in s.items() if m != "seconds"} for n, s in v.items()}
            for k, v in funnel.to_dict().items() if k != "seconds"}


def test_different_seeds_give_different_children():
    children = {jobs.breed(_job("aging", seed, [{"cls": CE}])).formulas["cls"] for seed in range(1, 6)}
    assert len(children) >= 3


@pytest.mark.parametrize("mode, seed, parents", [
    ("init", 2, []),
    ("aging", 1, [{"cls": CE}]),
    ("aging", 2, [{"cls": CE}]),
    ("pair", 1, [{"cls": CE}, {"cls": CE}]),
])
def test_child_passes_the_filters(mode, seed, parents):
    result = jobs.breed(_job(mode, seed, parents))
    assert result.how != "copy"
    assert result.tries >= 1 and result.funnel.passed == 1
    assert result.funnel.candidates == result.tries
    assert _passes_filters(result.formulas["cls"])
    assert len(result.signature) == 1 and all(math.isfinite(v) for v in result.signature[0])


def test_the_funnel_returned_is_the_jobs_alone():
    result = jobs.breed(_job("aging", 1, [{"cls": CE}]))
    counts = _counts(result.funnel)
    jobs.prepare(CONFIG)  # the worker checks more formulas after the job
    jobs.breed(_job("init", 2, []))
    assert _counts(result.funnel) == counts


def test_copy_gives_the_parent_back():
    config = SearchConfig(p_copy=1.0, task_options={"proxy_epochs": 1}).to_dict()
    parent = {"cls": "neg(dot(mul(add(1, sin(w)), y), log(softmax(x))))"}
    result = jobs.breed(_job("aging", 3, [parent], config))
    assert result.how == "copy" and result.tries == 1
    assert result.formulas == parent
    ctx = worker.context_for(config)
    kind = get_kind("cls")
    assert result.signature == (ctx.signature("cls", parse_formula(kind, parent["cls"])),)


def test_no_copy_with_p_copy_zero():
    config = SearchConfig(p_copy=0.0, p_reinit=0.0, task_options={"proxy_epochs": 1}).to_dict()
    hows = {jobs.breed(_job("aging", s, [{"cls": CE}], config)).how for s in range(4)}
    assert hows == {"mutation"}


def test_slot_dropped_when_no_child_passes_within_the_tries():
    config = SearchConfig(max_breed_tries=1, task_options={"proxy_epochs": 1}).to_dict()
    # job seed 1: the first random tree of depth 3 is rejected (the slot needs many tries)
    result = jobs.breed(_job("init", 1, [], config))
    assert result.formulas is None and result.signature is None
    assert result.tries == 1 and result.funnel.passed == 0


def test_fixed_branches_stay_fixed():
    start = {"a": CE, "b": "neg(dot(y, softmax(x)))"}
    config = SearchConfig(scheme="cse", branches={"a": "cls", "b": "cls"}, search=["a"], start=start,
                          baselines=[], task_options={"proxy_epochs": 1}).to_dict()
    varied = set()
    for seed in (1, 2, 3):
        result = jobs.breed(_job("pair", seed, [start, start], config))
        assert result.formulas["b"] == start["b"]
        assert len(result.signature) == 2
        varied.add(result.formulas["a"])
    assert varied - {start["a"]}  # the searched branch does vary
    init = jobs.breed(_job("init", 2, [], dict(config, scheme="zero")))
    assert init.formulas["b"] == start["b"] and init.formulas["a"] != start["a"]


def test_jobs_leave_the_global_random_state_alone():
    random.seed(1234)
    state = random.getstate()
    results = [
        jobs.breed(_job("init", 2, [])),
        jobs.breed(_job("aging", 1, [{"cls": CE}])),
        jobs.breed(_job("pair", 1, [{"cls": CE}, {"cls": "neg(dot(y, softmax(x)))"}])),
        _train({"cls": CE}),
    ]
    assert results[2].how == "crossover"  # the path that borrows the global random
    assert random.getstate() == state


def test_evaluate_ce():
    outcome = _train({"cls": CE})
    assert isinstance(outcome, TrainOutcome)
    assert outcome.status == "ok" and outcome.reason == ""
    assert 0.3 < outcome.score <= 1  # chance is 0.1
    assert outcome.steps > 0 and outcome.seconds > 0
    again = _train({"cls": CE})
    assert again.score == outcome.score and again.steps == outcome.steps


def test_evaluate_final_trains_final_epochs_on_test():
    proxy = _train({"cls": CE})
    final = _train({"cls": CE}, final=True)
    assert final.status == "ok" and 0 <= final.score <= 1
    assert final.steps == 2 * proxy.steps  # final_epochs = 2, proxy_epochs = 1


@pytest.mark.parametrize("formula, at_start", [
    ("sqrt(sub(y, 2))", True),    # sqrt of a negative number: NaN at the first step
    ("sqrt(add(x, 1))", False),   # finite at first; training pushes logits below -1
])
def test_non_finite_loss_scores_zero(formula, at_start):
    outcome = _train({"cls": formula})
    assert outcome.status == "non-finite" and outcome.score == 0.0
    assert "nan" in outcome.reason
    assert (outcome.steps == 0) == at_start


class _OrderedSet(list):
    """A stand-in for ``set`` with a chosen iteration order (what another process may see)."""

    def intersection(self, other):
        return _OrderedSet(x for x in self if x in other)


def _set_in_order(reverse):
    return lambda items=(): _OrderedSet(sorted(set(items), key=lambda t: t.__name__, reverse=reverse))


def test_crossover_child_does_not_depend_on_set_order(monkeypatch):
    from deap import gp
    config = SearchConfig(scheme="cse", p_crossover=1.0, p_mutation=0.0,
                          task_options={"proxy_epochs": 1}).to_dict()
    parents = [{"cls": CE}, {"cls": "neg(dot(mul(add(1, sin(w)), y), log(softmax(x))))"}]
    children = []
    for reverse in (False, True):
        monkeypatch.setattr(gp, "set", _set_in_order(reverse), raising=False)
        children.append([jobs.breed(_job("pair", s, parents, config)).formulas for s in range(8)])
    assert children[0] == children[1]


# -- make_child: breed, then train unless the score is known ---------------------------

_PLANS = itertools.count()


def _child_job(mode, seed, parents=(), known=frozenset(), recorded=None, config=CONFIG, plan=None, slot=0):
    plan = f"test:{next(_PLANS)}" if plan is None else plan  # a plan of its own unless told
    return ChildJob(breed=_job(mode, seed, parents, config), known=known, train_seed=0, recorded=recorded,
                    plan=plan, slot=slot)


def test_make_child_trains_a_new_child_like_evaluate():
    result = jobs.make_child(_child_job("aging", 1, [{"cls": CE}]))
    assert result.outcome == "trained"
    again = _train(result.bred.formulas)
    assert dataclasses.replace(result.trained, seconds=0.0) == dataclasses.replace(again, seconds=0.0)


def test_make_child_does_not_train_a_known_signature():
    bred = jobs.make_child(_child_job("aging", 1, [{"cls": CE}])).bred
    known = frozenset({freeze(bred.signature)})
    result = jobs.make_child(_child_job("aging", 1, [{"cls": CE}], known=known))
    assert (result.outcome, result.trained) == ("reused", None)
    assert result.bred.formulas == bred.formulas


def test_make_child_does_not_retrain_a_recorded_child():
    bred = jobs.make_child(_child_job("aging", 1, [{"cls": CE}])).bred
    result = jobs.make_child(_child_job("aging", 1, [{"cls": CE}], recorded=bred.formulas))
    assert (result.outcome, result.trained) == ("recorded", None)
    other = jobs.make_child(_child_job("aging", 1, [{"cls": CE}], recorded={"cls": "neg(dot(y, softmax(x)))"}))
    assert other.outcome == "trained"


def test_make_child_given_genome_skips_the_filters_and_trains():
    fails_filters = "neg(x)"  # does not depend on the target
    assert not _passes_filters(fails_filters)
    result = jobs.make_child(_child_job("given", 4, [{"cls": fails_filters}]))
    assert result.bred.formulas == {"cls": fails_filters} and result.outcome == "trained"
    # its own signature in `known` (as the search passes it) does not stop it training
    known = frozenset({freeze(result.bred.signature)})
    assert jobs.make_child(_child_job("given", 4, [{"cls": fails_filters}], known=known)).outcome == "trained"


def test_prepare_builds_the_worker_context():
    import os
    assert jobs.prepare(CONFIG).pid == os.getpid()
    ctx = worker.context_for(CONFIG)
    assert ctx.task is ctx.task  # built once, kept
    # the start formula went through the filters: a repeat is replayed from the memo (no stage runs)
    kind = get_kind("cls")
    again = ctx.pipeline.check(kind, parse_formula(kind, CE))
    assert again.results and all(r.seconds == 0.0 for r in again.results)
    # what the warm-up left alive is out of the collector's full passes (torch alone: >100,000 objects)
    assert gc.get_freeze_count() > 100_000


def test_prepare_builds_every_stages_samples_without_start_formulas():
    # Built in the warm-up, they are never charged to the first candidate's time limit.
    config = SearchConfig(scheme="zero", start={}, task_options={"proxy_epochs": 1, "final_epochs": 2}).to_dict()
    jobs.prepare(config)
    ctx = worker.context_for(config)
    stages = {s.name: s for s in ctx.pipeline.stages}
    assert "cls" in stages["convergence"]._sweeps and "cls" in stages["rejection"]._samples
    assert "cls" in ctx.equivalence._samples


def test_cost_rank_reads_the_variation_the_job_will_draw():
    config = SearchConfig.from_dict(CONFIG)
    for seed in range(12):
        job = _child_job("aging", seed, [{"cls": CE}])
        how = jobs.breed(job.breed).how
        assert jobs.cost_rank(job, config) == {"reinit": 0, "mutation": 1, "copy": 2}[how]
    assert jobs.cost_rank(_child_job("init", 0), config) == 0


def test_random_trees_judged_in_batches_breed_the_children_of_one_at_a_time(monkeypatch):
    def bred(batch):
        monkeypatch.setattr(jobs, "RANDOM_BATCH", batch)
        worker._CONTEXTS.clear()  # fresh memos: the same work from scratch
        out = []
        for seed in (2, 3, 4):  # job seed 4 re-initialises the aging child
            for mode, parents in (("init", []), ("aging", [{"cls": CE}])):
                r = jobs.breed(_job(mode, seed, parents))
                out.append((r.formulas, r.signature, r.how, r.tries, _counts(r.funnel)))
        return out

    one, many = bred(1), bred(32)
    assert many == one
    assert sum(r[3] for r in one) > 100 and any(r[2] == "reinit" for r in one)


def test_make_child_does_not_train_the_twin_of_an_earlier_sibling_it_trained(monkeypatch):
    trainings = []
    real = jobs.evaluate
    monkeypatch.setattr(jobs, "evaluate", lambda job: trainings.append(job) or real(job))
    # the same seed and parent breed the same child: three siblings of one plan, handed out 1, 2, 0
    one = jobs.make_child(_child_job("aging", 1, [{"cls": CE}], plan="p", slot=1))
    two = jobs.make_child(_child_job("aging", 1, [{"cls": CE}], plan="p", slot=2))
    zero = jobs.make_child(_child_job("aging", 1, [{"cls": CE}], plan="p", slot=0))
    assert one.bred.formulas == two.bred.formulas == zero.bred.formulas
    # slot 2 is a twin of slot 1; slot 0 comes before both, so it is trained (it will be recorded first)
    assert [one.outcome, two.outcome, zero.outcome] == ["trained", "twin", "trained"]
    assert two.trained is None and len(trainings) == 2
    # another plan (the next generation) starts afresh
    assert jobs.make_child(_child_job("aging", 1, [{"cls": CE}], plan="q", slot=3)).outcome == "trained"


# -- jobs travel to workers and back by pickle ---------------------------------------------

def test_jobs_and_results_round_trip_through_pickle():
    child_job = _child_job("aging", 1, [{"cls": CE}], known=frozenset({((0.1, 0.2),)}), recorded={"cls": CE})
    result = jobs.make_child(_child_job("aging", 1, [{"cls": CE}]))
    assert isinstance(result, ChildResult) and isinstance(result.bred, BreedResult)
    assert isinstance(result.trained, TrainOutcome) and isinstance(result.bred.funnel, Funnel)
    for value in (child_job, child_job.breed, TrainJob(config=CONFIG, formulas={"cls": CE}, seed=3, final=True)):
        assert pickle.loads(pickle.dumps(value)) == value
    back = pickle.loads(pickle.dumps(result))
    assert (back.outcome, back.trained, back.bred.formulas, back.bred.signature, back.bred.how, back.bred.tries) == \
        (result.outcome, result.trained, result.bred.formulas, result.bred.signature, result.bred.how,
         result.bred.tries)
    assert back.bred.funnel.to_dict() == result.bred.funnel.to_dict()

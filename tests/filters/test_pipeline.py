"""The pipeline stops at the first rejection, survives bad candidates, and counts the funnel."""
import json
import random
import re
import signal
import time

import pytest

from gp_loss.filters import pipeline as pipeline_module
from gp_loss.filters.base import Candidate, StageResult
from gp_loss.filters.funnel import Funnel, reason_key
from gp_loss.filters.pipeline import FilterPipeline, default_stages
from gp_loss.filters.validity import ValidityStage
from gp_loss.language import parse_formula
from gp_loss.language.generate import random_tree
from gp_loss.paper_losses import PAPER_LOSSES
from primitives import get_kind


class _Always:
    def __init__(self, name, passed=True):
        self.name, self.passed, self.calls = name, passed, 0

    def __call__(self, candidate):
        self.calls += 1
        return StageResult(self.name, self.passed, "ok" if self.passed else "no")


class _Hangs:
    """A stage that computes forever (the limit counts CPU time: a stage that waits is not stopped)."""

    name = "hangs"

    def __call__(self, candidate):
        while True:
            pass


class _Waits:
    """A stage that spends ``seconds`` of wall time waiting, and almost no CPU time."""

    name = "waits"

    def __init__(self, seconds):
        self.seconds = seconds

    def __call__(self, candidate):
        time.sleep(self.seconds)
        return StageResult(self.name, True, "ok")


class _Raises:
    name = "raises"

    def __call__(self, candidate):
        raise RuntimeError("boom")


def _cand(kind, text):
    k = get_kind(kind)
    return Candidate(k, parse_formula(k, text))


def test_stops_at_first_rejection_and_counts():
    later = _Always("later")
    pipe = FilterPipeline([ValidityStage(), later])
    good = pipe.run(_cand("cls", "neg(dot(y, log(softmax(x))))"))
    bad = pipe.run(_cand("bcls", "log(x)"))
    assert good.passed and not bad.passed
    assert bad.rejection.stage == "validity" and later.calls == 1
    f = pipe.funnel.to_dict()
    assert f["candidates"] == 2 and f["passed"] == 1
    assert f["stages"]["validity"] == {**f["stages"]["validity"], "in": 2, "rejected": 1}
    assert "loss is # on sample inputs" in f["stages"]["validity"]["reasons"]
    assert "validity" in pipe.funnel.table() and "rejected 50.00%" in pipe.funnel.table()


def test_hanging_and_raising_stages_are_rejections():
    pipe = FilterPipeline([_Hangs()], time_limit_s=0.2)
    verdict = pipe.run(_cand("reg", "sub(1, div(i, u))"))
    assert not verdict.passed and "too slow" in verdict.rejection.reason and verdict.rejection.timed_out
    assert pipe.funnel.too_slow == 1 and pipe.funnel.stages["hangs"].too_slow == 1
    verdict = FilterPipeline([_Raises()]).run(_cand("reg", "sub(1, div(i, u))"))
    assert not verdict.passed and "RuntimeError: boom" in verdict.rejection.reason


def test_funnel_round_trips_and_merges():
    a = Funnel(["s"])
    a.candidates, a.passed = 3, 1
    a.record(StageResult("s", False, "loss is nan"))
    b = Funnel.from_dict(a.to_dict())
    b.merge(a)
    assert b.candidates == 6 and b.stages["s"].rejected == 2
    assert reason_key("loss is 1.5e-3 at step 12") == "loss is # at step #"


def test_funnel_keeps_the_pipeline_order_through_a_sorted_json_file():
    funnel = Funnel(["convergence", "validity", "rejection"])
    saved = json.loads(json.dumps(funnel.to_dict(), sort_keys=True))  # as run files are written
    assert list(Funnel.from_dict(saved).stages) == ["convergence", "validity", "rejection"]
    assert Funnel.from_dict(saved).table().splitlines()[1].startswith("convergence")
    assert Funnel.from_dict(saved).table().splitlines()[2].startswith("validity")


def test_memo_replays_verdicts_of_repeated_formulas_but_not_overruns():
    kind = get_kind("cls")
    first, second = _Always("first"), _Always("second", passed=False)
    pipe = FilterPipeline([first, second], memo_size=10)
    tree = parse_formula(kind, "neg(dot(y, log(softmax(x))))")
    a = pipe.check(kind, tree)
    b = pipe.check(kind, parse_formula(kind, "neg(dot(y, log(softmax(x))))"))
    assert (first.calls, second.calls) == (1, 1)  # the repeat ran no stage
    assert [(r.stage, r.passed, r.reason) for r in a.results] == [(r.stage, r.passed, r.reason) for r in b.results]
    assert pipe.funnel.candidates == 2 and pipe.funnel.stages["second"].rejected == 2
    hang = FilterPipeline([_Hangs()], time_limit_s=0.05, memo_size=10)
    hang.check(kind, tree)
    hang.check(kind, tree)
    assert hang.funnel.stages["hangs"].rejected == 2 and hang.funnel.stages["hangs"].seconds >= 0.09
    off = FilterPipeline([first], memo_size=0)
    off.check(kind, tree)
    off.check(kind, tree)
    assert first.calls == 3


def test_memo_replays_numbers_as_fresh_results():
    kind = get_kind("cls")
    pipe = FilterPipeline(default_stages()[:1], memo_size=10)
    tree = parse_formula(kind, "dot(y, log(softmax(x)))")  # negated CE: rejected, with numbers
    a, b = pipe.check(kind, tree), pipe.check(kind, tree)
    assert not b.passed and b.results[0].numbers == a.results[0].numbers and a.results[0].numbers
    b.results[0].numbers["violation_frac"] = -1.0  # a replay is a copy: changing it changes no later one
    assert pipe.check(kind, tree).results[0].numbers == a.results[0].numbers


def test_default_order_is_the_documented_one():
    documented = re.findall(r"^\d\. ``(\w+)``", pipeline_module.__doc__, re.MULTILINE)
    assert documented == ["convergence", "validity", "range", "rejection", "equivalence", "simulation"]
    assert [s.name for s in default_stages(simulate=True)] == documented
    assert [s.name for s in default_stages()] == documented[:-1]
    assert [s.name for s in default_stages(range_bound=None)] == ["convergence", "validity", "rejection",
                                                                  "equivalence"]


@pytest.mark.parametrize("kind", ["cls", "bcls", "reg"])
def test_stage_order_does_not_change_verdicts(kind):
    # The documented order is chosen for speed only: every tree passes or fails alike with
    # validity first. Random trees, plus the paper losses, which pass.
    k = get_kind(kind)
    rng = random.Random(7)
    trees = [random_tree(k, 3, rng) for _ in range(150)]
    trees += [parse_formula(k, p.formula) for p in PAPER_LOSSES.values() if p.kind == kind]
    stages = default_stages()[:4]
    by_name = {s.name: s for s in stages}
    documented = FilterPipeline(stages)
    validity_first = FilterPipeline([by_name[n] for n in ("validity", "convergence", "rejection", "range")])
    verdicts = [(documented.check(k, t).passed, validity_first.check(k, t).passed) for t in trees]
    assert all(a == b for a, b in verdicts)
    assert sum(a for a, _ in verdicts) >= 2  # the paper losses


def test_time_limit_leaves_the_alarm_as_it_was():
    before = signal.getsignal(signal.SIGPROF)
    FilterPipeline([_Always("ok")], time_limit_s=5).run(_cand("reg", "sub(1, div(i, u))"))
    verdict = FilterPipeline([_Hangs()], time_limit_s=0.05).run(_cand("reg", "sub(1, div(i, u))"))
    assert "too slow" in verdict.rejection.reason
    assert signal.getsignal(signal.SIGPROF) == before
    assert signal.getitimer(signal.ITIMER_PROF) == (0.0, 0.0)


def test_waiting_is_not_charged_to_a_candidate():
    # Wall time past the limit, as on a machine whose cores are busy with other work: the
    # limit counts the stage's CPU time, so the candidate is judged as on an idle machine.
    pipe = FilterPipeline([_Waits(0.3)], time_limit_s=0.1)
    verdict = pipe.run(_cand("reg", "sub(1, div(i, u))"))
    assert verdict.passed and pipe.funnel.too_slow == 0


class _SlowToPrepare:
    """A stage whose per-kind setup spins for ``seconds`` of CPU time; judging a candidate is instant."""

    name = "slow_setup"

    def __init__(self, seconds):
        self.seconds, self.prepared = seconds, []

    def _spin(self):
        start = time.thread_time()
        while time.thread_time() - start < self.seconds:
            pass

    def prepare(self, kind_name):
        self._spin()
        self.prepared.append(kind_name)

    def __call__(self, candidate):
        if candidate.kind.name not in self.prepared:  # built on first use, as the real stages do
            self.prepare(candidate.kind.name)
        return StageResult(self.name, True, "ok")


def test_a_stages_setup_is_not_charged_to_the_first_candidate():
    stage = _SlowToPrepare(0.3)
    pipe = FilterPipeline([stage], time_limit_s=0.1)
    first = pipe.run(_cand("reg", "sub(1, div(i, u))"))
    again = pipe.run(_cand("reg", "sub(2, div(i, u))"))
    assert first.passed and again.passed and pipe.funnel.too_slow == 0
    assert stage.prepared == ["reg"]  # once per kind


class _CountsBatches(_Always):
    """A first stage that can judge many candidates at once, recording the batch sizes."""

    def __init__(self, name, passes):
        super().__init__(name)
        self.passes, self.batches = passes, []

    def __call__(self, candidate):
        return self.judge_many([candidate])[0]

    def judge_many(self, candidates):
        self.batches.append(len(candidates))
        return [StageResult(self.name, c.formula in self.passes, "") for c in candidates]


def test_check_many_gives_the_verdicts_of_check_one_at_a_time():
    kind, rng = get_kind("cls"), random.Random(3)
    trees = [random_tree(kind, 3, rng) for _ in range(200)]
    trees += trees[:20]  # repeats, some within the same call
    alone, together = (FilterPipeline(default_stages()[:3], memo_size=1000) for _ in range(2))
    expected = [alone.check(kind, t) for t in trees]
    got = list(together.check_many(kind, trees))
    assert [(v.passed, [(r.stage, r.passed, r.reason, r.numbers) for r in v.results]) for v in got] == \
           [(v.passed, [(r.stage, r.passed, r.reason, r.numbers) for r in v.results]) for v in expected]
    assert (together.funnel.candidates, together.funnel.passed) == (alone.funnel.candidates, alone.funnel.passed)
    for name, stage in alone.funnel.stages.items():
        mine = together.funnel.stages[name]
        assert (mine.entered, mine.rejected, mine.reasons) == (stage.entered, stage.rejected, stage.reasons)
    assert [str(v.candidate.tree) for v in got] == [str(t) for t in trees]


def test_check_many_judges_the_first_stage_at_once_and_counts_only_what_is_read():
    kind = get_kind("cls")
    formulas = ["neg(x)", "neg(y)", "neg(dot(y, log(softmax(x))))", "neg(w)", "neg(x)"]
    first = _CountsBatches("first", passes={"neg(dot(y, log(softmax(x))))"})
    second = _Always("second")
    pipe = FilterPipeline([first, second], memo_size=10)
    verdicts = pipe.check_many(kind, [parse_formula(kind, f) for f in formulas])
    read = [next(verdicts) for _ in range(3)]  # stop at the first pass, as breeding does
    assert [v.passed for v in read] == [False, False, True]
    assert first.batches == [4]  # the repeat of neg(x) is not judged twice
    assert second.calls == 1 and pipe.funnel.candidates == 3 and pipe.funnel.passed == 1
    # the first stage's rejections are remembered, read or not: neg(w) is now a replay
    again = pipe.check(kind, parse_formula(kind, "neg(w)"))
    assert not again.passed and first.batches == [4] and again.results[0].seconds == 0.0


def test_a_limit_of_gp_loss_is_reported_as_not_judged_and_not_remembered(monkeypatch):
    # A candidate's loss that raises is rejected for it; Python's recursion limit hit inside a
    # stage is ours, so the verdict says the candidate was not judged (and a repeat is judged again).
    kind = get_kind("cls")
    tree = parse_formula(kind, "neg(dot(y, log(softmax(x))))")
    calls = []

    def deep(self, candidate):
        calls.append(1)
        raise RecursionError("maximum recursion depth exceeded")

    monkeypatch.setattr(ValidityStage, "__call__", deep)
    pipe = FilterPipeline([ValidityStage()], memo_size=10)
    first, again = pipe.check(kind, tree), pipe.check(kind, tree)
    for verdict in (first, again):
        (result,) = verdict.results
        assert not result.passed and not result.judged
        assert result.reason.startswith("not judged: RecursionError inside gp-loss")
    assert len(calls) == 2

    # The stages raise it again instead of turning it into a rejection of the loss.
    monkeypatch.undo()
    stage = ValidityStage()
    candidate = _cand("cls", "neg(dot(y, log(softmax(x))))")

    def recursing(*inputs):
        raise RecursionError("deep")

    candidate.loss = recursing
    with pytest.raises(RecursionError):
        stage(candidate)
    candidate.loss = lambda *inputs: (_ for _ in ()).throw(ValueError("bad shape"))
    assert stage(candidate).reason == "ValueError: bad shape"


def test_check_exits_3_when_a_stage_could_not_judge(monkeypatch, capsys):
    from gp_loss.cli import main

    def deep(self, candidate):
        raise RecursionError("maximum recursion depth exceeded")

    monkeypatch.setattr(ValidityStage, "__call__", deep)
    assert main(["check", "cls=neg(dot(y, log(softmax(x))))"]) == 3
    out = capsys.readouterr().out
    assert "NOT JUDGED" in out and out.strip().endswith("not judged")

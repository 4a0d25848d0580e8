"""The recorder writes the run directory; the search only keeps state and tells it what happened."""
import ast
import csv
import dataclasses
import hashlib
import json

from gp_loss.evolution.config import SearchConfig
from gp_loss.evolution.individual import individual_from_formulas
from gp_loss.evolution.recorder import Recorder
from gp_loss.evolution.run_files import evaluation_record
from gp_loss.evolution.search import Search
from gp_loss.runtime.checkpoint import load_checkpoint
from gp_loss.runtime.parallel import open_backend
from gp_loss.runtime.run_dir import RunDir
from gp_loss.tasks import TrainOutcome

CE = "neg(dot(y, log(softmax(x))))"
FORMULAS = [CE, "neg(dot(y, softmax(x)))", "neg(dot(mul(2, y), log(softmax(x))))"]
CONFIG = SearchConfig(population=3, max_evaluations=6, offspring_per_generation=3, final_seeds=1, final_top=2,
                      task_options={"proxy_epochs": 1, "final_epochs": 1})


class _Calls:
    """A recorder that only remembers what it was told."""

    def __init__(self):
        self.evaluations, self.generations = [], []

    def evaluation(self, record):
        self.evaluations.append(record)

    def generation(self, search):
        self.generations.append(search.generation)


def _search_with_members(path, progress=False):
    """A search in generation 0 with three scored members, recording into ``path``."""
    recorder = Recorder(RunDir(path), CONFIG, progress=progress)
    recorder.run.prepare()
    search = Search(CONFIG, open_backend("serial"), recorder)
    layout = dict(CONFIG.branches)
    for i, formula in enumerate(FORMULAS):
        ind = individual_from_formulas(layout, {"cls": formula})
        ind.fitness.values, ind.id, ind.generation = (0.5 + i / 10,), i + 1, 0
        search.population.append(ind)
        search.hall_of_fame.update([ind])
    return search


def test_a_record_holds_every_field_of_the_outcome():
    @dataclasses.dataclass
    class Outcome(TrainOutcome):  # a field an outcome may gain later
        extra: list = dataclasses.field(default_factory=lambda: [1, 2])

    outcome = Outcome(score=0.75, status="ok", steps=3, seconds=0.5)
    record = evaluation_record(outcome, generation=2, slot=1, evaluation=9, formulas={"cls": CE},
                               signature=((0.1, 0.2),))
    expected = {f.name for f in dataclasses.fields(Outcome)} - {"score"} | {"fitness"}
    assert set(record) == expected | {"generation", "slot", "evaluation", "fidelity", "formulas", "signature"}
    assert (record["fitness"], record["extra"], record["steps"], record["evaluation"]) == (0.75, [1, 2], 3, 9)


def test_the_search_writes_nothing_itself(tmp_path):
    calls = _Calls()
    search = Search(CONFIG, open_backend("serial"), calls)
    ce = search.start_individual()
    children = search.make_children([("given", [ce])])
    search.population.extend(children)
    search.end_generation()
    assert list(tmp_path.iterdir()) == []
    assert [r["formulas"] for r in calls.evaluations] == [{"cls": CE}] and calls.generations == [1]
    assert calls.evaluations[0]["fitness"] == children[0].fitness.values[0]


def test_a_generation_writes_the_run_files_and_the_checkpoint(tmp_path, capsys):
    search = _search_with_members(tmp_path)
    search.end_generation()
    names = {p.name for p in tmp_path.iterdir()}
    assert {"logbook.csv", "hall_of_fame.json", "hall_of_fame.py", "fitness.png", "checkpoint.json"} <= names

    rows = list(csv.DictReader((tmp_path / "logbook.csv").open()))
    assert len(rows) == 1 and rows[0]["gen"] == "0" and float(rows[0]["hof_best"]) == 0.7
    hof = json.loads((tmp_path / "hall_of_fame.json").read_text())
    assert hof["metric"] == "validation accuracy" and hof["task"] == "classification"
    assert [r["formulas"]["cls"] for r in hof["hall_of_fame"]] == FORMULAS[::-1]
    assert [r["rank"] for r in hof["hall_of_fame"]] == [1, 2, 3]
    functions = {n.name for n in ast.parse((tmp_path / "hall_of_fame.py").read_text()).body
                 if isinstance(n, ast.FunctionDef)}
    assert {"top1_cls", "top2_cls", "top3_cls"} <= functions

    state, warnings = load_checkpoint(tmp_path)
    assert warnings == [] and state["generation"] == 1
    assert state["hall_of_fame"] == json.loads(json.dumps(search.state_dict()))["hall_of_fame"]
    assert capsys.readouterr().out.startswith("gen   0 | evals 0/6")


def test_the_plot_waits_after_the_clock_starts_and_is_drawn_at_the_end(tmp_path):
    search = _search_with_members(tmp_path)
    search.recorder.start_clock()
    search.end_generation()
    assert not (tmp_path / "fitness.png").exists()
    search.recorder.write_results(search)
    assert (tmp_path / "fitness.png").read_bytes()[:4] == b"\x89PNG"


def test_evaluations_baselines_and_final(tmp_path):
    recorder = Recorder(RunDir(tmp_path), CONFIG, progress=False)
    recorder.evaluation({"evaluation": 1, "fitness": 0.5})
    recorder.evaluation({"evaluation": 2, "fitness": 0.25})
    assert [r["evaluation"] for r in recorder.read_evaluations()] == [1, 2]
    # The digest follows the lines as written, and restarts from the lines kept.
    text = (tmp_path / "evaluations.jsonl").read_text()
    assert recorder.evaluations_digest() == hashlib.sha256(text.encode()).hexdigest()
    # On resume the digest restarts from the lines the checkpoint covers; the lines after them stay
    # in the file until reused, and a reused one is counted where it stands, not written again.
    covered, pending = recorder.evaluation_lines()
    fresh = Recorder(RunDir(tmp_path), CONFIG, progress=False)
    fresh.resume_evaluations([covered], [pending], [])
    assert (tmp_path / "evaluations.jsonl").read_text() == text
    assert fresh.evaluations_digest() == hashlib.sha256((covered.text + "\n").encode()).hexdigest()
    fresh.evaluation({"evaluation": 2, "fitness": 0.25})
    assert (tmp_path / "evaluations.jsonl").read_text() == text
    assert fresh.evaluations_digest() == hashlib.sha256(text.encode()).hexdigest()
    fresh.evaluation({"evaluation": 3, "fitness": 0.125})
    assert [r["evaluation"] for r in fresh.read_evaluations()] == [1, 2, 3]
    fresh.close()
    recorder.baselines({"ce": 0.9})
    assert json.loads((tmp_path / "baselines.json").read_text()) == {"ce": 0.9}
    assert recorder.read_final() is None
    recorder.final({"evaluations": 2, "rows": []})
    assert recorder.read_final() == {"evaluations": 2, "rows": []}
    recorder.close()

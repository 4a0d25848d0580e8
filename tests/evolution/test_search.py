"""run_search end to end on a tiny budget: the run directory, reproducibility, resume."""
import ast
import csv
import importlib.util
import json
import math
import shutil

import pytest
import torch

from gp_loss.errors import GpLossError
from gp_loss.evolution.config import SearchConfig
from gp_loss.evolution.individual import individual_from_formulas
from gp_loss.evolution.recorder import Recorder
from gp_loss.evolution.run_search import run_search
from gp_loss.evolution import jobs
from gp_loss.evolution.search import Search
from gp_loss.runtime.parallel import open_backend
from gp_loss.runtime.run_dir import RunDir
from gp_loss.language import compile_loss, parse_formula
from primitives import get_kind

CE = "neg(dot(y, log(softmax(x))))"
# final_top 3: the final retraining covers more than the best, so a stale final.json shows.
TINY = dict(population=3, max_evaluations=6, offspring_per_generation=3, final_seeds=1, final_top=3,
            task_options={"proxy_epochs": 1, "final_epochs": 1})


def tiny(**changes):
    return SearchConfig(**{**TINY, **changes})


def serial_search(config, path):
    """A search of ``config`` recording into ``path``, on the serial map."""
    return Search(config, open_backend("serial"), Recorder(RunDir(path), config, progress=False))


def _json(path):
    return json.loads(path.read_text())


def _state(run_path):
    return _json(run_path / "checkpoint.json")["state"]


def _evaluations(run_path):
    return [json.loads(line) for line in (run_path / "evaluations.jsonl").read_text().splitlines()]


def _without_timings(records):
    return [{k: v for k, v in r.items() if k not in ("seconds", "peak_memory_mib")} for r in records]


@pytest.fixture(scope="module")
def run_a(tmp_path_factory):
    path = tmp_path_factory.mktemp("search") / "a"
    result = run_search(tiny(), str(path), progress=False)
    return path, result


@pytest.fixture(scope="module")
def cse_run(tmp_path_factory):
    path = tmp_path_factory.mktemp("search") / "cse"
    run_search(tiny(scheme="cse"), str(path), progress=False)
    return path


@pytest.fixture(scope="module")
def resumed(run_a, tmp_path_factory):
    """run_a continued with twice the budget."""
    path = tmp_path_factory.mktemp("search") / "resumed"
    shutil.copytree(run_a[0], path)
    run_search(tiny(max_evaluations=12), str(path), resume=True, progress=False)
    return path


def test_run_writes_its_files(run_a):
    path, result = run_a
    names = {p.name for p in path.iterdir()}
    assert {"config.json", "logbook.csv", "evaluations.jsonl", "hall_of_fame.json", "hall_of_fame.py",
            "fitness.png", "final.json", "baselines.json", "checkpoint.json"} <= names
    assert _json(path / "config.json") == tiny().to_dict()

    state = _state(path)
    records = _evaluations(path)
    assert state["evaluations"] == state["evaluation_lines"] == len(records) == 6
    assert [r["evaluation"] for r in records] == list(range(1, 7))
    assert all(0 <= r["fitness"] <= 1 and r["status"] in ("ok", "non-finite", "error", "too slow")
               for r in records)
    assert len({json.dumps(r["formulas"]) for r in records}) == 6
    assert records[0]["generation"] == 0 and [r["slot"] for r in records[:3]] == [0, 1, 2]

    rows = list(csv.DictReader((path / "logbook.csv").open()))
    assert len(rows) == state["generation"] >= 2
    assert [int(r["gen"]) for r in rows] == list(range(len(rows)))
    assert int(rows[0]["evaluations"]) == 3 and int(rows[-1]["evaluations"]) == 6
    assert float(rows[-1]["hof_best"]) == max(r["fitness"] for r in records)

    hof = _json(path / "hall_of_fame.json")
    assert hof["metric"] == "validation accuracy" and hof["task"] == "classification"
    fits = [r["fitness"] for r in hof["hall_of_fame"]]
    assert [r["rank"] for r in hof["hall_of_fame"]] == list(range(1, len(fits) + 1))
    assert len(fits) == 6 and fits == sorted(fits, reverse=True)
    by_eval = {r["evaluation"]: r for r in records}
    for row in hof["hall_of_fame"]:
        assert by_eval[row["evaluation"]]["formulas"] == row["formulas"]
        assert by_eval[row["evaluation"]]["fitness"] == row["fitness"]

    assert (path / "fitness.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert set(_json(path / "baselines.json")) == {"ce"}

    final = _json(path / "final.json")
    assert final == result and final["metric"] == "test accuracy"
    assert [r["name"] for r in final["rows"]] == ["top1", "top2", "top3", "ce"]
    for rank, row in enumerate(final["rows"][:3]):
        assert row["formulas"] == hof["hall_of_fame"][rank]["formulas"] and not row["baseline"]
        assert row["proxy_fitness"] == hof["hall_of_fame"][rank]["fitness"]
    ce = final["rows"][3]
    assert ce["baseline"] and ce["formulas"] == {"cls": CE} and ce["seeds"] == [1000]
    assert ce["proxy_fitness"] == _json(path / "baselines.json")["ce"]
    assert all(len(r["scores"]) == 1 and 0 <= r["mean"] <= 1 and r["std"] == 0 for r in final["rows"])


def _load_module(path):
    spec = importlib.util.spec_from_file_location("hall_of_fame_under_test", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_hall_of_fame_py_needs_only_torch(run_a):
    path, _ = run_a
    tree = ast.parse((path / "hall_of_fame.py").read_text())
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            imported.add(node.module.split(".")[0])
    assert imported <= {"torch", "math", "__future__"} and "torch" in imported

    module = _load_module(path / "hall_of_fame.py")
    top1 = _json(path / "hall_of_fame.json")["hall_of_fame"][0]["formulas"]["cls"]
    g = torch.Generator().manual_seed(0)
    x = torch.randn(16, 10, generator=g)
    y = torch.nn.functional.one_hot(torch.randint(0, 10, (16,), generator=g), 10).float()
    w = torch.ones_like(y)
    value = module.top1_cls(x, y, w)
    assert value.dim() == 0 and torch.isfinite(value)
    kind = get_kind("cls")
    assert value.item() == pytest.approx(compile_loss(kind, parse_formula(kind, top1))(x, y, w).item(),
                                         rel=1e-5, abs=1e-6)
    assert top1 in module.top1_cls.__doc__


def test_hall_of_fame_loss_trains_a_linear_model(run_a):
    from gp_loss.data.digits import digits_tensors
    module = _load_module(run_a[0] / "hall_of_fame.py")
    images, labels = digits_tensors()
    x, labels = images[:256].flatten(1), labels[:256]
    y = torch.nn.functional.one_hot(labels, 10).float()
    torch.manual_seed(0)
    model = torch.nn.Linear(64, 10)
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    losses = []
    for _ in range(30):
        loss = module.top1_cls(model(x), y, torch.ones_like(y))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert all(math.isfinite(v) for v in losses)
    assert losses[-1] < losses[0]


def test_same_seed_same_results(run_a, tmp_path):
    run_search(tiny(), str(tmp_path / "b"), progress=False)
    a, b = run_a[0], tmp_path / "b"
    assert _json(a / "hall_of_fame.json") == _json(b / "hall_of_fame.json")
    assert _without_timings(_evaluations(a)) == _without_timings(_evaluations(b))
    assert _json(a / "final.json") == _json(b / "final.json")


def test_cse_scheme_starts_from_ce(cse_run):
    records = _evaluations(cse_run)
    assert records[0]["formulas"] == {"cls": CE} and records[0]["generation"] == 0
    assert _state(cse_run)["evaluations"] == len(records) == len({json.dumps(r["formulas"]) for r in records})
    assert 2 <= len(records) <= 6
    hof = _json(cse_run / "hall_of_fame.json")["hall_of_fame"]
    assert hof[0]["fitness"] >= records[0]["fitness"]
    # the best `population` of parents and children survive: the best loss trained is among them
    population = _state(cse_run)["population"]
    assert len(population) == 3
    assert max(p["fitness"] for p in population) == max(r["fitness"] for r in records) == hof[0]["fitness"]


def test_resume_with_a_larger_budget_continues(run_a, resumed):
    before, after = _state(run_a[0]), _state(resumed)
    assert after["evaluations"] == 12 > before["evaluations"]
    assert after["generation"] > before["generation"]
    lines_a = (run_a[0] / "evaluations.jsonl").read_text().splitlines()
    lines = (resumed / "evaluations.jsonl").read_text().splitlines()
    assert len(lines) == 12 and lines[:6] == lines_a
    assert [r["evaluation"] for r in map(json.loads, lines)] == list(range(1, 13))
    rows = list(csv.DictReader((resumed / "logbook.csv").open()))
    assert len(rows) == after["generation"] and int(rows[-1]["evaluations"]) == 12
    assert _json(resumed / "config.json")["max_evaluations"] == 12


def test_resume_with_a_larger_budget_refreshes_final(resumed):
    hof = _json(resumed / "hall_of_fame.json")["hall_of_fame"]
    final = _json(resumed / "final.json")
    chosen = final["selection"]["candidates"]  # the new hall of fame's best, chosen at the final length
    by_rank = sorted(chosen, key=lambda c: c["hall_of_fame_rank"])
    assert [c["formulas"] for c in by_rank] == [r["formulas"] for r in hof[:len(chosen)]]
    assert [r["formulas"] for r in final["rows"][:3]] == [c["formulas"] for c in chosen[:3]]


def _interrupt_before_last_generation(src, dst):
    """A copy of a finished run as if killed during its last generation."""
    shutil.copytree(src, dst)
    (dst / "checkpoint.json").unlink()   # the previous checkpoint is now the newest
    (dst / "final.json").unlink()


def test_resume_from_the_previous_checkpoint_reproduces_the_run(run_a, tmp_path):
    a, b = run_a[0], tmp_path / "b"
    _interrupt_before_last_generation(a, b)
    run_search(tiny(), str(b), resume=True, progress=False)
    assert _json(a / "hall_of_fame.json") == _json(b / "hall_of_fame.json")
    assert _evaluations(a) == _evaluations(b)  # the last generation's lines were reused, not retrained
    assert _json(a / "final.json") == _json(b / "final.json")
    assert _state(a)["random_state"] == _state(b)["random_state"]


def test_resume_keeps_the_order_of_tied_hall_of_fame_members(tmp_path):
    # seed 3: the hall of fame holds losses of equal validation accuracy at the previous checkpoint
    config = tiny(seed=3)
    a, b = tmp_path / "a", tmp_path / "b"
    run_search(config, str(a), progress=False)
    fits = [r["fitness"] for r in _json(a / "hall_of_fame.json")["hall_of_fame"]]
    assert len(set(fits)) < len(fits)
    _interrupt_before_last_generation(a, b)
    run_search(config, str(b), resume=True, progress=False)
    assert _json(a / "hall_of_fame.json") == _json(b / "hall_of_fame.json")


def test_search_state_round_trip_keeps_hall_of_fame_order(tmp_path):
    config = tiny()
    layout = dict(config.branches)
    first = serial_search(config, tmp_path)
    for i, formula in enumerate([CE, "neg(dot(y, softmax(x)))", "neg(dot(mul(2, y), log(softmax(x))))"]):
        ind = individual_from_formulas(layout, {"cls": formula})
        ind.fitness.values, ind.id, ind.generation = (0.5,), i + 1, 0
        first.hall_of_fame.update([ind])
    state = json.loads(json.dumps(first.state_dict()))
    second = serial_search(config, tmp_path)
    second.load_state(state)
    assert json.loads(json.dumps(second.state_dict()))["hall_of_fame"] == state["hall_of_fame"]


def test_resume_with_a_changed_population_is_refused(run_a, tmp_path):
    b = tmp_path / "b"
    shutil.copytree(run_a[0], b)
    with pytest.raises(GpLossError, match=r"population: 3 -> 4") as err:
        run_search(tiny(population=4), str(b), resume=True, progress=False)
    assert "max_evaluations" in str(err.value)  # says what may change
    assert _json(b / "config.json") == tiny().to_dict()
    assert (b / "evaluations.jsonl").read_text() == (run_a[0] / "evaluations.jsonl").read_text()


def test_a_new_run_into_an_existing_run_is_refused(run_a):
    path = run_a[0]
    before = {p.name: p.read_bytes() for p in path.iterdir() if p.is_file()}
    with pytest.raises(GpLossError, match="already holds a run.*--resume"):
        run_search(tiny(), str(path), progress=False)
    assert {p.name: p.read_bytes() for p in path.iterdir() if p.is_file()} == before


def test_resume_without_a_run_is_refused(tmp_path):
    with pytest.raises(GpLossError, match="nothing to resume"):
        run_search(tiny(), str(tmp_path / "empty"), resume=True, progress=False)


@pytest.mark.slow
def test_multiprocessing_map_gives_the_serial_result(run_a, tmp_path):
    run_search(tiny(), str(tmp_path / "mp"), workers=2, map_kind="multiprocessing", progress=False)
    assert _json(run_a[0] / "hall_of_fame.json") == _json(tmp_path / "mp" / "hall_of_fame.json")
    assert _without_timings(_evaluations(run_a[0])) == _without_timings(_evaluations(tmp_path / "mp"))
    assert _json(run_a[0] / "final.json") == _json(tmp_path / "mp" / "final.json")


def test_make_children_trains_equivalent_siblings_once(tmp_path, monkeypatch):
    config = tiny(p_copy=1.0)  # every aging child is a copy of its parent
    search = serial_search(config, tmp_path)
    search.recorder.run.prepare()
    ce = search.start_individual()
    trainings = []
    real = jobs.evaluate
    monkeypatch.setattr(jobs, "evaluate", lambda job: trainings.append(job) or real(job))
    children = search.make_children([("given", [ce]), ("given", [ce]), ("aging", [ce])])
    assert len(trainings) == 1  # serially, a twin of an earlier sibling is never trained
    assert [c.reused for c in children] == [False, True, True]
    assert len({c.fitness.values for c in children}) == 1
    assert search.evaluations == 1 and search.reused == 2
    assert [r["slot"] for r in search.recorder.read_evaluations()] == [0]
    assert len(search.hall_of_fame) == 1


def test_results_handed_out_longest_first_are_recorded_in_slot_order():
    from gp_loss.evolution.search import _in_slot_order
    order = [2, 0, 3, 1]
    got = list(_in_slot_order(order, iter([{"r": s} for s in order])))
    assert got == [(s, {"r": s}) for s in range(4)]


def test_make_children_wants_given_genomes_first(tmp_path):
    search = serial_search(tiny(), tmp_path)
    ce = search.start_individual()
    with pytest.raises(ValueError, match="given genomes must come first"):
        search.make_children([("aging", [ce]), ("given", [ce])])


def test_the_run_records_where_it_ran_apart_from_its_results(run_a):
    """machine.json names the host and each worker's device; final.json holds results only."""
    machine = _json(run_a[0] / "machine.json")
    assert machine["host"] and machine["workers"] == [f"{machine['host']}: cpu"]
    assert "machine" not in _json(run_a[0] / "final.json")

"""``gp-loss report``, ``export RUN_DIR`` and ``evaluate`` on a tiny finished search."""
import importlib.util
import json

import pytest
import torch

from gp_loss.cli import main
from gp_loss.evolution.config import SearchConfig
from gp_loss.evolution.run_search import run_search
from tests.helpers import assert_user_error

TINY = dict(population=3, max_evaluations=5, offspring_per_generation=2, final_seeds=1, final_top=2,
            task_options={"proxy_epochs": 1, "final_epochs": 1})


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "tiny"
    run_search(SearchConfig(**TINY), str(out), progress=False)
    return out


def test_report_prints_formulas_latex_baselines_funnel_and_plot(run_dir, capsys):
    assert main(["report", str(run_dir)]) == 0
    out = capsys.readouterr().out
    hof = json.loads((run_dir / "hall_of_fame.json").read_text())["hall_of_fame"]
    assert hof[0]["formulas"]["cls"] in out and "LaTeX:" in out
    assert "baselines, validation accuracy (×100): ce" in out
    assert "test accuracy" in out and "filter funnel" in out and "fitness.png" in out
    assert main(["report", "--json", str(run_dir)]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["evaluations"] == 5 and data["final"]["rows"][-1]["name"] == "ce"


def test_export_run_dir_writes_importable_losses(run_dir, tmp_path, capsys):
    target = tmp_path / "best.py"
    assert main(["export", str(run_dir), "--out", str(target), "--top", "1"]) == 0
    assert "top1_cls" in capsys.readouterr().out
    spec = importlib.util.spec_from_file_location("best", target)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    x = torch.randn(4, 10, requires_grad=True)
    y = torch.nn.functional.one_hot(torch.arange(4), 10).float()
    loss = module.top1_cls(x, y, torch.ones_like(y))
    loss.backward()
    assert loss.dim() == 0 and torch.isfinite(loss) and torch.isfinite(x.grad).all()
    assert not hasattr(module, "top2_cls")


def test_run_commands_reject_bad_input(tmp_path, capsys):
    assert main(["report", str(tmp_path / "missing")]) == 2
    assert main(["export", str(tmp_path), "--out", str(tmp_path / "x.py")]) == 2  # no hall of fame
    assert main(["evaluate", "--loss", "nonsense"]) == 2
    assert main(["evaluate", "--loss", "ce", "--seeds", "0"]) == 2
    assert main(["evaluate", "--loss", "ce", "--seeds", "1001"]) == 2  # before any training
    assert main(["evaluate", "--loss", "ce", "--data", str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and "not a run directory" in err and "--seeds must be from 1 to 1000" in err


def test_evaluate_ranks_ce_above_an_inverted_loss(capsys):
    code = main(["evaluate", "--loss", "ce", "--loss", "cls=dot(y, log(softmax(x)))", "--seeds", "1",
                 "--epochs", "2", "--device", "cpu", "--json"])
    assert code == 0
    out = json.loads(capsys.readouterr().out)
    rows = out["rows"]
    assert out["device"] == "cpu" and rows[0]["seeds"] == [1000]  # the final protocol's seeds
    assert rows[0]["loss"] == "ce" and rows[0]["mean"] > 0.5
    assert rows[1]["mean"] < rows[0]["mean"] - 0.3


def test_evaluate_follows_a_searchs_final_protocol(capsys):
    """``--seed S --seeds N`` trains on the seeds of a search's final retraining (S+1000, ...)."""
    from gp_loss.evolution.config import SearchConfig
    assert main(["evaluate", "--loss", "ce", "--seed", "4", "--seeds", "2", "--epochs", "1", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)["rows"]
    assert rows[0]["seeds"] == SearchConfig(seed=4, final_seeds=2).retrain_seeds == [1004, 1005]


@pytest.mark.parametrize("argv, message", [
    (["--task", "nope"], "unknown task 'nope'; known: classification, detection, segmentation, "
                         "instance_segmentation, pose"),
    (["--device", "gpu"], "device 'gpu' is not one of auto, cpu, cuda or cuda:N"),
    (["--seed", "-1"], "--seed must be 0 or more"),
    (["--optimizer", "rmsprop"], "task option optimizer must be one of adam, sgd, got 'rmsprop'"),
    (["--lr", "nan"], "task option lr must be a finite number, got nan"),
])
def test_evaluate_bad_input_is_one_line(capsys, argv, message):
    assert main(["evaluate", "--loss", "ce", *argv]) == 2
    assert capsys.readouterr().err.strip() == f"gp-loss: error: {message}" + (
        ", got -1" if argv[0] == "--seed" else "")


def test_evaluate_under_plain_sgd_shows_a_loss_that_only_adam_could_train(capsys):
    # Divides by the one-hot target: Adam's scale-free steps train it, plain SGD's go to NaN.
    adam_only = "cls=div(div(sub(w, neg(y)), mul(2, softmax(add(3, neg(x))))), y)"
    argv = ["evaluate", "--loss", "ce", "--loss", adam_only, "--seeds", "1", "--epochs", "3", "--json"]
    assert main(argv) == 0
    adam = json.loads(capsys.readouterr().out)["rows"]
    assert main(argv + ["--optimizer", "sgd", "--lr", "0.1"]) == 0
    sgd = json.loads(capsys.readouterr().out)["rows"]
    assert adam[1]["status"] == ["ok"] and adam[1]["mean"] > 0.2  # chance: 0.1
    assert sgd[1]["status"] == ["non-finite"] and sgd[1]["mean"] == 0.0
    assert sgd[0]["status"] == ["ok"] and sgd[0]["mean"] > 0.3  # CE trains under SGD


def _copy(run_dir, tmp_path):
    import shutil
    target = tmp_path / "copy"
    shutil.copytree(run_dir, target)
    return target


def _one_line_error(capsys, argv, needle):
    err = assert_user_error(main(argv), capsys.readouterr().err)
    assert needle in err, err


@pytest.mark.parametrize("text", ["{}", "[]", '{"hall_of_fame": {}}', '{"hall_of_fame": [1]}',
                                  '{"hall_of_fame": [{"rank": 1, "fitness": 0.5, "kinds": {"cls": "cls"}}]}'])
def test_report_and_export_a_bad_hall_of_fame_is_one_line(run_dir, tmp_path, capsys, text):
    run = _copy(run_dir, tmp_path)
    (run / "hall_of_fame.json").write_text(text)
    _one_line_error(capsys, ["report", str(run)], "is not a hall of fame")
    _one_line_error(capsys, ["export", str(run), "--out", str(tmp_path / "x.py")], "is not a hall of fame")
    assert not (tmp_path / "x.py").exists()


@pytest.mark.parametrize("name, text", [("final.json", "[]"), ("final.json", '{"metric": "m", "rows": [{}]}'),
                                        ("baselines.json", "[1]"), ("baselines.json", '{"ce": "high"}')])
def test_report_final_or_baselines_of_the_wrong_shape_is_one_line(run_dir, tmp_path, capsys, name, text):
    run = _copy(run_dir, tmp_path)
    (run / name).write_text(text)
    _one_line_error(capsys, ["report", str(run)], name)


@pytest.mark.parametrize("top", ["-1", "0"])
def test_report_refuses_a_top_below_one(run_dir, capsys, top):
    _one_line_error(capsys, ["report", str(run_dir), "--top", top], "--top must be at least 1")


def _files(path):
    return {p.name: p.read_bytes() for p in path.iterdir()}


def test_report_is_read_only_with_a_corrupt_checkpoint(run_dir, tmp_path, capsys):
    run = _copy(run_dir, tmp_path)
    (run / "checkpoint.json").write_text((run / "checkpoint.json").read_text()[:50])
    before = _files(run)
    assert main(["report", str(run)]) == 0
    out = capsys.readouterr().out
    assert _files(run) == before  # nothing renamed (no checkpoint.corrupt.json), nothing written
    assert "warning:" in out and "checkpoint.json is corrupt" in out


def test_report_shows_the_hall_of_fame_when_both_checkpoints_are_bad(run_dir, tmp_path, capsys):
    run = _copy(run_dir, tmp_path)
    for name in ("checkpoint.json", "checkpoint.prev.json"):
        (run / name).write_text("{truncated")
    before = _files(run)
    assert main(["report", str(run)]) == 0
    out = capsys.readouterr().out
    hof = json.loads((run / "hall_of_fame.json").read_text())["hall_of_fame"]
    assert hof[0]["formulas"]["cls"] in out and "no readable checkpoint" in out
    assert out.count("warning:") == 2 and _files(run) == before


def test_report_json_stays_json_when_a_run_file_holds_nan(run_dir, tmp_path, capsys):
    target = _copy(run_dir, tmp_path)
    (target / "baselines.json").write_text('{"ce": NaN}')
    assert main(["report", "--json", str(target)]) == 0
    report = json.loads(capsys.readouterr().out, parse_constant=lambda c: pytest.fail(f"bare {c} in the JSON"))
    assert report["baselines"] == {"ce": None}

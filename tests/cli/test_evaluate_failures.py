"""``gp-loss evaluate`` where trainings fail: every one failing is an error line and exit 2, never a table of
zeros; a loss that fails beside one that trains shows as failed, with its status."""
import json
import re

from gp_loss.cli import main

NAN_LOSS = "cls=log(neg(softmax(x)))"  # the log of a negative number: NaN at the first step


def test_every_training_failing_is_one_line_and_exit_2(capsys):
    assert main(["evaluate", "--loss", NAN_LOSS, "--seeds", "2", "--epochs", "1", "--device", "cpu"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""  # no table
    assert captured.err.strip() == (
        f"gp-loss: error: every training failed ({NAN_LOSS}, seed 1000: non-finite: loss of branch 'cls' is nan "
        f"at step 0); no score to report: check the losses, the data and the task options (a baseline that fails "
        f"too means the data or the settings cannot be trained)")
    assert main(["evaluate", "--loss", NAN_LOSS, "--seeds", "1", "--epochs", "1", "--json"]) == 2
    assert capsys.readouterr().out == ""


def test_a_failed_loss_beside_one_that_trains_shows_its_status(capsys):
    argv = ["evaluate", "--loss", "ce", "--loss", NAN_LOSS, "--seeds", "1", "--epochs", "1", "--device", "cpu"]
    assert main(argv) == 0
    lines = capsys.readouterr().out.splitlines()
    assert re.fullmatch(r" +\d+\.\d\d ± \d+\.\d\d  ce", lines[1])
    assert lines[2] == (f"         failed  {NAN_LOSS}  (non-finite: loss of branch 'cls' is nan at step 0)")
    assert main(argv + ["--json"]) == 0
    rows = json.loads(capsys.readouterr().out)["rows"]
    assert [r["failed"] for r in rows] == [False, True] and rows[1]["status"] == ["non-finite"]


def test_threads_out_of_range_is_one_line(capsys):
    for bad in ("0", "100000"):
        assert main(["evaluate", "--loss", "ce", "--threads", bad]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and f"--threads must be from 1 to 256, got {bad}" in err


def test_threads_set_the_trainings_torch_threads(capsys, monkeypatch):
    import torch

    from gp_loss.tasks.classification import ClassificationTask

    seen = []
    real = ClassificationTask.final_score

    def final_score(self, genome, seed):
        seen.append(torch.get_num_threads())
        return real(self, genome, seed)

    monkeypatch.setattr(ClassificationTask, "final_score", final_score)
    assert main(["evaluate", "--loss", "ce", "--seeds", "1", "--epochs", "1", "--threads", "2"]) == 0
    assert seen == [2]

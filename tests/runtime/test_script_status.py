"""gp_loss.runtime.script.script_status: every runs/ script's exit statuses and their one-line messages."""
import pytest

from gp_loss.errors import GpLossError
from gp_loss.runtime.parallel import WorkerDied
from gp_loss.runtime.script import script_status


def _raising(error, out=None):
    def body(place):
        place.out = out
        raise error
    return body


def _status(capsys, body):
    code = script_status(body)
    captured = capsys.readouterr()
    return code, captured.err


def test_a_body_that_finishes_gives_its_own_status(capsys):
    assert _status(capsys, lambda place: 0) == (0, "")
    assert _status(capsys, lambda place: 3) == (3, "")


def test_a_user_error_is_one_line_and_status_2(capsys):
    code, err = _status(capsys, _raising(GpLossError("--rounds must be at least 1, got 0")))
    assert code == 2 and err == "error: --rounds must be at least 1, got 0\n"


def test_an_interruption_names_the_run_to_resume_once_it_is_known(capsys):
    assert _status(capsys, _raising(KeyboardInterrupt, "out/run")) == (
        130, "interrupted: continue with --resume out/run\n")
    assert _status(capsys, _raising(KeyboardInterrupt)) == (130, "interrupted\n")


def test_a_dead_worker_is_one_line_with_the_resume_hint_and_status_1(capsys):
    code, err = _status(capsys, _raising(WorkerDied("worker 2 exited with signal 9."), "out/run"))
    assert code == 1 and len(err.splitlines()) == 1 and err.startswith("error: a worker process died")
    assert "worker 2 exited with signal 9. Finished work is kept: continue with --resume out/run" in err
    code, err = _status(capsys, _raising(WorkerDied("lost")))
    assert code == 1 and "--resume" not in err


def test_a_hostile_run_directory_is_shown_escaped(capsys):
    code, err = _status(capsys, _raising(KeyboardInterrupt, "a\x1b]52;c;eA==\x07b"))
    assert code == 130 and "\\x1b]52" in err and "\x1b" not in err and "\x07" not in err


@pytest.mark.parametrize("argv,code", [(["--help"], 0), (["--rounds", "many"], 2)])
def test_argparse_exits_keep_their_status(capsys, argv, code):
    import argparse

    def body(place):
        parser = argparse.ArgumentParser(prog="search")
        parser.add_argument("--rounds", type=int)
        parser.parse_args(argv)
        return 0

    assert script_status(body) == code


def test_a_crash_propagates_for_run_script_to_show():
    with pytest.raises(ZeroDivisionError):
        script_status(lambda place: 1 / 0)

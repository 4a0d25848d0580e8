"""TrainingRun's time limit: CPU time on the CPU, wall time on a GPU, and every training it stops says so."""
import time

import torch

from gp_loss.evolution.run_files import evaluation_record
from gp_loss.tasks.base import TrainingRun, TrainOutcome
from gp_loss.timeout import TOO_SLOW, hit_time_limit


def _spin(seconds: float) -> None:
    start = time.thread_time()
    while time.thread_time() - start < seconds:
        pass


def test_a_training_stopped_by_its_time_limit_is_flagged_in_its_record():
    run = TrainingRun(torch.device("cpu"), time_limit_s=0.01)
    _spin(0.05)
    out = run.stepped()
    assert out.status == TOO_SLOW and out.score == 0.0 and out.hit_time_limit
    assert "CPU time" in out.reason
    record = evaluation_record(out, generation=0, slot=0, evaluation=1, formulas={"cls": "x"}, signature=())
    assert record["hit_time_limit"] is True and hit_time_limit(record)


def test_a_training_within_its_limit_is_not_flagged():
    run = TrainingRun(torch.device("cpu"), time_limit_s=60.0)
    assert run.stepped() is None
    out = run.outcome(0.9)
    assert not out.hit_time_limit and not hit_time_limit(out) and not TrainOutcome(0.5).hit_time_limit


def test_waiting_on_the_cpu_is_not_charged_to_a_training():
    # Wall time past the limit while the thread does nothing, as when other processes hold the
    # cores: on the CPU the limit counts this thread's CPU time, so the training goes on.
    run = TrainingRun(torch.device("cpu"), time_limit_s=0.1)
    time.sleep(0.3)
    assert run.stepped() is None
    assert run.scored({"accuracy": 0.8}, "accuracy").score == 0.8


def test_on_a_gpu_the_limit_counts_wall_time():
    run = TrainingRun(torch.device("cuda"), time_limit_s=0.05)  # (no GPU needed: nothing runs on it)
    time.sleep(0.1)
    out = run.stepped()
    assert out.hit_time_limit and out.status == TOO_SLOW and "CPU time" not in out.reason

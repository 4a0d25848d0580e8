"""time_limit counts CPU time and restores the alarm; load_dependence says when a run's results depend on load."""
import signal
import threading
import time

import pytest

from gp_loss.tasks.base import TrainOutcome
from gp_loss.timeout import TOO_SLOW, TimeLimitExceeded, load_dependence, time_limit


def _spin(seconds: float) -> None:
    start = time.thread_time()
    while time.thread_time() - start < seconds:
        pass


def test_computing_past_the_limit_raises_and_leaves_the_timer_as_it_was():
    before = signal.getsignal(signal.SIGPROF)
    with pytest.raises(TimeLimitExceeded, match="CPU time"):
        with time_limit(0.05):
            _spin(5.0)
    assert signal.getsignal(signal.SIGPROF) == before and signal.getitimer(signal.ITIMER_PROF) == (0.0, 0.0)


def test_waiting_past_the_limit_does_not_raise():
    with time_limit(0.05):
        time.sleep(0.2)


def test_another_threads_cpu_time_is_not_charged():
    # The process's CPU timer fires early while a second thread computes: the limit is this thread's.
    stop = threading.Event()
    busy = threading.Thread(target=lambda: [None for _ in iter(stop.is_set, True)], daemon=True)
    busy.start()
    try:
        with time_limit(0.1):
            time.sleep(0.4)
    finally:
        stop.set()
        busy.join()


def test_outside_the_main_thread_an_overrun_shows_at_the_end():
    raised = []

    def body():
        try:
            with time_limit(0.02):
                _spin(0.05)
        except TimeLimitExceeded as err:
            raised.append(err)

    t = threading.Thread(target=body)
    t.start()
    t.join()
    assert len(raised) == 1


def _record(status="ok", **extra):
    return {"evaluation": 1, "fitness": 0.0 if status == TOO_SLOW else 0.9, "status": status, **extra}


def test_load_dependence_is_none_when_no_limit_stopped_anything():
    assert load_dependence([_record(), _record("non-finite"), TrainOutcome(0.9)], 0) is None
    assert load_dependence() is None


def test_load_dependence_counts_proxies_and_candidates():
    records = [_record(), _record(TOO_SLOW, hit_time_limit=True), _record(TOO_SLOW, hit_time_limit=True),
               TrainOutcome(0.0, TOO_SLOW, hit_time_limit=True),
               _record(TOO_SLOW)]  # a record written before the flag: its status says it
    text = load_dependence(records, candidates_too_slow=12)
    assert text.startswith("4 proxy trainings hit the time limit")
    assert "12 candidates were rejected as too slow" in text and "depend on the machine's load" in text


def test_load_dependence_in_the_singular_and_for_one_cause_alone():
    assert load_dependence([], 1).startswith("1 candidate was rejected as too slow by the filters")
    text = load_dependence([_record(TOO_SLOW, hit_time_limit=True)])
    assert text.startswith("1 proxy training hit the time limit") and "candidate" not in text

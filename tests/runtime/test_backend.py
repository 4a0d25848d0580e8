"""The Backend interface: which backend each --map resolves to, the checks made before anything starts, and
the registry every engine is listed in."""
import inspect

import pytest

from gp_loss.errors import GpLossError
from gp_loss.runtime import scoop_backend
from gp_loss.runtime.backend import Backend, BackendOptions, WorkerInfo, missing_workers
from gp_loss.runtime.local_backends import ProcessBackend, SerialBackend
from gp_loss.runtime.parallel import BACKENDS, MAPS, backend_class, check_backend, open_backend
from gp_loss.runtime.ray_backend import RayBackend
from gp_loss.runtime.scoop_backend import ScoopBackend

ADDRESS = "127.0.0.1:6379"


def _square(x):
    return x * x


@pytest.fixture(autouse=True)
def outside_scoop(monkeypatch):
    """Resolution as in a plain ``python script.py``, even if this test process was started under SCOOP."""
    monkeypatch.setattr(scoop_backend, "scoop_running", lambda: False)


def test_every_registered_backend_is_a_concrete_backend_named_as_its_map():
    assert BACKENDS and len(set(MAPS)) == len(MAPS)
    for name, cls in BACKENDS.items():
        assert issubclass(cls, Backend) and not inspect.isabstract(cls)
        assert cls.name == name
    assert len({cls.name for cls in BACKENDS.values()}) == len(BACKENDS)
    assert set(MAPS) == {"auto", *BACKENDS}


@pytest.mark.parametrize("options, expected", [
    (BackendOptions(), SerialBackend),
    (BackendOptions(workers=1), SerialBackend),
    (BackendOptions(workers=2), ProcessBackend),
    (BackendOptions(workers_per_gpu=2), ProcessBackend),  # one worker per GPU at least: processes
    (BackendOptions(workers=1, address=ADDRESS), RayBackend),
    (BackendOptions(workers=4, address=ADDRESS), RayBackend),
])
def test_auto_resolves_in_order_serial_multiprocessing_and_ray_given_an_address(options, expected):
    assert backend_class("auto", options) is expected  # resolution only: nothing is checked or started


def test_auto_picks_scoop_first_under_python_m_scoop(monkeypatch):
    monkeypatch.setattr(scoop_backend, "scoop_running", lambda: True)
    assert backend_class("auto", BackendOptions(workers=1)) is ScoopBackend
    assert backend_class("auto", BackendOptions(workers=4, address=ADDRESS)) is ScoopBackend


def test_check_backend_returns_the_class_it_resolved_to():
    assert check_backend("auto", 1, "cpu") is SerialBackend
    assert check_backend("auto", 2, "cpu") is ProcessBackend
    assert check_backend("serial", 2, "cpu") is SerialBackend  # serial runs one job at a time, whatever --workers


def test_a_ray_address_with_another_map_is_a_user_error():
    for kind in ("multiprocessing", "serial"):
        with pytest.raises(GpLossError, match=f"^--ray-address joins a Ray cluster: give --map ray "
                                              f"\\(or drop --map {kind}\\)$"):
            check_backend(kind, 2, "cpu", address=ADDRESS)


def test_an_unknown_map_lists_the_choices():
    with pytest.raises(GpLossError) as err:
        check_backend("threads", 2, "cpu")
    assert str(err.value) == f"--map must be one of {', '.join(MAPS)}, got 'threads'"
    assert all(name in str(err.value) for name in BACKENDS)


def test_scoop_outside_python_m_scoop_is_a_user_error():
    with pytest.raises(GpLossError, match=r"^--map scoop needs the script started as `python -m scoop -n N"):
        check_backend("scoop", 1, "cpu")


def test_worker_processes_need_a_job_that_pickles_the_serial_backend_does_not():
    with open_backend("serial") as serial:
        assert serial.name == "serial" and not serial.needs_pickle
        serial.check_job(lambda x: x)
    with open_backend("multiprocessing", 2) as pool:  # no worker starts before its first job
        assert pool.name == "multiprocessing" and pool.needs_pickle and pool.workers == 2
        pool.check_job(_square)
        with pytest.raises(GpLossError, match=r"^with several workers the objective must pickle \(a top-level "
                                              r"function or an instance of a top-level class\): "):
            pool.check_job(lambda x: x)


def _info(pid, host):
    return WorkerInfo(pid=pid, host=host, device="cpu")


def test_missing_workers_ends_with_the_backends_hint(monkeypatch):
    monkeypatch.setattr("gp_loss.runtime.backend.host_label", lambda: "origin")
    hint = "`ray status` lists the nodes that joined"
    assert missing_workers([_info(1, "origin"), _info(2, "h2")], 2, 1.0, hint=hint) is None
    line = missing_workers([_info(1, "origin")], 3, 4.0, hint=hint)
    assert line == f"only 1 of 3 workers answered within 4 s (1 on origin); the search runs on those. {hint}"
    line = missing_workers([_info(1, "origin")], 3, 4.0, hosts=[("localhost", 1), ("h9", 2)], hint=hint)
    assert line.endswith(f"the search runs on those. No worker answered from h9 (2 asked). {hint}")
    assert missing_workers([_info(1, "origin")], 3, 4.0).endswith("the search runs on those")  # no hint

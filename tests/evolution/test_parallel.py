"""Mapper: choice of backend, clear errors, lazy ordered serial map."""
import pytest

from gp_loss.errors import GpLossError
from gp_loss.evolution.parallel import Mapper, scoop_running


def test_bad_kind_and_workers_are_user_errors():
    with pytest.raises(GpLossError, match="--map"):
        Mapper("threads")
    with pytest.raises(GpLossError, match="--workers"):
        Mapper("serial", workers=0)


def test_scoop_needs_scoop():
    assert not scoop_running()
    with pytest.raises(GpLossError, match="python -m scoop"):
        Mapper("scoop")


def test_auto_is_serial_with_one_worker():
    with Mapper("auto", workers=1) as m:
        assert (m.kind, m.workers) == ("serial", 1)


def test_serial_map_is_lazy_and_ordered():
    calls = []

    def fn(v):
        calls.append(v)
        return v * 10

    m = Mapper("serial")
    results = m(fn, iter([3, 1, 2]))
    assert calls == []
    assert next(results) == 30 and calls == [3]
    assert list(results) == [10, 20]
    m.close()

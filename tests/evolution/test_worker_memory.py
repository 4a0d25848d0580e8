"""K workers sharing a GPU each cap their share of its memory at 1/K as they start (no GPU needed: torch.cuda
is stood in for)."""
import operator

import pytest
import torch

from gp_loss.evolution import worker
from gp_loss.evolution.config import SearchConfig
from gp_loss.runtime import backend
from gp_loss.runtime.device import share_gpu_memory
from gp_loss.runtime.parallel import gpu_sharers, open_backend


@pytest.fixture
def gpus(monkeypatch):
    """``set(n)``: torch sees ``n`` GPUs; returns the calls to ``set_per_process_memory_fraction``."""
    calls = []
    monkeypatch.setattr(torch.cuda, "set_per_process_memory_fraction",
                        lambda fraction, device=None: calls.append((fraction, torch.device(device))))

    def set_count(n):
        monkeypatch.setattr(torch.cuda, "is_available", lambda: n > 0)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: n)
        return calls
    return set_count


def _start_worker(monkeypatch, device, pool):
    """What a worker does as it starts: build its context's task (the task itself stood in for)."""
    monkeypatch.setattr(backend, "_SHARERS", pool)
    built = []
    monkeypatch.setattr(worker, "make_task", lambda name, options, dev: built.append(dev) or "task")
    ctx = worker.WorkerContext(SearchConfig(task="classification", device=device))
    assert ctx.task == "task"
    return built[0]


def test_four_workers_on_one_gpu_each_take_a_quarter_of_its_memory(monkeypatch, gpus):
    calls = gpus(1)
    device = _start_worker(monkeypatch, "cuda:0", 4)
    assert device == torch.device("cuda", 0)
    assert calls == [(0.25, torch.device("cuda", 0))]


def test_workers_spread_over_gpus_share_each_gpu_with_the_others_on_it(monkeypatch, gpus):
    calls = gpus(2)
    _start_worker(monkeypatch, "cuda:1", 2)  # --workers 2 on one GPU of two: both on cuda:1
    assert calls == [(0.5, torch.device("cuda", 1))]
    assert share_gpu_memory(torch.device("cuda", 0), "cuda", 8) == 0.25  # --workers-per-gpu 4 on 2 GPUs
    assert share_gpu_memory(torch.device("cuda", 0), "cuda", 3) == 0.5   # 2 on one GPU, 1 on the other


def test_nothing_is_capped_for_one_worker_per_gpu_the_cpu_or_an_unknown_count(monkeypatch, gpus):
    calls = gpus(1)
    _start_worker(monkeypatch, "cuda:0", None)  # the serial map (or SCOOP): the count is not known
    _start_worker(monkeypatch, "cuda:0", 1)
    assert share_gpu_memory(torch.device("cpu"), "cpu", 4) is None
    assert calls == []


def test_a_pool_worker_knows_its_pool_size():
    assert gpu_sharers() is None  # this process is no pool's worker
    with open_backend("multiprocessing", workers=2) as mapper:
        assert list(mapper(operator.call, [gpu_sharers, gpu_sharers])) == [2, 2]

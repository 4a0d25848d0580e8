"""The device setting: checked up front, one GPU per worker slot, slots unique among live processes."""
import subprocess
import sys

import pytest
import torch

from gp_loss.errors import GpLossError
from gp_loss.runtime import device as dev


@pytest.mark.parametrize("spec", ["gpu", "cuda:", "cpu:0", "auto:1", "CUDA", "", None, 0, "cuda:-1"])
def test_malformed_settings_are_named(spec):
    with pytest.raises(GpLossError, match=r"is not one of auto, cpu, cuda or cuda:N"):
        dev.check_device(spec)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")
@pytest.mark.parametrize("spec", ["cuda", "cuda:0", "cuda:7"])
def test_cuda_without_a_gpu_is_refused(spec):
    with pytest.raises(GpLossError, match="CUDA is not available here"):
        dev.check_device(spec)


def test_cpu_and_auto_resolve_to_the_cpu_without_a_gpu():
    assert dev.resolve_device("cpu") == torch.device("cpu")
    if not torch.cuda.is_available():
        assert dev.resolve_device("auto") == torch.device("cpu")
        assert dev.gpu_count("auto") == 0


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_settings_on_a_gpu_machine():
    n = torch.cuda.device_count()
    dev.check_device("cuda:0")
    with pytest.raises(GpLossError, match=f"has {n} GPU"):
        dev.check_device(f"cuda:{n}")
    assert dev.gpu_count("cuda:0") == 1 and dev.gpu_count("cuda") == n
    assert dev.resolve_device("cuda:0") == torch.device("cuda", 0)
    assert dev.resolve_device("cuda").index == dev.worker_slot() % n


_CLAIM = """
import sys, time
from gp_loss.runtime.device import worker_slot
print(worker_slot(sys.argv[1]), flush=True)
time.sleep(float(sys.argv[2]))
"""


def test_live_processes_hold_distinct_consecutive_slots_and_a_dead_one_frees_its_own(tmp_path):
    procs = [subprocess.Popen([sys.executable, "-c", _CLAIM, str(tmp_path), "30"], stdout=subprocess.PIPE,
                              text=True) for _ in range(3)]
    try:
        slots = [int(p.stdout.readline()) for p in procs]
        assert sorted(slots) == [0, 1, 2]
        procs[1].kill()  # its slot is free again, even after a kill, and it is now the lowest free one
        procs[1].wait()
        again = subprocess.run([sys.executable, "-c", _CLAIM, str(tmp_path), "0"], capture_output=True,
                               text=True, check=True)
        assert int(again.stdout) == slots[1]
    finally:
        for p in procs:
            p.kill()
            p.wait()


def test_deterministic_mode_switches_torch_and_back():
    dev.set_deterministic(True)
    try:
        assert torch.are_deterministic_algorithms_enabled()
    finally:
        dev.set_deterministic(False)
    assert not torch.are_deterministic_algorithms_enabled()


def test_machine_facts_name_the_host_and_its_devices():
    import json
    import os

    from gp_loss.runtime.device import machine_facts
    facts = machine_facts()
    assert {"host", "platform", "python", "torch_version", "cpu", "gpu"} <= set(facts)
    assert facts["cpu"] == os.cpu_count() and isinstance(facts["gpu"], list)
    json.dumps(facts)  # it goes into final.json

"""Out of memory during a proxy training fails that candidate alone, says so, and leaves the next training whole."""
import pytest
import torch

from gp_loss.evolution import jobs
from gp_loss.evolution.config import SearchConfig
from gp_loss.evolution.worker import _CONTEXTS
from gp_loss.language.genome import Genome
from gp_loss.models.conv_net import ConvNet
from gp_loss.tasks import base
from gp_loss.tasks.base import TrainingRun, out_of_memory, release_memory
from gp_loss.tasks.classification import ClassificationOptions, ClassificationTask

CE = Genome.from_formulas([("cls", "cls", "neg(dot(y, log(softmax(x))))")])


@pytest.fixture(scope="module")
def task():
    return ClassificationTask(ClassificationOptions(proxy_epochs=1, final_epochs=1))


def _forward_raising_once(monkeypatch, error):
    """Make the next ConvNet forward pass raise ``error``; the ones after run as usual."""
    forward = ConvNet.forward
    raised = []

    def failing(self, x):
        if not raised:
            raised.append(True)
            raise error
        return forward(self, x)

    monkeypatch.setattr(ConvNet, "forward", failing)
    return raised


@pytest.mark.parametrize("error", [
    torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"),
    MemoryError(),
    RuntimeError("[enforce fail at alloc_cpu.cpp:117] . DefaultCPUAllocator: can't allocate memory: you tried "
                 "to allocate 4294967296 bytes"),
])
def test_out_of_memory_in_the_forward_pass_fails_that_training_and_the_next_one_works(task, monkeypatch, error):
    released = []
    monkeypatch.setattr(base, "release_memory", lambda err, device: released.append((err, device)))
    raised = _forward_raising_once(monkeypatch, error)
    failed = task.proxy_fitness(CE, seed=0)
    assert raised and failed.failed and failed.status == "error" and failed.score == 0.0
    assert failed.reason.startswith("out of memory: ") and type(error).__name__ in failed.reason
    assert released == [(error, task.device)]
    again = task.proxy_fitness(CE, seed=0)
    assert again.status == "ok" and again.score > 0.1 and again.steps > 0


def test_other_errors_are_not_out_of_memory():
    assert not out_of_memory(RuntimeError("mat1 and mat2 shapes cannot be multiplied"))
    assert not out_of_memory(ValueError("out of memory"))  # only the allocators' error types say so
    assert out_of_memory(torch.cuda.OutOfMemoryError("CUDA out of memory"))
    outcome = TrainingRun(torch.device("cpu")).failed(ZeroDivisionError("float division by zero"))
    assert outcome.reason == "ZeroDivisionError: float division by zero"


def test_release_memory_empties_the_cuda_cache_and_clears_the_failed_frames(monkeypatch):
    emptied = []
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: emptied.append(True))

    def step():
        activations = torch.ones(1000)  # held by this frame while the traceback lives
        raise torch.OutOfMemoryError(f"CUDA out of memory ({activations.numel()})")

    try:
        step()
    except torch.OutOfMemoryError as err:
        frame = err.__traceback__.tb_next.tb_frame
        assert "activations" in frame.f_locals
        release_memory(err, torch.device("cuda", 0))
        assert frame.f_locals == {}
    assert emptied == [True]
    release_memory(None, torch.device("cpu"))  # nothing cached on the CPU to give back
    assert emptied == [True]


def test_out_of_memory_outside_the_training_loop_is_the_candidate_failure_too(monkeypatch):
    # The classification task evaluates after its loop: an error there escapes the task, and the job catches it.
    config = SearchConfig(task="classification", task_options={"proxy_epochs": 1, "final_epochs": 1}).to_dict()
    _CONTEXTS.clear()

    def accuracy(self, model, split):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 8.00 GiB")

    monkeypatch.setattr(ClassificationTask, "accuracy", accuracy)
    job = jobs.TrainJob(config=config, formulas={"cls": "neg(dot(y, log(softmax(x))))"}, seed=0)
    outcome = jobs.evaluate(job)
    assert outcome.status == "error" and outcome.reason.startswith("out of memory: OutOfMemoryError: CUDA out")
    monkeypatch.undo()
    assert jobs.evaluate(job).status == "ok"
    _CONTEXTS.clear()


def test_a_training_records_its_peak_memory(task):
    outcome = task.proxy_fitness(CE, seed=0)
    assert outcome.peak_memory_mib is not None and outcome.peak_memory_mib > 0
    assert outcome.to_dict()["peak_memory_mib"] == outcome.peak_memory_mib

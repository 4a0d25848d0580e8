"""Where training runs: the ``device`` setting, checked up front and resolved per worker.

Settings: ``auto`` (CUDA when present, else the CPU), ``cpu``, ``cuda`` (every
visible GPU) and ``cuda:N`` (that GPU only).

With several GPUs, worker ``i`` trains on GPU ``i mod n``. Worker processes
have no index of their own under multiprocessing or SCOOP, so each one claims
the lowest free slot of this machine the first time it needs a device: slot
``k`` is an advisory lock on a file in the temporary directory, held until the
process exits (the operating system releases it even after ``kill -9``). The
live workers of a host therefore hold distinct, consecutive slots and spread
evenly over its GPUs; ``K`` workers per GPU put ``K`` proxy trainings on each.

Across hosts (SCOOP with a hostfile) every worker resolves the setting on its
own host: its slot is its local rank there (the slot directory is named after
the host, so a temporary directory shared over the network still gives each
host its own ranks), ``n`` is that host's GPU count, and ``cuda:N`` is checked
against that host's GPUs, never the origin's.

K workers sharing a GPU each cap their share of its memory at 1/K
(:func:`share_gpu_memory`, called as a worker builds its task): a worker whose proxy
needs more gets an out-of-memory error, which fails that candidate alone, instead of
taking the memory the other K - 1 trainings need.

Only proxy training uses the device. The filters run on the CPU: their
tensors are a few hundred numbers, where a GPU launch costs more than the work.
"""
from __future__ import annotations

import os
import re
import socket
import tempfile
from pathlib import Path

import torch

from gp_loss.errors import GpLossError

DEVICE_CHOICES = "auto, cpu, cuda or cuda:N"
_PATTERN = re.compile(r"(auto|cpu|cuda)(?::(\d{1,4}))?")


def _parse(spec: object) -> tuple[str, int | None]:
    """``(kind, index)`` of a device setting, or a :class:`GpLossError` naming it."""
    match = _PATTERN.fullmatch(spec) if isinstance(spec, str) else None
    if match is None or (match.group(2) is not None and match.group(1) != "cuda"):
        raise GpLossError(f"device {spec!r} is not one of {DEVICE_CHOICES}")
    return match.group(1), None if match.group(2) is None else int(match.group(2))


def check_device(spec: object) -> None:
    """Raise :class:`GpLossError` if ``spec`` is malformed or names a GPU this machine lacks."""
    kind, index = _parse(spec)
    if kind != "cuda":
        return
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if count == 0:
        raise GpLossError(f"device {spec!r}: CUDA is not available here (torch {torch.__version__} sees no GPU); "
                          f"use --device cpu or auto")
    if index is not None and index >= count:
        raise GpLossError(f"device {spec!r}: this machine has {count} GPU(s), cuda:0 to cuda:{count - 1}")


def gpu_count(spec: str) -> int:
    """How many GPUs ``spec`` spreads the workers over (0 for the CPU)."""
    kind, index = _parse(spec)
    if kind == "cpu" or not torch.cuda.is_available():
        return 0
    return 1 if index is not None else torch.cuda.device_count()


def gpu_memories(spec: str) -> list[int]:
    """Total memory in bytes of each GPU ``spec`` spreads the workers over (empty for the CPU or when unknown)."""
    _, index = _parse(spec)
    if gpu_count(spec) == 0:
        return []
    indices = [index] if index is not None else range(torch.cuda.device_count())
    try:
        return [torch.cuda.get_device_properties(i).total_memory for i in indices]
    except (RuntimeError, AssertionError):  # a driver that lists GPUs it cannot describe: no GPU bound
        return []


def resolve_device(spec: str) -> torch.device:
    """The device this process trains on under setting ``spec`` (claims a worker slot for GPUs)."""
    kind, index = _parse(spec)
    if kind == "cuda":  # checked up front, but a SCOOP worker may run on another host
        check_device(spec)
    n = gpu_count(spec)
    if n == 0:
        return torch.device("cpu")
    if index is not None:
        return torch.device("cuda", index)
    return torch.device("cuda", worker_slot() % n)


def share_gpu_memory(device: torch.device, spec: str, workers: int | None) -> float | None:
    """Cap this worker's share of ``device``'s memory when the ``workers`` worker processes of its
    search share the GPUs of ``spec``; the fraction set, or ``None`` where nothing is capped.

    Workers spread over the GPUs as :func:`resolve_device` says, so K = ceil(workers / GPUs) share one
    (``--workers-per-gpu K``: exactly K), and each may allocate 1/K of its memory
    (``torch.cuda.set_per_process_memory_fraction``; beyond it the caching allocator raises
    ``torch.OutOfMemoryError`` in that worker). Nothing is capped on the CPU, for one worker per
    GPU, or where the count is unknown (``workers`` ``None``: the serial map, SCOOP). The multiprocessing
    and Ray backends tell their workers the count (:func:`gp_loss.runtime.backend.gpu_sharers`).
    """
    if device.type != "cuda" or not workers:
        return None
    per_gpu = -(-workers // max(1, gpu_count(spec)))
    if per_gpu < 2:
        return None
    fraction = 1.0 / per_gpu
    torch.cuda.set_per_process_memory_fraction(fraction, device)
    return fraction


def _host_tag() -> str:
    """This host's name, safe in a file name (slots are per host even in a shared temporary directory)."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", socket.gethostname()) or "host"


def claimed_slot() -> int | None:
    """The slot this process claimed in the default directory (:func:`resolve_device` on a GPU), or ``None``."""
    root = _default_slot_root()
    return _SLOTS[root][0] if root in _SLOTS else None


def _default_slot_root() -> Path:
    uid = os.getuid() if hasattr(os, "getuid") else 0
    return Path(tempfile.gettempdir()) / f"gp-loss-worker-slots-{uid}-{_host_tag()}"


_SLOTS: dict[Path, tuple[int, object]] = {}  # directory -> (this process's slot, its open locked file)


def worker_slot(directory: str | os.PathLike | None = None) -> int:
    """This process's slot in ``directory`` (default: one per user and host in the temporary directory).

    The lowest slot no live process holds, claimed on the first call and kept
    for the life of the process.
    """
    try:
        import fcntl
    except ImportError:  # no advisory locks (Windows): every process is slot 0
        return 0
    root = Path(directory) if directory else _default_slot_root()
    if root not in _SLOTS:
        root.mkdir(parents=True, exist_ok=True)
        k = 0
        while True:
            f = open(root / str(k), "a")
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError:
                f.close()
                k += 1
        _SLOTS[root] = (k, f)  # the file stays open: the lock lives as long as the process
    return _SLOTS[root][0]


def deterministic_error(err: BaseException) -> GpLossError | None:
    """The one-line error to stop a search with, if ``err`` is torch refusing a kernel in deterministic mode.

    Such a kernel belongs to the task's model, not to a candidate loss: every
    training would fail the same way, so it must not be scored as a bad loss.
    """
    if isinstance(err, RuntimeError) and torch.are_deterministic_algorithms_enabled() \
            and "deterministic" in str(err):
        return GpLossError(f"--deterministic: {str(err).splitlines()[0]} Run without --deterministic "
                           f"or on another device.")
    return None


def set_deterministic(on: bool) -> None:
    """Ask torch for deterministic kernels (CUDA: cuBLAS needs a fixed workspace, set before it starts)."""
    if on:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.backends.cudnn.benchmark = False
    torch.use_deterministic_algorithms(on)


def machine_facts() -> dict:
    """What this machine is, for a run's record: host, platform, Python, torch, CPU cores, GPUs."""
    import os
    import platform
    import socket

    gpus = ([torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
            if torch.cuda.is_available() else [])
    return {"host": socket.gethostname(), "platform": platform.platform(), "python": platform.python_version(),
            "torch_version": torch.__version__, "cpu": os.cpu_count(),
            # The CPU kernels torch picked (AVX2, AVX512, ...): floating-point sums, and so results, differ
            # between them, which is why bit-identical results hold on one instruction set.
            "cpu_capability": torch.backends.cpu.get_cpu_capability(), "gpu": gpus}

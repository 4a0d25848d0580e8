"""How many worker processes this machine can hold: checked before a search creates anything.

Every worker is a whole Python process with torch and a task loaded, so a count
beyond what the machine holds does not run faster: it starts processes until
the out-of-memory killer ends the search, and possibly other jobs beside it.
The bound is the smallest of

* memory: what the system (and this process's cgroup, in a container) still has
  available, over :data:`WORKER_MEMORY_BYTES`;
* CPU: :data:`WORKERS_PER_CPU` per core this process may run on;
* GPU (a device setting that trains on GPUs): each GPU's memory over
  :data:`GPU_WORKER_BYTES`, summed over the GPUs the setting spreads workers on.

One worker is always allowed: it is the least a search can run with.
"""
from __future__ import annotations

import os
from pathlib import Path

from gp_loss.errors import GpLossError

# One worker's resident memory, rounded up. A worker of each built-in task at its defaults
# (classification, detection, segmentation; CPU training), measured while it trains a proxy,
# holds a little less: about half of it its own, the rest torch's libraries that workers
# share. Rounded up because larger images or models take more: the bound says what
# certainly cannot fit, not what certainly will.
WORKER_MEMORY_BYTES = 1 << 30

# Workers per CPU core. Proxies on the CPU gain nothing from more processes than cores (they
# only take turns); a few per core still leave room for workers that wait on a GPU or on I/O.
WORKERS_PER_CPU = 4

# One GPU worker's least GPU memory: its CUDA context (a few hundred MiB) and a small
# proxy's weights, gradients and activations.
GPU_WORKER_BYTES = 1 << 30

_GIB = float(1 << 30)


def usable_cpus() -> int:
    """CPU cores this process may run on (its affinity mask where the system has one)."""
    if hasattr(os, "sched_getaffinity"):
        try:
            return max(1, len(os.sched_getaffinity(0)))
        except OSError:
            pass
    return os.cpu_count() or 1


def _meminfo_available() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:  # free pages only (less than what could be reclaimed): a cautious figure where /proc is missing
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


# cgroup v2 and v1 files: (the limit, the usage, the usage's reclaimable page cache in memory.stat)
_CGROUP_FILES = {2: ("memory.max", "memory.current", "inactive_file"),
                 1: ("memory.limit_in_bytes", "memory.usage_in_bytes", "total_inactive_file")}


def _cgroup_available(cgroup_list: Path = Path("/proc/self/cgroup"),
                      mount: Path = Path("/sys/fs/cgroup")) -> int | None:
    """What this process's cgroup may still allocate under its memory limit, or ``None`` with no limit.

    Usage less its inactive page cache (the working set a container's runtime reports): cache
    the kernel reclaims before it kills, which a container that has read its data set is full of.
    """
    try:
        lines = cgroup_list.read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        _, controllers, path = (line.split(":", 2) + ["", ""])[:3]
        if controllers == "":
            version, root = 2, mount
        elif "memory" in controllers.split(","):
            version, root = 1, mount / "memory"
        else:
            continue
        limit_file, usage_file, cache_key = _CGROUP_FILES[version]
        for group in (root / path.strip().lstrip("/"), root):  # a container often sees its own group as the root
            try:
                limit = (group / limit_file).read_text().strip()
                if limit == "max" or int(limit) >= 1 << 60:  # no limit here (v1 writes none as a huge number)
                    break
                usage = int((group / usage_file).read_text())
                stat = dict(entry.split() for entry in (group / "memory.stat").read_text().splitlines())
                return max(0, int(limit) - usage + int(stat.get(cache_key, 0)))
            except (OSError, ValueError):
                continue
    return None


def available_memory() -> tuple[int, str] | None:
    """Bytes new processes can still take here, and what the figure is; ``None`` where unknown."""
    found = []
    system = _meminfo_available()
    if system is not None:
        found.append((system, f"{system / _GIB:.1f} GiB of memory available"))
    group = _cgroup_available()
    if group is not None:
        found.append((group, f"{group / _GIB:.1f} GiB left under this process's cgroup memory limit"))
    return min(found) if found else None


def worker_limit(device: str | None = None) -> tuple[int, str]:
    """The most worker processes this machine can hold, and why (the tightest bound).

    ``device``: the training device setting (see :mod:`gp_loss.runtime.device`);
    ``None`` when unknown, which leaves out the GPU bound.
    """
    cpus = usable_cpus()
    bounds = [(WORKERS_PER_CPU * cpus, f"{WORKERS_PER_CPU} per CPU core, and this process may use {cpus} "
                                       f"core(s); more only take turns on the same cores")]
    memory = available_memory()
    if memory is not None:
        bounds.append((memory[0] // WORKER_MEMORY_BYTES,
                       f"{memory[1]}, and a worker takes about {WORKER_MEMORY_BYTES / _GIB:.0f} GiB"))
    if device is not None:
        from gp_loss.runtime.device import gpu_memories
        gpus = gpu_memories(device)
        if gpus:
            bounds.append((sum(m // GPU_WORKER_BYTES for m in gpus),
                           f"{len(gpus)} GPU(s) of {min(gpus) / _GIB:.0f} GiB, and a GPU worker takes at "
                           f"least {GPU_WORKER_BYTES / _GIB:.0f} GiB of it"))
    limit, reason = min(bounds, key=lambda b: b[0])
    return max(1, limit), reason


def check_worker_count(n: int, device: str | None = None, flag: str = "--workers", per: int = 1) -> None:
    """Raise :class:`GpLossError` unless ``n`` worker processes are at least 1 and fit this machine.

    ``device``: the training device setting, ``None`` if unknown. ``flag``: the option
    the count came from, named in the message; it gives ``per`` workers per unit
    (``--workers-per-gpu K`` on G GPUs: ``per`` = G).
    """
    if n < 1:
        raise GpLossError(f"{flag} must be at least 1, got {n}")
    limit, reason = worker_limit(device)
    if n > limit:
        given = f"{flag} {n // per}" + (f" ({n} workers)" if per > 1 else "")
        raise GpLossError(f"{given} is more worker processes than this machine can hold: at most {limit} "
                          f"({reason}). Give {flag} {max(1, limit // per)} or fewer")

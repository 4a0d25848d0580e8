"""Parameterized AP Loss on the detectors: the gradient-blocking ablation and the cost of a step.

**Ablation** (Tao et al., NeurIPS 2021, appendix Table 1: RetinaNet 0.8 AP without blocking the
rank's H1 gradient, 40.5 AP with it). The detection task (:class:`~gp_loss.tasks.detection.task.DetectionTask`,
built-in digit canvases, ``small`` backbone by default) trains a detector from the same seed for
the same steps under each loss (``pap``: identity substitutions, H1 blocked; ``pap_unblocked``:
the same without blocking; any other baseline name may be added for reference, e.g.
``fl_giou``) and prints the validation COCO metrics side by side.

**Cost**: one detector, one fixed batch of canvases (:func:`gp_loss.bench.detection.canvas_batch`),
training steps (forward with targets, the sum of the loss terms, backward, an SGD step)
alternated between PAP-Loss (identity) and Focal + GIoU (the ``fl_giou`` baseline) from the
same weights and RNG state, as :mod:`gp_loss.bench.detection` times the genome against
torchvision. Reported: the median ms per step of each and the median of the per-pair ratios;
the peak memory of one more (untimed) step of each: on CUDA ``torch.cuda.max_memory_allocated``
minus what was allocated before the step; on the CPU the same quantity from a dispatch mode
that adds up the bytes of every tensor storage the step's operators create and subtracts them
when the storage is freed (``tracemalloc`` does not see PyTorch's CPU allocator, and the
process's maximum resident size cannot be reset between the two losses). Both count the
tensors a step allocates on top of the weights, batch and optimizer state that exist before it.
"""
from __future__ import annotations

import copy
import math
import statistics
import time
import weakref

import torch

from gp_loss.errors import GpLossError
from gp_loss.runtime.device import check_device, resolve_device

ABLATION_LOSSES = ("pap", "pap_unblocked")
REFERENCE = "fl_giou"
LEARNING_RATE = 0.01
METRIC_COLUMNS = ("AP", "AP50", "AP75")


# ----------------------------------------------------------------------------- ablation

def check_ablation_options(model: str, backbone: str, size: int, canvases: int, max_digits: int, batch: int,
                           steps: int, warmup: int, losses: tuple[str, ...]) -> dict:
    """The checked detection task options of the ablation (one-line :class:`GpLossError` otherwise)."""
    from gp_loss.tasks.detection.models import DETECTORS
    from gp_loss.tasks.detection.task import DetectionOptions

    options = {"model": model, "backbone": backbone, "image_size": size, "canvases": canvases,
               "max_digits": max_digits, "batch_size": batch, "proxy_steps": steps, "warmup_steps": warmup,
               "eval_batch_size": 32}
    DetectionOptions.from_dict(options).check()
    if not losses:
        raise GpLossError("--losses: give at least one loss, e.g. pap,pap_unblocked")
    baselines = DETECTORS[model].baselines  # (the options' check has refused an unknown model)
    unknown = [name for name in losses if name not in baselines]
    if unknown:
        raise GpLossError(f"--losses: unknown baseline {unknown[0]!r} for {model}; "
                          f"known: {', '.join(baselines)}")
    return options


def bench_pap_ablation(model: str = "retinanet", backbone: str = "small", size: int = 64, canvases: int = 128,
                       max_digits: int = 1, batch: int = 8, steps: int = 200, warmup: int = 20,
                       losses: tuple[str, ...] = ABLATION_LOSSES, device: str = "auto", seed: int = 0) -> dict:
    """Train the detector under each of ``losses`` (baseline names) from ``seed`` for ``steps``;
    their validation metrics, final loss terms, status and seconds."""
    from gp_loss.tasks.detection.task import DetectionOptions, DetectionTask

    options = check_ablation_options(model, backbone, size, canvases, max_digits, batch, steps, warmup, losses)
    check_device(device)
    task = DetectionTask(DetectionOptions.from_dict(options), resolve_device(device))
    rows = {}
    for name in losses:
        out = task.proxy_fitness(name, seed)
        rows[name] = {"status": out.status, "reason": out.reason, "steps": out.steps, "seconds": out.seconds,
                      "losses": out.losses, "metrics": out.metrics}
    return {"model": model, "backbone": backbone, "image_size": size, "canvases": canvases,
            "max_digits": max_digits, "batch": batch, "steps": steps, "warmup": warmup, "seed": seed,
            "device": str(task.device), "train_images": len(task.data.train), "val_images": len(task.data.val),
            "rows": rows}


def format_ablation(result: dict) -> list[str]:
    lines = [f"{result['model']}, backbone {result['backbone']}, digits {result['image_size']} px "
             f"({result['train_images']} training / {result['val_images']} validation canvases, up to "
             f"{result['max_digits']} digit(s)), batch {result['batch']}, {result['steps']} SGD steps "
             f"({result['warmup']} warm-up), seed {result['seed']}, {result['device']}",
             f"{'loss':<16}" + "".join(f" {m:>6}" for m in METRIC_COLUMNS) + f" {'s':>7}  final loss terms"]
    for name, r in result["rows"].items():
        cells = "".join(f" {_pct(r['metrics'].get(m)):>6}" for m in METRIC_COLUMNS)
        terms = ", ".join(f"{k} {'nan/inf' if v is None else f'{v:.4g}'}" for k, v in r["losses"].items())
        status = "" if r["status"] == "ok" else f"  [{r['status']}: {r['reason']}]"
        lines.append(f"{name:<16}{cells} {r['seconds']:>7.1f}  {terms}{status}")
    return lines


def _pct(value) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}"


# ----------------------------------------------------------------------------- cost

class PeakTensorMemory(torch.utils._python_dispatch.TorchDispatchMode):
    """Peak bytes of the tensor storages created while the mode is on (CPU and any other device).

    Each operator's outputs whose storage is new (not one of its inputs', not seen yet) add their
    storage's bytes; a weak-reference finalizer subtracts them when the storage is freed. ``peak``
    is the largest sum at any time: the memory the code run under the mode allocated on top of
    what existed before it.
    """

    def __init__(self):
        super().__init__()
        self.live = 0
        self.peak = 0
        self._sizes: dict[int, int] = {}

    def _free(self, key: int) -> None:
        self.live -= self._sizes.pop(key, 0)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        from torch.utils._pytree import tree_flatten

        out = func(*args, **(kwargs or {}))
        inputs = {t.untyped_storage()._cdata for t in tree_flatten((args, kwargs))[0] if isinstance(t, torch.Tensor)}
        for t in tree_flatten(out)[0]:
            if not isinstance(t, torch.Tensor):
                continue
            storage = t.untyped_storage()
            key, size = storage._cdata, storage.nbytes()
            if size == 0 or key in inputs or key in self._sizes:
                continue
            self._sizes[key] = size
            self.live += size
            self.peak = max(self.peak, self.live)
            weakref.finalize(storage, self._free, key)
        return out


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def check_cost_options(model: str, backbone: str, size: int, batch: int, steps: int, warmup: int) -> None:
    from gp_loss.bench.detection import check_options

    check_options(model, backbone, size, batch, steps, warmup)


def bench_pap_cost(model: str = "retinanet", backbone: str = "small", size: int = 64, batch: int = 16,
                   steps: int = 5, warmup: int = 1, device: str = "auto", seed: int = 0) -> dict:
    """Time ``steps`` training steps of PAP-Loss (identity) and of Focal + GIoU, alternated, and
    measure one more step of each for its peak memory. See the module's docstring."""
    from gp_loss.bench.detection import canvas_batch
    from gp_loss.data.digits import NUM_CLASSES
    from gp_loss.pap import PAPParameters
    from gp_loss.tasks.detection.models import build_detector, set_genome, set_pap
    from gp_loss.tasks.detection.task import baseline_loss

    check_cost_options(model, backbone, size, batch, steps, warmup)
    check_device(device)
    dev = resolve_device(device)
    reference = baseline_loss(model, REFERENCE).genome
    pap = PAPParameters.identity()
    torch.manual_seed(seed)
    net = build_detector(model, NUM_CLASSES, backbone=backbone, image_size=size, genome=reference).to(dev)
    net.train()
    images, targets = canvas_batch(model, batch, size, seed, dev)
    start = copy.deepcopy(net.state_dict())
    optimizer = torch.optim.SGD(net.parameters(), lr=LEARNING_RATE)
    variants = ("pap", REFERENCE)

    def prepare(which: str) -> None:
        if which == "pap":
            set_pap(net, pap)
        else:
            set_pap(net, None)
            set_genome(net, reference)
        net.load_state_dict(start)
        torch.manual_seed(seed + 1)  # the same sampled anchors and RoIs for both
        optimizer.zero_grad(set_to_none=True)

    def run_step(which: str) -> dict[str, float]:
        terms = net(images, targets)
        loss = sum(terms.values())
        loss.backward()
        optimizer.step()
        if not torch.isfinite(loss.detach()):
            raise GpLossError(f"the {which} loss is not finite ({float(loss):g}) on the starting weights")
        return {k: float(v.detach()) for k, v in terms.items()}

    def timed(which: str) -> float:
        prepare(which)
        _sync(dev)
        t0 = time.perf_counter()
        run_step(which)
        _sync(dev)
        return 1000.0 * (time.perf_counter() - t0)

    for _ in range(warmup):
        for which in variants:
            timed(which)
    times: dict[str, list[float]] = {which: [] for which in variants}
    for _ in range(steps):
        for which in variants:
            times[which].append(timed(which))

    memory, terms = {}, {}
    for which in variants:
        prepare(which)
        if dev.type == "cuda":
            _sync(dev)
            torch.cuda.reset_peak_memory_stats(dev)
            before = torch.cuda.memory_allocated(dev)
            terms[which] = run_step(which)
            _sync(dev)
            memory[which] = torch.cuda.max_memory_allocated(dev) - before
        else:
            with PeakTensorMemory() as probe:
                terms[which] = run_step(which)
            memory[which] = probe.peak
    net.load_state_dict(start)

    ms = {}
    for which, t in times.items():
        q1, q3 = _quartiles(t)
        ms[which] = {"median": statistics.median(t), "q1": q1, "q3": q3, "steps": t}
    pair_ratios = [p / r for p, r in zip(times["pap"], times[REFERENCE])]
    return {
        "model": model, "backbone": backbone, "image_size": size, "batch": batch, "steps": steps, "warmup": warmup,
        "device": str(dev), "seed": seed, "boxes": sum(len(t["boxes"]) for t in targets),
        "memory_measure": ("torch.cuda.max_memory_allocated" if dev.type == "cuda"
                           else "tensor storages (dispatch mode)"),
        "ms": ms, "time_ratio": statistics.median(pair_ratios),
        "time_ratio_q1": _quartiles(pair_ratios)[0], "time_ratio_q3": _quartiles(pair_ratios)[1],
        "peak_bytes": memory,
        "memory_ratio": memory["pap"] / memory[REFERENCE] if memory[REFERENCE] else math.inf,
        "loss_terms": terms,
    }


def _quartiles(values: list[float]) -> tuple[float, float]:
    if len(values) < 2:
        return values[0], values[0]
    q1, _, q3 = statistics.quantiles(values, n=4, method="inclusive")
    return q1, q3


def format_cost(result: dict) -> list[str]:
    lines = [f"{result['model']}, backbone {result['backbone']}, {result['image_size']} px, batch {result['batch']} "
             f"({result['boxes']} boxes), {result['device']}: {result['steps']} SGD steps each, alternated from the "
             f"same weights ({result['warmup']} warm-up each); peak memory of one more step "
             f"({result['memory_measure']})",
             f"{'loss':<10} {'median ms':>10} {'q1 ms':>9} {'q3 ms':>9} {'peak MiB':>9}  loss terms"]
    for which in ("pap", REFERENCE):
        m = result["ms"][which]
        terms = ", ".join(f"{k} {v:.4g}" for k, v in result["loss_terms"][which].items())
        lines.append(f"{which:<10} {m['median']:>10.1f} {m['q1']:>9.1f} {m['q3']:>9.1f} "
                     f"{result['peak_bytes'][which] / 2**20:>9.1f}  {terms}")
    lines.append(f"pap / {REFERENCE}: time {result['time_ratio']:.2f}x (median of {result['steps']} step pairs; "
                 f"interquartile {result['time_ratio_q1']:.2f}x-{result['time_ratio_q3']:.2f}x), "
                 f"peak memory {result['memory_ratio']:.2f}x")
    return lines

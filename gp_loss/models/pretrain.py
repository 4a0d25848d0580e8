"""Pretrained weights for the CPU-scale ``small`` backbones, made from the built-in data.

Practitioners start detectors and segmenters from ImageNet weights: a randomly
initialised network spends most of a short training learning edges and strokes,
and under most losses a short proxy training then ends near "background
everywhere", where losses cannot be told apart. Nothing can be downloaded here, so
the project pretrains its own small backbones once, on digit canvases drawn from a
seed no task draws by default (:data:`DATA_SEED_OFFSET` + the recipe's seed), and
ships the result (:data:`SHIPPED`); ``gp-loss data pretrain-backbone`` remakes it.

The recipe (:class:`Recipe`): the task's own ``small`` network on ``canvases``
built-in canvases of ``image_size`` pixels, augmented so the backbone does not learn
the canvases' look only: each batch downscaled at random with letterbox padding (as
non-square images arrive after letterboxing; digits 0.6 to 1 times their drawn size),
each image's colour channels permuted at random and half the images inverted (dark
digits on a light background). Segmentation trains with
cross-entropy under Adam, detection FCOS with Focal + GIoU under SGD with momentum;
both with a linear warm-up and a cosine decay. Only the backbone is kept (the
segmentation body; the detection body and its FPN), so every head a task builds
starts fresh and any number of classes fits.

On the CPU the result is bit-identical for the same recipe, torch build and
instruction set (the thread count is part of the recipe: floating-point sums
depend on it).
"""
from __future__ import annotations

import hashlib
import io
import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F

from gp_loss.errors import GpLossError
from gp_loss.runtime.atomic import write_bytes_atomic, write_text_atomic
from gp_loss.runtime.threads import torch_threads
from gp_loss.tasks.base import epoch_batches, warmup_cosine

TASKS = ("segmentation", "detection")
PRETRAINED_DIR = Path(__file__).resolve().parent / "pretrained"
# The files the tasks load for ``weights="pretrained"`` (each with a ``.json`` beside it: its recipe and figures).
SHIPPED = {task: PRETRAINED_DIR / f"small_{task}.pt" for task in TASKS}
# Pretraining canvases are drawn from this + the recipe's seed: never the tasks' default data (seed 0).
DATA_SEED_OFFSET = 900_000
IGNORE = 255
MIN_SCALE = 0.6
# Optimizer steps of each task's recipe: segmentation's body keeps gaining for longer than detection's
# (whose FPN and head, kept with it, learn much of the task).
STEPS = {"segmentation": 2000, "detection": 1200}


@dataclass(frozen=True)
class Recipe:
    """How a backbone is pretrained (all of it is recorded beside the weights)."""

    task: str = "segmentation"
    seed: int = 0
    steps: int = 0                # 0: the task's (STEPS)
    canvases: int = 2000
    image_size: int = 96
    max_digits: int = 4
    batch_size: int = 8
    lr: float = 0.0             # 0: the task's (Adam 3e-3 for segmentation, SGD 0.02 for detection)
    warmup_steps: int = 100
    threads: int = 1
    permute_colours: bool = True   # each image's colour channels in a random order
    min_scale: float = MIN_SCALE   # each batch's content downscaled by a factor from this to 1 (1: never)

    def check(self) -> None:
        if self.task not in TASKS:
            raise GpLossError(f"--task must be one of {', '.join(TASKS)}, got {self.task!r}")
        for name, low, high in (("seed", 0, 2**31 - 1 - DATA_SEED_OFFSET), ("steps", 0, 1_000_000),
                                ("canvases", 8, 100_000), ("image_size", 32, 1024), ("max_digits", 1, 50),
                                ("batch_size", 1, 1024), ("warmup_steps", 0, 1_000_000), ("threads", 1, 256)):
            value = getattr(self, name)
            if not low <= value <= high:
                raise GpLossError(f"--{name.replace('_', '-')} must be from {low} to {high}, got {value}")
        if not 0.1 <= self.min_scale <= 1:
            raise GpLossError(f"--min-scale must be from 0.1 to 1, got {self.min_scale}")
        if not (math.isfinite(self.lr) and self.lr >= 0):
            raise GpLossError(f"--lr must be 0 (the task's) or a positive number, got {self.lr}")

    def total_steps(self) -> int:
        return self.steps or STEPS[self.task]

    def learning_rate(self) -> float:
        return self.lr or (3e-3 if self.task == "segmentation" else 0.02)


def augment(images: torch.Tensor, generator: torch.Generator, permute_colours: bool = True,
            min_scale: float = MIN_SCALE) -> tuple[torch.Tensor, float]:
    """A batch's look changed at random: each image's colours permuted (and inverted half the time), the
    batch's content downscaled.

    Per image, not per batch: BatchNorm's running statistics then describe the mixture each training
    batch is normalised with, and an unaugmented image at evaluation meets the same statistics.

    Args:
        images: N×3×S×S floats in [0, 1].
    Returns:
        N×3×S×S images (the content top-left, zero padding, as letterboxing leaves it) and the scale.
    """
    n, size = images.shape[0], images.shape[-1]
    if permute_colours:
        order = torch.stack([torch.randperm(3, generator=generator) for _ in range(n)])  # N×3
        images = images.gather(1, order[:, :, None, None].expand_as(images))
    scale = min_scale + (1.0 - min_scale) * float(torch.rand((), generator=generator))
    if scale == 1.0:
        return images, 1.0
    inner = max(8, round(size * scale))
    out = torch.zeros_like(images)
    out[..., :inner, :inner] = F.interpolate(images, size=(inner, inner), mode="bilinear", align_corners=False,
                                             antialias=True)
    return out, inner / size


def _segmentation(recipe: Recipe, log: Callable[[str], None]) -> tuple[dict, dict]:
    from gp_loss.tasks.segmentation.task import SegmentationOptions, SegmentationTask, loss_terms

    task = SegmentationTask(SegmentationOptions(
        data="digits", canvases=recipe.canvases, image_size=recipe.image_size, max_digits=recipe.max_digits,
        data_seed=DATA_SEED_OFFSET + recipe.seed, split_seed=recipe.seed, val_fraction=0.1, weights="none"))
    terms_of = loss_terms(task.baseline("ce"))
    model = task.build(recipe.seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=recipe.learning_rate())

    def step(index: list[int], generator: torch.Generator) -> torch.Tensor:
        images, labels = task.data.train.batch(index)
        images, scale = augment(images, generator, recipe.permute_colours, recipe.min_scale)
        inner = round(images.shape[-1] * scale)
        small = F.interpolate(labels[:, None].float(), size=(inner, inner), mode="nearest")[:, 0].long()
        labels = torch.full_like(labels, IGNORE)
        labels[:, :inner, :inner] = small
        return sum(terms_of(model(images)["out"], labels).values())

    _fit(model, optimizer, step, len(task.data.train), recipe, log)
    metrics = task.evaluate(model, task.data.val)
    return model.backbone.state_dict(), {"validation_mIoU": metrics["mIoU"], "validation_BF1": metrics["BF1"]}


def _detection(recipe: Recipe, log: Callable[[str], None]) -> tuple[dict, dict]:
    from gp_loss.tasks.detection.models import target_labels
    from gp_loss.tasks.detection.task import DetectionOptions, DetectionTask

    options = DetectionOptions(data="digits", canvases=recipe.canvases, image_size=recipe.image_size,
                               max_digits=recipe.max_digits, data_seed=DATA_SEED_OFFSET + recipe.seed,
                               split_seed=recipe.seed, val_fraction=0.1, weights="none")
    task = DetectionTask(options)
    model = task.build("fl_giou", recipe.seed)
    optimizer = torch.optim.SGD(model.parameters(), lr=recipe.learning_rate(), momentum=options.momentum,
                                weight_decay=options.weight_decay)

    def step(index: list[int], generator: torch.Generator) -> torch.Tensor:
        images, boxes, classes = task.data.train.batch(index)
        batch, scale = augment(torch.stack(images), generator, recipe.permute_colours, recipe.min_scale)
        targets = [{"boxes": b * scale, "labels": target_labels(options.model, c)} for b, c in zip(boxes, classes)]
        return sum(model(list(batch), targets).values())

    _fit(model, optimizer, step, len(task.data.train), recipe, log)
    metrics = task.evaluate(model)
    return model.backbone.state_dict(), {"validation_AP": metrics["AP"], "validation_AP50": metrics["AP50"]}


def _fit(model: torch.nn.Module, optimizer: torch.optim.Optimizer,
         step: Callable[[list[int], torch.Generator], torch.Tensor], pool: int, recipe: Recipe,
         log: Callable[[str], None]) -> None:
    """``recipe.total_steps()`` optimizer steps of ``step``'s loss over epochs of the ``pool`` training images."""
    steps = recipe.total_steps()
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_cosine(steps, recipe.warmup_steps))
    generator = torch.Generator().manual_seed(recipe.seed)
    model.train()
    start = time.perf_counter()
    for s, index in enumerate(epoch_batches(pool, recipe.batch_size, steps, generator)):
        loss = step(index, generator)
        if not torch.isfinite(loss):
            raise GpLossError(f"pretraining diverged at step {s} (loss {loss.item()}): lower --lr")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        if (s + 1) % 100 == 0 or s + 1 == steps:
            log(f"step {s + 1}/{steps}: loss {loss.item():.4f} ({time.perf_counter() - start:.0f} s)")


def pretrain_backbone(recipe: Recipe, log: Callable[[str], None] = lambda _: None) -> tuple[dict, dict]:
    """Pretrain the ``small`` backbone of ``recipe.task``; its state dict and a record of how it was made."""
    recipe.check()
    start = time.perf_counter()
    with torch_threads(recipe.threads):
        state, figures = (_segmentation if recipe.task == "segmentation" else _detection)(recipe, log)
    record = {"recipe": {**asdict(recipe), "steps": recipe.total_steps()},
              "data_seed": DATA_SEED_OFFSET + recipe.seed, **figures,
              "seconds": round(time.perf_counter() - start, 1), "torch": torch.__version__,
              "cpu_capability": torch.backends.cpu.get_cpu_capability()}
    return {k: v.detach().clone() for k, v in state.items()}, record


def save_backbone(state: dict, record: dict, out: Path) -> dict:
    """Write ``state`` to ``out``, and ``record`` with the file's size and SHA-256 to ``out`` + ``.json``
    (each atomically)."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    data = buffer.getvalue()
    record = {**record, "file": out.name, "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        write_bytes_atomic(out, data)
        write_text_atomic(out.with_name(out.name + ".json"), json.dumps(record, indent=1) + "\n")
    except OSError as err:
        raise GpLossError(f"cannot write --out {out}: {err.strerror or err}") from None
    return record


def shipped_weights(task: str) -> str:
    """The path of the shipped pretrained ``small`` backbone of ``task``; one line if it is missing."""
    path = SHIPPED[task]
    if not path.is_file():
        raise GpLossError(f"the pretrained small {task} backbone {path} is missing from this installation: "
                          f"make it with `gp-loss data pretrain-backbone --task {task} --out {path}`, or give "
                          f"weights 'none' (random init) or a file")
    return str(path)


# The ``weights`` option's words: the shipped backbone (``small`` models; others start from random
# init, nothing being downloadable), or random init.
PRETRAINED, NO_WEIGHTS = "pretrained", "none"


def check_weights_option(value: str) -> None:
    """A task's ``weights`` option: ``"pretrained"``, ``"none"`` (or empty) or an existing file; one line if not."""
    if value in ("", NO_WEIGHTS, PRETRAINED):
        return
    if not Path(value).is_file():
        raise GpLossError(f"weights {value!r} is not a file: give a PyTorch state dict, 'pretrained' (the shipped "
                          f"small backbone) or 'none' (random init)")


def resolve_weights(value: str, task: str, small: bool) -> str | None:
    """The weights file a task's ``weights`` option names for its model (``None``: random init)."""
    if value in ("", NO_WEIGHTS):
        return None
    if value == PRETRAINED:
        return shipped_weights(task) if small else None
    return value

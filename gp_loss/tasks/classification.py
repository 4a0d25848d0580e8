"""Image classification: the first search task and the template for the others.

Data: scikit-learn's handwritten digits (built in, 1,797 8×8 images) or a
``torchvision.datasets.ImageFolder`` directory; split into train / validation
/ test by ``split_seed``. Model: :class:`~gp_loss.models.conv_net.ConvNet`.
Fitness: validation accuracy after ``proxy_epochs``; final score: test
accuracy after ``final_epochs``.

The loss branch may be of kind ``cls`` (inputs ``x`` logits N×C, ``y`` one-hot
N×C, ``w`` = 1 since there are no boxes), ``bcls`` (the same, per class) or
``zero`` (AutoLoss-Zero: ``yhat`` = softmax probabilities and ``y`` one-hot,
both N×C×1×1). Several branches are summed.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, fields
from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F

from gp_loss.data.digits import digits_tensors, split_indices
from gp_loss.errors import GpLossError
from gp_loss.field_types import check_field_types
from gp_loss.language.compile import compile_loss
from gp_loss.language.genome import Genome
from gp_loss.models.conv_net import ConvNet
from gp_loss.tasks.base import TrainOutcome

BASELINES = {
    "ce": {"cls": "neg(dot(y, log(softmax(x))))"},
    # focal loss, gamma = 2
    "focal": {"cls": "neg(dot(mul(y, mul(sub(1, softmax(x)), sub(1, softmax(x)))), log(softmax(x))))"},
    # label smoothing 0.1 over 10 classes: target 0.91 on the label, 0.01 elsewhere
    "label_smoothing_ce": {"cls": "neg(dot(add(mul(0.9, y), 0.01), log(softmax(x))))"},
}

SUPPORTED_KINDS = ("cls", "bcls", "zero")


@dataclass(frozen=True)
class ClassificationOptions:
    """Settings of the classification task (all JSON-able; part of the run's configuration)."""

    data: str = "digits"            # "digits" or an ImageFolder directory
    image_size: int = 32            # ImageFolder images are resized to this (digits are 8×8)
    grayscale: bool = False         # ImageFolder: load as one channel
    split_seed: int = 0             # train/validation/test split
    train_fraction: float = 0.6
    val_fraction: float = 0.2
    width: int = 8                  # ConvNet channels of the first block
    batch_size: int = 32
    lr: float = 3e-3                # Adam
    proxy_epochs: int = 5           # search fitness: validation accuracy after these epochs
    final_epochs: int = 8           # reported: test accuracy after these epochs

    def check(self) -> None:
        """Raise :class:`GpLossError` naming the first bad value."""
        check_field_types(self, "task option ")
        for name in ("image_size", "width", "batch_size", "proxy_epochs", "final_epochs"):
            if getattr(self, name) < 1:
                raise GpLossError(f"task option {name} must be at least 1, got {getattr(self, name)}")
        if not (0 < self.train_fraction < 1 and 0 < self.val_fraction < 1
                and self.train_fraction + self.val_fraction < 1):
            raise GpLossError(f"task options train_fraction={self.train_fraction} and val_fraction="
                              f"{self.val_fraction} must be in (0, 1) and leave a test split")
        if self.lr <= 0:
            raise GpLossError(f"task option lr must be positive, got {self.lr}")
        if self.data != "digits":
            from pathlib import Path
            if not Path(self.data).is_dir():
                raise GpLossError(f"data path {self.data!r} does not exist or is not a directory: give an "
                                  f"ImageFolder root (one sub-folder per class) or 'digits'")

    @classmethod
    def from_dict(cls, data: dict) -> "ClassificationOptions":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise GpLossError(f"unknown classification task option(s) {', '.join(unknown)}; "
                              f"known: {', '.join(sorted(known))}")
        return cls(**data)


@lru_cache(maxsize=4)
def _load(data: str, image_size: int, grayscale: bool) -> tuple[torch.Tensor, torch.Tensor]:
    if data == "digits":
        return digits_tensors()
    from gp_loss.data.image_folder import image_folder_tensors
    images, labels, _ = image_folder_tensors(data, image_size, grayscale)
    return images, labels


class ClassificationTask:
    """Train :class:`ConvNet` under a candidate loss; metric = accuracy."""

    name = "classification"
    metric = "accuracy"
    branches = {"cls": "cls"}
    kinds = SUPPORTED_KINDS
    baselines = BASELINES

    def __init__(self, options: ClassificationOptions = ClassificationOptions()):
        options.check()
        self.options = options
        images, labels = _load(options.data, options.image_size, options.grayscale)
        self.images, self.labels = images, labels
        self.classes = int(labels.max()) + 1
        train, val, test = split_indices(len(labels), options.split_seed,
                                         (options.train_fraction, options.val_fraction))
        self.splits = {"train": torch.as_tensor(train), "val": torch.as_tensor(val),
                       "test": torch.as_tensor(test)}

    def to_spec(self) -> dict:
        return {"name": self.name, "options": asdict(self.options)}

    # -- the loss adapter ---------------------------------------------------
    def loss_function(self, genome: Genome):
        """``loss(logits N×C, labels N) -> scalar``: the sum of the genome's branch losses."""
        parts = []
        for b in genome:
            if b.kind.name not in SUPPORTED_KINDS:
                raise GpLossError(f"branch {b.name!r} has kind {b.kind.name}; classification takes "
                                  f"{', '.join(SUPPORTED_KINDS)}")
            parts.append((b.kind.name, compile_loss(b.kind, b.tree)))

        def loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
            y = F.one_hot(labels, logits.shape[1]).to(logits.dtype)
            total = logits.new_zeros(())
            for kind_name, fn in parts:
                if kind_name == "zero":
                    total = total + fn(torch.softmax(logits, 1)[:, :, None, None], y[:, :, None, None])
                else:
                    total = total + fn(logits, y, torch.ones_like(y))
            return total
        return loss

    # -- training -------------------------------------------------------------
    def train(self, genome: Genome, seed: int, epochs: int, eval_split: str,
              time_limit_s: float | None = None) -> TrainOutcome:
        """Train a fresh model with ``seed`` for ``epochs``; accuracy on ``eval_split``.

        Stops at the first non-finite loss (AutoLoss-Zero's early stop) and at
        ``time_limit_s``; an exception inside the loss ends training too.
        """
        start = time.perf_counter()
        o = self.options
        torch.manual_seed(seed)
        model = ConvNet(self.images.shape[1], self.classes, self.images.shape[-1], o.width)
        optimizer = torch.optim.Adam(model.parameters(), lr=o.lr)
        order = torch.Generator().manual_seed(seed)
        train = self.splits["train"]
        steps = 0
        try:
            loss_fn = self.loss_function(genome)
            for _ in range(epochs):
                perm = train[torch.randperm(len(train), generator=order)]
                for i in range(0, len(perm), o.batch_size):
                    idx = perm[i:i + o.batch_size]
                    loss = loss_fn(model(self.images[idx]), self.labels[idx])
                    if not torch.isfinite(loss):
                        return TrainOutcome(0.0, "non-finite", f"loss is {loss.item()} at step {steps}",
                                            steps, time.perf_counter() - start)
                    optimizer.zero_grad()
                    loss.backward()
                    optimizer.step()
                    steps += 1
                    if time_limit_s is not None and time.perf_counter() - start > time_limit_s:
                        return TrainOutcome(0.0, "too slow", f"over {time_limit_s:g} s at step {steps}",
                                            steps, time.perf_counter() - start)
        except GpLossError:
            raise
        except Exception as err:  # a bad loss ends its own training, never the search
            return TrainOutcome(0.0, "error", f"{type(err).__name__}: {err}", steps, time.perf_counter() - start)
        score = self.accuracy(model, eval_split)
        if not np.isfinite(score):
            return TrainOutcome(0.0, "non-finite", "non-finite logits after training", steps,
                                time.perf_counter() - start)
        return TrainOutcome(score, "ok", "", steps, time.perf_counter() - start)

    @torch.no_grad()
    def accuracy(self, model: torch.nn.Module, split: str) -> float:
        idx = self.splits[split]
        logits = model(self.images[idx])
        if not torch.isfinite(logits).all():
            return float("nan")
        return (logits.argmax(1) == self.labels[idx]).double().mean().item()

    def proxy_fitness(self, genome: Genome, seed: int, time_limit_s: float | None = None) -> TrainOutcome:
        return self.train(genome, seed, self.options.proxy_epochs, "val", time_limit_s)

    def final_score(self, genome: Genome, seed: int) -> TrainOutcome:
        return self.train(genome, seed, self.options.final_epochs, "test")

"""Image classification: the first search task and the template for the others.

Data: scikit-learn's handwritten digits (built in, 1,797 8×8 images) or a
``torchvision.datasets.ImageFolder`` directory; split into train / validation
/ test by ``split_seed`` and kept on the training device. An ImageFolder may
bring its own validation and test folders (``val_data``, ``test_data``), and
``label_noise`` flips a seeded fraction of the training labels (symmetric
noise) while validation and test keep theirs. Model:
:class:`~gp_loss.models.conv_net.ConvNet`. Fitness: validation accuracy after
``proxy_epochs``; final score: test accuracy after ``final_epochs``.

A loss branch may be of kind ``cls`` (inputs ``x`` logits N×C, ``y`` one-hot
N×C, ``w`` = 1 since there are no boxes), ``bcls`` (the same, per class) or
``zero`` (AutoLoss-Zero: ``yhat`` = softmax probabilities and ``y`` one-hot,
both N×C×1×1): :data:`BRANCH_INPUTS`. Several branches are summed.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from itertools import islice
from typing import Iterator

import numpy as np
import torch
import torch.nn.functional as F

from gp_loss.data.digits import NUM_CLASSES, digits_tensors, split_indices
from gp_loss.data.label_noise import flip_labels
from gp_loss.errors import GpLossError
from gp_loss.field_types import check_numbers, options_from_dict
from gp_loss.language.compile import compile_loss
from gp_loss.language.genome import Genome
from gp_loss.models.conv_net import ConvNet
from gp_loss.tasks.base import TaskInfo, TrainingRun, TrainOutcome, fidelity_steps

PRECISIONS = ("fp32", "bf16")
# Upper bounds of the integer options: far above any proxy, far below what exhausts memory.
LIMITS = {"image_size": 1024, "width": 1024, "batch_size": 65536, "proxy_epochs": 10_000, "final_epochs": 10_000}
# Adam, as AutoLoss-Zero's and CSE-Autoloss's proxies train; plain SGD (no momentum) to check
# that a loss trains where the gradient's scale sets the step.
OPTIMIZERS = {"adam": torch.optim.Adam, "sgd": torch.optim.SGD}


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
    optimizer: str = "adam"         # "adam" or "sgd" (plain: no momentum, no weight decay)
    lr: float = 3e-3                # learning rate of the optimizer
    proxy_epochs: int = 5           # search fitness: validation accuracy after these epochs
    final_epochs: int = 8           # reported: test accuracy after these epochs
    precision: str = "fp32"         # "bf16": forward pass and loss under bf16 autocast
    val_data: str | None = None     # ImageFolder of the validation split (default: a split of data)
    test_data: str | None = None    # ImageFolder of the test split (default: a split of data)
    label_noise: float = 0.0        # fraction of training labels flipped to another class, in [0, 1)
    noise_seed: int = 0             # seed of the label noise (the search script sets the run's seed)

    def check(self) -> None:
        """Raise :class:`GpLossError` naming the first bad value."""
        check_numbers(self, LIMITS, "task option ")
        for name in ("split_seed", "noise_seed"):
            if not 0 <= getattr(self, name) <= 2**32 - 1:
                raise GpLossError(f"task option {name} must be in [0, 2**32 - 1], got {getattr(self, name)}")
        if not 0 <= self.label_noise < 1:
            raise GpLossError(f"task option label_noise is the fraction of training labels flipped and must be "
                              f"in [0, 1), got {self.label_noise}")
        if not (0 < self.train_fraction < 1 and 0 < self.val_fraction < 1
                and self.train_fraction + self.val_fraction < 1):
            raise GpLossError(f"task options train_fraction={self.train_fraction} and val_fraction="
                              f"{self.val_fraction} must be in (0, 1) and leave a test split")
        if not self.lr > 0 or self.lr == float("inf"):
            raise GpLossError(f"task option lr must be a positive finite number, got {self.lr}")
        if self.optimizer not in OPTIMIZERS:
            raise GpLossError(f"task option optimizer must be one of {', '.join(OPTIMIZERS)}, "
                              f"got {self.optimizer!r}")
        if self.precision not in PRECISIONS:
            raise GpLossError(f"task option precision must be one of {', '.join(PRECISIONS)}, "
                              f"got {self.precision!r}")
        from pathlib import Path
        if self.data != "digits":
            if not Path(self.data).is_dir():
                raise GpLossError(f"data path {self.data!r} does not exist or is not a directory: give an "
                                  f"ImageFolder root (one sub-folder per class) or 'digits'")
        for name in ("val_data", "test_data"):
            path = getattr(self, name)
            if path is None:
                continue
            if self.data == "digits":
                raise GpLossError(f"task option {name} needs an ImageFolder as data (the built-in digits have no "
                                  f"class folders to match): give data an ImageFolder root, or drop {name}")
            if not Path(path).is_dir():
                raise GpLossError(f"task option {name} {path!r} does not exist or is not a directory: give an "
                                  f"ImageFolder root with the class folders of data")
            from gp_loss.data.image_folder import check_same_classes, class_names
            reference = class_names(self.data)
            if reference:  # data without class folders: its loader says so
                # Quoted as Python writes strings: a path may hold a newline or control characters.
                check_same_classes(class_names(path), reference, f"--{name.replace('_', '-')} {path!r}",
                                   f"--data {self.data!r}")

    @classmethod
    def from_dict(cls, data: dict) -> "ClassificationOptions":
        """From a dict of option fields (unknown names are an error naming the known ones)."""
        return options_from_dict(cls, data, "classification task option")


@lru_cache(maxsize=4)
def _load(data: str, image_size: int, grayscale: bool) -> tuple[torch.Tensor, torch.Tensor, tuple[str, ...]]:
    """Images N×C×S×S, labels N and the class names of ``data`` (cached: shared, never modified)."""
    if data == "digits":
        return (*digits_tensors(), tuple(str(c) for c in range(NUM_CLASSES)))
    from gp_loss.data.image_folder import image_folder_tensors
    images, labels, classes = image_folder_tensors(data, image_size, grayscale)
    return images, labels, tuple(classes)


def split_data(o: ClassificationOptions) -> tuple[torch.Tensor, torch.Tensor, int, dict[str, np.ndarray]]:
    """Images N×C×S×S, labels N, the number of classes, and split name -> indices into them.

    Without ``val_data`` and ``test_data``, ``data`` splits into train / validation / test
    by ``split_seed``. A folder given supplies its split; ``data`` then supplies the others:
    all of it trains when both are given, else it splits into train and the missing split in
    the ratio ``train_fraction`` : that split's fraction. The folders' images are concatenated
    after ``data``'s; :meth:`ClassificationOptions.check` has matched their class folders to ``data``'s.
    """
    images, labels, classes = _load(o.data, o.image_size, o.grayscale)
    given = {split: path for split, path in (("val", o.val_data), ("test", o.test_data)) if path is not None}
    if not given:
        train, val, test = split_indices(len(labels), o.split_seed, (o.train_fraction, o.val_fraction))
        return images, labels, len(classes), {"train": train, "val": val, "test": test}
    fractions = {"val": o.val_fraction, "test": 1 - o.train_fraction - o.val_fraction}
    missing = [split for split in fractions if split not in given]
    if missing:
        share = o.train_fraction / (o.train_fraction + fractions[missing[0]])
        train, rest, _ = split_indices(len(labels), o.split_seed, (share, 1.0))  # 1.0: the rest, all of it
        splits = {"train": train, missing[0]: rest}
    else:
        splits = {"train": np.arange(len(labels))}
    all_images, all_labels, start = [images], [labels], len(labels)
    for split, path in given.items():
        more_images, more_labels, _ = _load(path, o.image_size, o.grayscale)
        all_images.append(more_images)
        all_labels.append(more_labels)
        splits[split] = np.arange(start, start + len(more_labels))
        start += len(more_labels)
    return (torch.cat(all_images), torch.cat(all_labels), len(classes),
            {split: splits[split] for split in ("train", "val", "test")})


def _class_inputs(logits: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """``cls``/``bcls`` inputs: ``x`` logits, ``y`` one-hot, ``w`` = 1 (no boxes), each N×C."""
    return logits, y, torch.ones_like(y)


def _dense_inputs(logits: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """``zero`` inputs: ``yhat`` softmax probabilities and ``y`` one-hot, each N×C×1×1."""
    return torch.softmax(logits, 1)[:, :, None, None], y[:, :, None, None]


# How this task presents its prediction and target to a branch of each kind it trains.
BRANCH_INPUTS = {"cls": _class_inputs, "bcls": _class_inputs, "zero": _dense_inputs}


class ClassificationTask:
    """Train :class:`ConvNet` under a candidate loss on ``device``; metric = accuracy."""

    def __init__(self, options: ClassificationOptions = ClassificationOptions(),
                 device: torch.device = torch.device("cpu")):
        options.check()
        self.info = INFO
        self.options = options
        self.device = torch.device(device)
        images, labels, self.classes, splits = split_data(options)
        # Index tensors stay on the CPU, where the shuffling generator is; a batch's
        # indices move to the device once per epoch.
        self.splits = {name: torch.as_tensor(idx) for name, idx in splits.items()}
        empty = [name for name, idx in self.splits.items() if len(idx) == 0]
        if empty:
            own = {"val": options.val_data, "test": options.test_data}  # splits not cut from data
            n = sum(len(idx) for name, idx in self.splits.items() if own.get(name) is None)
            raise GpLossError(f"{options.data}: {n} images leave the {' and '.join(empty)} split(s) "
                              f"empty (train_fraction {options.train_fraction}, val_fraction "
                              f"{options.val_fraction}): give more images")
        # The training images whose label the noise flipped (sorted); validation and test keep theirs.
        self.noisy_indices = torch.zeros(0, dtype=torch.int64)
        if options.label_noise > 0:
            labels, self.noisy_indices = flip_labels(labels, self.splits["train"], options.label_noise,
                                                     self.classes, options.noise_seed)
        self.images, self.labels = images.to(self.device), labels.to(self.device)

    @property
    def flipped(self) -> int:
        """How many training labels the label noise flipped: ``round(label_noise × n_train)``."""
        return len(self.noisy_indices)

    @property
    def steps_per_epoch(self) -> int:
        """Optimizer steps of one epoch: batches of ``batch_size`` over the training split (the last one short)."""
        return -(-len(self.splits["train"]) // self.options.batch_size)

    # -- the loss adapter ---------------------------------------------------
    def loss_terms(self, genome: Genome):
        """``terms(logits N×C, labels N) -> {branch name: scalar loss}``, in the genome's branch order."""
        parts = []
        for b in genome:
            if b.kind.name not in BRANCH_INPUTS:
                raise GpLossError(f"branch {b.name!r} has kind {b.kind.name}; classification takes "
                                  f"{', '.join(BRANCH_INPUTS)}")
            parts.append((b.name, BRANCH_INPUTS[b.kind.name], compile_loss(b.kind, b.tree)))

        def terms(logits: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
            y = F.one_hot(labels, logits.shape[1]).to(logits.dtype)
            return {name: fn(*inputs(logits, y)) for name, inputs, fn in parts}
        return terms

    def baseline(self, name: str) -> Genome:
        """The genome of the baseline ``name`` (its paper losses, on the task's branch)."""
        formulas = self.info.baselines.get(name)
        if formulas is None:
            raise GpLossError(f"unknown baseline {name!r}; known: {', '.join(self.info.baselines)}")
        return Genome.from_formulas((b, self.info.branches[b], f) for b, f in formulas.items())

    # -- training -------------------------------------------------------------
    def _batches(self, epochs: int, order: torch.Generator) -> Iterator[torch.Tensor]:
        """Index tensors (B, on the device) of the training batches of ``epochs`` epochs, reshuffled each epoch."""
        train = self.splits["train"]
        for _ in range(epochs):
            perm = train[torch.randperm(len(train), generator=order)].to(self.device)
            for i in range(0, len(perm), self.options.batch_size):
                yield perm[i:i + self.options.batch_size]

    def train(self, genome: Genome, seed: int, epochs: int, eval_split: str,
              time_limit_s: float | None = None, max_steps: int | None = None) -> TrainOutcome:
        """Train a fresh model with ``seed`` for ``epochs``; accuracy on ``eval_split``.

        The total loss is the sum of the branch terms in branch order. Training
        stops at the first non-finite loss, naming the branch that broke
        (AutoLoss-Zero's early stop), and at ``time_limit_s``; an exception
        inside the loss ends training too. The model is initialised on the CPU
        from ``seed`` and then moved, so every device starts from the same weights.
        ``max_steps`` stops it after that many optimizer steps if the epochs hold
        more: the first batches of the full schedule.
        """
        o = self.options
        run = TrainingRun(self.device, time_limit_s)
        torch.manual_seed(seed)
        model = ConvNet(self.images.shape[1], self.classes, self.images.shape[-1], o.width).to(self.device)
        optimizer = OPTIMIZERS[o.optimizer](model.parameters(), lr=o.lr)
        order = torch.Generator().manual_seed(seed)
        autocast = torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=o.precision == "bf16")
        try:
            terms_of = self.loss_terms(genome)
            for idx in islice(self._batches(epochs, order), max_steps):
                with autocast:
                    terms = terms_of(model(self.images[idx]), self.labels[idx])
                loss = self.images.new_zeros(())
                for t in terms.values():
                    loss = loss + t
                if (end := run.step(loss, terms, optimizer)) is not None:
                    return end
            if (end := run.finished()) is not None:
                return end
        except GpLossError:
            raise
        except Exception as err:
            return run.failed(err)
        score = self.accuracy(model, eval_split)
        if not np.isfinite(score):
            return run.outcome(0.0, "non-finite", "non-finite logits after training")
        return run.outcome(score)

    @torch.no_grad()
    def accuracy(self, model: torch.nn.Module, split: str) -> float:
        idx = self.splits[split].to(self.device)
        logits = model(self.images[idx])
        if not torch.isfinite(logits).all():
            return float("nan")
        return (logits.argmax(1) == self.labels[idx]).double().mean().item()

    def proxy_fitness(self, genome: Genome, seed: int, time_limit_s: float | None = None,
                      fidelity: float = 1.0) -> TrainOutcome:
        """Validation accuracy after proxy training: ``fidelity`` × its ``proxy_epochs × steps_per_epoch``
        optimizer steps, rounded, at least 1.

        Successive halving trains a candidate first at a fraction of the proxy and only the
        best at the full length; a shortened proxy takes the first steps of the full one (the
        same initial weights and batches). ``fidelity`` 1.0 is the full proxy.
        """
        if isinstance(fidelity, bool) or not 0 < fidelity <= 1:
            raise GpLossError(f"proxy fidelity must be a fraction of the proxy's length in (0, 1], got {fidelity}")
        steps = fidelity_steps(self.options.proxy_epochs * self.steps_per_epoch, fidelity)
        return self.train(genome, seed, self.options.proxy_epochs, "val", time_limit_s, max_steps=steps)

    def final_score(self, genome: Genome, seed: int) -> TrainOutcome:
        return self.train(genome, seed, self.options.final_epochs, "test")

    def selection_score(self, genome: Genome, seed: int) -> TrainOutcome:
        """Validation accuracy after ``final_epochs``: chooses the final top without the test split."""
        return self.train(genome, seed, self.options.final_epochs, "val")


INFO = TaskInfo(
    name="classification",
    summary="image classification (digits built in, or an ImageFolder); metric: accuracy",
    options=ClassificationOptions,
    task_class=ClassificationTask,
    branches={"cls": "cls"},
    kinds=tuple(BRANCH_INPUTS),
    metric="accuracy",
    baseline_losses={"ce": {"cls": "ce"}, "focal": {"cls": "focal"},
                     "label_smoothing_ce": {"cls": "label_smoothing_ce"}, "gce": {"cls": "gce"}},
    proxy_option="proxy_epochs",
    search_script="search_classification.py",
)

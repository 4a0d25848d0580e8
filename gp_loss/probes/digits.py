"""The digit images the probes are made of, their segmentation target, and the probe network.

Every probe draws from scikit-learn's handwritten digits (:mod:`gp_loss.data.digits`,
8×8 images in [0, 1]) and is deterministic for its seed.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from gp_loss.data.digits import digits_tensors
from gp_loss.models.small_cnn import SmallCNN

# The dense (``zero``) probes segment a digit into background (<= 0.25), faint stroke
# (<= 0.75) and strong stroke by pixel intensity: a target learnable from the pixels
# themselves, with three reasonably sized classes.
INTENSITY_THRESHOLDS = (0.25, 0.75)
INTENSITY_CLASSES = len(INTENSITY_THRESHOLDS) + 1


def intensity_classes(images: torch.Tensor) -> torch.Tensor:
    """Per-pixel class of images ...×1×H×W -> labels ...×H×W (0, 1, 2 by :data:`INTENSITY_THRESHOLDS`)."""
    return torch.bucketize(images.squeeze(-3), torch.tensor(INTENSITY_THRESHOLDS, device=images.device))


def dense_one_hot(labels: torch.Tensor, classes: int) -> torch.Tensor:
    """One-hot maps of labels ...×H×W -> float ...×classes×H×W (a view with the class dimension moved)."""
    return F.one_hot(labels, classes).movedim(-1, -3).float()


def digit_batches(seed: int, b: int, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``b`` disjoint batches of ``n`` digits: images b×n×1×8×8 and labels b×n."""
    images, labels = digits_tensors()
    pick = torch.from_numpy(np.random.default_rng(seed).choice(len(labels), b * n, replace=False))
    return images[pick].reshape(b, n, 1, 8, 8), labels[pick].reshape(b, n)


def iou_like(shape: tuple[int, ...], generator: torch.Generator,
             low: float = 0.3, high: float = 1.0) -> torch.Tensor:
    """IoU-like weights uniform in [low, high], as a detector's positives carry with their ground truth."""
    return low + (high - low) * torch.rand(shape, generator=generator)


def random_network(seed: int, **kwargs) -> SmallCNN:
    """A randomly initialised :class:`SmallCNN` (``kwargs`` its own); the global RNG state is left as it was.

    Weights are He (Kaiming-normal, fan-in) initialised and biases zero: with
    torch's default init the logits of this small net are tiny and nearly the
    same for every image, so every loss would be judged only near x = 0, where
    many different losses look linear and alike. He init keeps activations at
    unit scale through the ReLUs.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = SmallCNN(**kwargs)
        for module in net.modules():
            if isinstance(module, (torch.nn.Conv2d, torch.nn.Linear)):
                torch.nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
                torch.nn.init.zeros_(module.bias)
    return net.eval()

"""Symmetric label noise: a seeded fraction of the training labels flipped to another class.

Each chosen label moves to a class drawn uniformly among the other classes, as in
the symmetric noise of Generalized Cross Entropy (Zhang & Sabuncu, NeurIPS 2018).
"""
from __future__ import annotations

import numpy as np
import torch

# Second word of the noise generator's seed: its stream differs from a split's
# ``default_rng(split_seed)`` even when the noise seed equals the split seed.
NOISE_STREAM = 0x6E6F6973


def flip_labels(labels: torch.Tensor, indices: torch.Tensor, rate: float, classes: int,
                seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Flip ``round(rate * len(indices))`` of ``labels[indices]``, each to one of the other classes.

    Args:
        labels: labels N (int64, 0..classes-1), on any device; not modified.
        indices: the positions that may be flipped (the training split), K.
        rate: fraction of ``indices`` to flip, in [0, 1).
        classes: number of classes C (at least 2).
        seed: the noise seed; the draw depends only on it and on the set of ``indices``.

    Returns:
        (the new labels N on ``labels``' device, the flipped positions M sorted, on the CPU).
    """
    rng = np.random.default_rng([seed, NOISE_STREAM])
    # Sorted, so that the same set of training images gets the same noise whatever its order.
    pool = np.sort(indices.cpu().numpy())
    picked = np.sort(rng.choice(pool, size=int(round(rate * len(pool))), replace=False))
    # An offset in 1..C-1 added modulo C: uniform among the C-1 classes other than the label.
    offsets = rng.integers(1, classes, size=len(picked))
    noisy = labels.clone()
    if len(picked):
        where = torch.as_tensor(picked, device=labels.device)
        noisy[where] = (labels[where] + torch.as_tensor(offsets, device=labels.device)) % classes
    return noisy, torch.as_tensor(picked, dtype=torch.int64)

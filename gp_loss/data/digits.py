"""scikit-learn's handwritten digits (1,797 real 8×8 images) as torch tensors.

It ships inside scikit-learn, so searches and tests run offline.
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch

NUM_CLASSES = 10


@lru_cache(maxsize=1)
def _arrays() -> tuple[np.ndarray, np.ndarray]:
    # Imported here: scikit-learn is slow to import, and every search
    # worker imports this module whether or not it trains on digits.
    from sklearn.datasets import load_digits

    data = load_digits()
    images = (data.images / 16.0).astype(np.float32)  # pixel values 0..16 -> 0..1
    return images, data.target.astype(np.int64)


def digits_tensors() -> tuple[torch.Tensor, torch.Tensor]:
    """All digits: images N×1×8×8 in [0, 1] and labels N (0..9)."""
    images, labels = _arrays()
    return torch.from_numpy(images).unsqueeze(1), torch.from_numpy(labels)


def split_indices(n: int, seed: int, fractions: tuple[float, float] = (0.6, 0.2)) -> tuple[np.ndarray, ...]:
    """Shuffle ``range(n)`` with ``seed`` into train/validation/test index arrays."""
    order = np.random.default_rng(seed).permutation(n)
    n_train = int(round(fractions[0] * n))
    n_val = int(round(fractions[1] * n))
    return order[:n_train], order[n_train:n_train + n_val], order[n_train + n_val:]


def one_per_class(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """One image of each class (10 images), chosen with ``seed``: CSE-Autoloss's simulation set."""
    images, labels = digits_tensors()
    rng = np.random.default_rng(seed)
    picks = [int(rng.choice(np.flatnonzero(labels.numpy() == c))) for c in range(NUM_CLASSES)]
    return images[picks], labels[picks]

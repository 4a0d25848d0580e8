"""The probes' metrics: each defined once, checked against a reference."""
import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score

from gp_loss.probes.metrics import accuracy, average_precision, mean_box_iou, mean_iou


def test_accuracy_per_sample_and_as_a_python_fraction():
    logits = torch.tensor([[[2.0, 1.0], [0.0, 3.0], [5.0, 1.0]], [[0.0, 1.0], [1.0, 0.0], [0.0, 1.0]]])
    labels = torch.tensor([[0, 1, 1], [1, 1, 1]])
    assert accuracy(logits, labels).tolist() == pytest.approx([2 / 3, 2 / 3])
    # In float64 a single sample's accuracy is exactly the Python fraction (the simulation's number).
    for n in range(1, 17):
        for hits in range(n + 1):
            row = torch.zeros(n, 2)
            row[:hits, 1] = 1
            assert accuracy(row, torch.ones(n, dtype=torch.long), torch.float64).item() == hits / n


def test_fast_average_precision_matches_sklearn():
    rng = np.random.default_rng(0)
    for trial in range(20):
        m = int(rng.integers(5, 200))
        targets = (rng.random((4, m)) < rng.uniform(0.05, 0.5)).astype(np.float32)
        targets[:, 0] = 1  # at least one positive per row
        scores = rng.normal(size=(4, m)).astype(np.float32)
        if trial % 2:
            scores = np.round(scores, 1)  # many ties
        ours = average_precision(torch.from_numpy(scores), torch.from_numpy(targets))
        expected = [average_precision_score(targets[r], scores[r]) for r in range(4)]
        np.testing.assert_allclose(ours.numpy(), expected, rtol=1e-5, atol=1e-6)


def test_mean_iou():
    labels = torch.tensor([[[[0, 1], [2, 2]]]])  # B=1, N=1, 2×2
    perfect = torch.nn.functional.one_hot(labels, 3).permute(0, 1, 4, 2, 3).float()
    assert mean_iou(perfect, labels, 3).item() == pytest.approx(1.0)
    all_two = torch.zeros(1, 1, 3, 2, 2)
    all_two[:, :, 2] = 1
    # Class 2: IoU 2/4; classes 0 and 1 present in the target only: IoU 0.
    assert mean_iou(all_two, labels, 3).item() == pytest.approx((0 + 0 + 0.5) / 3)
    # A class in neither prediction nor target does not count.
    assert mean_iou(all_two, labels, 4, torch.float64).item() == (0 + 0 + 0.5) / 3


def test_mean_box_iou():
    i, u = torch.tensor([[1.0, 2.0], [3.0, 3.0]]), torch.tensor([[2.0, 4.0], [3.0, 6.0]])
    assert mean_box_iou(i, u).tolist() == [0.5, 0.75]

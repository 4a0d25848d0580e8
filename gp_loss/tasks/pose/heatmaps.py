"""Keypoint heatmaps: Gaussian targets (encode) and arg-max decoding with the quarter-pixel shift.

Coordinates are continuous pixel coordinates (pixel j covers [j, j + 1), its centre at j + 0.5),
as torchvision's ``roi_align(aligned=True)`` samples them. A heatmap of stride s has its cell
j centred at crop coordinate (j + 0.5) s, so a keypoint at crop x lies at cell coordinate
x / s - 0.5. Targets are SimpleBaseline's (Xiao et al., "Simple Baselines for Human Pose
Estimation and Tracking", ECCV 2018): an unnormalised Gaussian of peak 1 at the keypoint.
Decoding takes each heatmap's arg-max and moves it a quarter cell towards the higher of its
two neighbours along each axis, the usual correction of the arg-max's quantisation.
"""
from __future__ import annotations

import torch

from gp_loss.probes.heatmaps import gaussians


def encode(points: torch.Tensor, height: int, width: int, stride: int, sigma: float) -> torch.Tensor:
    """Gaussian target heatmaps of keypoints.

    Args:
        points: N×K×2 keypoints (x, y) in crop pixels.
        height, width: the heatmaps' size (the crop's size / ``stride``).
        stride: crop pixels per heatmap cell.
        sigma: the Gaussian's standard deviation, in heatmap cells.
    Returns:
        N×K×height×width heatmaps in [0, 1], each peaking at its keypoint.
    """
    return gaussians(points.float() / stride - 0.5, height, width, sigma)


def decode(heatmaps: torch.Tensor, stride: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Keypoints of heatmaps: the arg-max with the quarter-cell shift, in crop pixels, and each peak's value.

    Args:
        heatmaps: N×K×H×W.
        stride: crop pixels per heatmap cell.
    Returns:
        ``(points, peaks)``: N×K×2 (x, y) in crop pixels and N×K peak values.
    """
    n, k, h, w = heatmaps.shape
    flat = heatmaps.float().reshape(n, k, h * w)
    peaks, at = flat.max(-1)
    row, col = torch.div(at, w, rounding_mode="floor"), at % w
    padded = torch.nn.functional.pad(heatmaps.float(), (1, 1, 1, 1), mode="replicate")  # edges: no shift
    pn = padded.reshape(n, k, -1)
    wp = w + 2

    def value(r: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        return pn.gather(-1, ((r + 1) * wp + (c + 1))[..., None])[..., 0]

    dx = torch.sign(value(row, col + 1) - value(row, col - 1)) * 0.25
    dy = torch.sign(value(row + 1, col) - value(row - 1, col)) * 0.25
    points = torch.stack([(col.float() + dx + 0.5) * stride, (row.float() + dy + 0.5) * stride], -1)
    return points, peaks

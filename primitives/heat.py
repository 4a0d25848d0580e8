"""The keypoint-heatmap loss kind: ``heat``, AutoLoss-Zero's operators (Li et al., CVPR 2022, Table 1) on heatmaps.

The operators are ``zero``'s; the inputs are a top-down pose network's: the predicted heatmaps,
the Gaussian target heatmaps and the keypoints' visibility weights. A kind of its own because
its filters judge a candidate on heatmap regression (:mod:`gp_loss.probes.heatmaps`), not on
``zero``'s softmax segmentation.
"""
from __future__ import annotations

from primitives.kind import Kind, build_kind
from primitives.zero_ops import OPERATORS

HEAT: Kind = build_kind(
    "heat",
    "keypoint heatmap regression (AutoLoss-Zero's operators), e.g. top-down pose estimation",
    {
        "yhat": "predicted heatmaps, N×K×H×W (the network's raw output, one map per keypoint)",
        "y": "target heatmaps, N×K×H×W: a Gaussian of peak 1 at each labelled keypoint, 0 for one not labelled",
        "w": "visibility weights, N×K×H×W: 1 where the keypoint is labelled, else 0 (constant over H×W)",
    },
    prediction="yhat",
    operators=dict(OPERATORS),
    search_constants=(1,),
)

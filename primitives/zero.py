"""The AutoLoss-Zero loss kind (Li et al., CVPR 2022, Table 1): ``zero``."""
from __future__ import annotations

from primitives.kind import Kind, build_kind
from primitives.zero_ops import OPERATORS

ZERO: Kind = build_kind(
    "zero",
    "generic dense prediction from scratch (AutoLoss-Zero), e.g. segmentation",
    {
        "yhat": "network prediction, N×C×H×W (gp-loss's tasks pass softmax probabilities over C)",
        "y": "training target (gp-loss's tasks pass one-hot labels), N×C×H×W",
    },
    prediction="yhat",
    operators=dict(OPERATORS),
    search_constants=(1,),
)

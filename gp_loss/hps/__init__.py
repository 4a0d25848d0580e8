"""HPS: integer hyper-parameter search with a Gaussian-process surrogate, as HPS-Det uses it.

HPS-Det (Ji Liu et al., AMD, "Dynamic Sample Assignment with Hyper-Parameter
Search for Object Detection") searches the number of positives per (FPN level
x aspect-ratio bin) with pySOT's DYCORS (Regis & Shoemaker, 2013; Eriksson,
Bindel & Shoemaker, 2019). The pieces are separate and swappable, as in pySOT:
:mod:`~gp_loss.hps.design` (initial design), :mod:`~gp_loss.hps.surrogate`
(the GP), :mod:`~gp_loss.hps.strategies` (DYCORS, SRBF, EI, LCB) and
:mod:`~gp_loss.hps.optimizer` (the asynchronous loop, checkpoints).
"""
from gp_loss.hps.optimizer import Result, maximize
from gp_loss.hps.strategies import STRATEGIES

__all__ = ["maximize", "Result", "STRATEGIES"]

"""The names of the search schemes, as ``SearchConfig.scheme`` and ``--scheme`` spell them.

The values are what users type and ``config.json`` stores, so they stay as
they are; the code uses the constants, which say which paper each scheme is.
(``zero`` is also the name of AutoLoss-Zero's operator kind, which is unrelated
to the scheme: a scheme may search any kind.)
"""
from __future__ import annotations

AUTOLOSS_ZERO = "zero"  # AutoLoss-Zero (Li et al., CVPR 2022): aging evolution from random genomes
CSE_AUTOLOSS = "cse"    # CSE-Autoloss (Liu et al., ICLR 2021): crossover and mutation from start formulas

SCHEME_NAMES = (AUTOLOSS_ZERO, CSE_AUTOLOSS)

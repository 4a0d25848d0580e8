"""The one rule for a number read from a user's data: a real number (never a boolean or a string),
finite, within its own bounds; anything else is one :class:`~gp_loss.errors.GpLossError` line.

Every reader (COCO instances, COCO segmentations, VOC folders, ImageFolder images) checks its
numbers through :func:`number_in` and :func:`integer_in`, and image sizes through
:func:`check_image_size`, so a value that would overflow later (a box of 1e308 becomes inf
once added, scaled or cast to float32) stops before any training with the file, the entry and
the fix named.
"""
from __future__ import annotations

import math

from gp_loss.errors import GpLossError

# An image's width or height, in pixels: JPEG's own limit, far above any image a search trains
# on, and small enough that a coordinate within it stays exact in float32 arithmetic.
MAX_IMAGE_SIDE = 65_535
# Ids are stored in int64 arrays by pycocotools and torch; COCO's own ids are non-negative.
MAX_ID = 2**63 - 1
# How far a box or polygon may reach past the image's edge (annotation tools round outwards):
# this fraction of the side, at least one pixel. Boxes within it are clipped to the image.
OUTSIDE_FRACTION = 0.01


def _real(value) -> bool:
    # bool is an int in Python: True would pass as 1.
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def number_in(value, lo: float, hi: float, where: str, what: str, fix: str) -> float:
    """``value`` as a float if it is a finite real number in ``[lo, hi]`` (finite bounds), else a
    :class:`GpLossError` ``"{where}: {what} must be a finite number from lo to hi, got value: {fix}"``."""
    # The common case first (datasets hold millions of numbers): a plain int or float between finite
    # bounds, which no NaN or infinity is. The range is compared before any float conversion: a JSON
    # integer of 400 digits has none.
    kind = type(value)
    if (kind is float or kind is int) and lo <= value <= hi:
        return float(value)
    if not (_real(value) and (isinstance(value, int) or math.isfinite(value)) and lo <= value <= hi):
        raise GpLossError(f"{where}: {what} must be a finite number from {lo:g} to {hi:g}, got {value!r}: {fix}")
    return float(value)


def integer_in(value, lo: int, hi: int, where: str, what: str, fix: str) -> int:
    """``value`` if it is an integer (not a boolean, not 2.0) in ``[lo, hi]``, else a :class:`GpLossError`."""
    if not (isinstance(value, int) and not isinstance(value, bool) and lo <= value <= hi):
        raise GpLossError(f"{where}: {what} must be an integer from {lo} to {hi}, got {value!r}: {fix}")
    return value


def outside_tolerance(side: float) -> float:
    """How far (pixels) a coordinate may lie outside an image side of ``side`` pixels: see ``OUTSIDE_FRACTION``."""
    return max(1.0, OUTSIDE_FRACTION * side)


def check_image_size(width, height, where: str, fix: str) -> tuple[int, int]:
    """``(width, height)`` if each is an integer from 1 to ``MAX_IMAGE_SIDE`` pixels."""
    return (integer_in(width, 1, MAX_IMAGE_SIDE, where, "the image width (pixels)", fix),
            integer_in(height, 1, MAX_IMAGE_SIDE, where, "the image height (pixels)", fix))


def image_read_errors() -> tuple[type[Exception], ...]:
    """What PIL raises for an image file it cannot read: a missing or broken file (``OSError``,
    ``UnidentifiedImageError``), a bad header (``ValueError``, ``SyntaxError``), or more pixels
    than its decompression-bomb limit (``DecompressionBombError``, which is no ``OSError``)."""
    from PIL import Image

    return OSError, ValueError, SyntaxError, Image.DecompressionBombError

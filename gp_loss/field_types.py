"""Type checks for configuration dataclasses filled from YAML, JSON or flags."""
from __future__ import annotations

from dataclasses import fields

from gp_loss.errors import GpLossError


def _matches(value, type_text: str) -> bool:
    if value is None:
        return "None" in type_text
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if type_text.startswith("int"):
        return number and isinstance(value, int)
    if type_text.startswith("float"):
        return number
    if type_text.startswith("bool"):
        return isinstance(value, bool)
    if type_text.startswith("str"):
        return isinstance(value, str)
    if type_text.startswith("dict"):
        return isinstance(value, dict)
    if type_text.startswith("list"):
        return isinstance(value, list)
    return True


def check_field_types(obj, label: str = "") -> None:
    """Raise :class:`GpLossError` naming the first field whose value has the wrong type.

    Annotations are read as text (``from __future__ import annotations``):
    ``int``, ``float`` (ints accepted), ``bool``, ``str``, ``dict``, ``list``,
    optionally ``| None``. A bool is not a number here.
    """
    for f in fields(obj):
        value = getattr(obj, f.name)
        if not _matches(value, str(f.type)):
            raise GpLossError(f"{label}{f.name} must be of type {f.type}, got {value!r}")


def check_numbers(obj, limits: dict[str, int], label: str = "") -> None:
    """Types (:func:`check_field_types`), then: every float field finite, each field of ``limits`` in [1, limit].

    ``limits``: integer field -> its upper bound (far above any real use, below what exhausts memory).
    """
    import math

    check_field_types(obj, label)
    for f in fields(obj):
        v = getattr(obj, f.name)
        if isinstance(v, float) and not math.isfinite(v):
            raise GpLossError(f"{label}{f.name} must be a finite number, got {v}")
    for name, most in limits.items():
        if not 1 <= getattr(obj, name) <= most:
            raise GpLossError(f"{label}{name} must be in [1, {most}], got {getattr(obj, name)}")


def options_from_dict(cls, data: dict, label: str):
    """``cls(**data)`` for an options dataclass; unknown names are one error naming the known ones.

    ``label``: what the options are, for the message (e.g. ``"detection task option"``).
    """
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise GpLossError(f"unknown {label}(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    return cls(**data)

"""Errors that are the user's to fix: the CLI prints them in one line and exits 2."""
from __future__ import annotations


class GpLossError(Exception):
    """A mistake in what the user gave gp-loss (formula, option, file, configuration)."""


class FormulaError(GpLossError):
    """Formula text that does not parse or does not type-check.

    ``position`` is the 0-based character offset of the offending token.
    """

    def __init__(self, message: str, formula: str = "", position: int | None = None):
        self.formula = formula
        self.position = position
        super().__init__(message)

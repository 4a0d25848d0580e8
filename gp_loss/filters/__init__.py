"""Staged candidate filters: cheap checks that reject unpromising losses before training."""
from gp_loss.filters.base import StageResult
from gp_loss.filters.validity import check_validity

__all__ = ["StageResult", "check_validity"]

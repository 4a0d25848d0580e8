"""Staged candidate filters: cheap checks that reject unpromising losses before training."""
from gp_loss.filters.base import Candidate, Stage, StageResult
from gp_loss.filters.validity import ValidityStage, check_validity

__all__ = ["Candidate", "Stage", "StageResult", "ValidityStage", "check_validity"]

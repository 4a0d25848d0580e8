"""Exporters, one small module per target (Python/torch, LaTeX)."""
from gp_loss.export.latex import to_latex
from gp_loss.export.torch_module import export_torch

__all__ = ["export_torch", "to_latex"]

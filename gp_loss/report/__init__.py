"""A run's report as one self-contained HTML page (``gp-loss report RUN_DIR --html``).

:mod:`~gp_loss.report.collect` reads the run directory, saying what is missing, and
:mod:`~gp_loss.report.script_runs` tells which program wrote it and reads an HPS-Det or
PAP-Loss run's files (:mod:`~gp_loss.report.script_page` draws those);
:mod:`~gp_loss.report.units` is how every metric is shown (×100);
:mod:`~gp_loss.report.legend` explains the operators drawn by name (``slog``, ``gd``, ...);
:mod:`~gp_loss.report.formulas` parses, simplifies (SymPy) and draws formulas;
:mod:`~gp_loss.report.curves` computes loss and gradient curves per kind;
:mod:`~gp_loss.report.figures` draws the charts; :mod:`~gp_loss.report.page` writes the page.
"""
from gp_loss.report.page import build_page, write_page

__all__ = ["build_page", "write_page"]

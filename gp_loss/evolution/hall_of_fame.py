"""Reading a run's hall of fame back (``hall_of_fame.json``: formula text only, never code)."""
from __future__ import annotations

from pathlib import Path

from gp_loss.errors import GpLossError
from gp_loss.evolution.run_dir import RunDir
from gp_loss.language.genome import Genome


def load_hall_of_fame(run_dir: str | Path) -> list[dict]:
    """The rows of ``RUN_DIR/hall_of_fame.json`` (rank, fitness, formulas, kinds, latex)."""
    run = RunDir(run_dir)
    if not run.path.is_dir():
        raise GpLossError(f"{run.path} is not a run directory")
    data = run.read_json(run.hall_of_fame_json)
    if data is None:
        raise GpLossError(f"{run.path} has no hall_of_fame.json yet: the run has not finished a generation")
    return data["hall_of_fame"]


def hall_of_fame_genome(rows: list[dict], top: int | None = None) -> Genome:
    """One genome with every member's branches, named ``top{rank}_{branch}``."""
    items = []
    for row in rows[:top]:
        for name, formula in row["formulas"].items():
            items.append((f"top{row['rank']}_{name}", row["kinds"][name], formula))
    if not items:
        raise GpLossError("the hall of fame is empty")
    return Genome.from_formulas(items)

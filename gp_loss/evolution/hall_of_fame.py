"""A run's hall of fame as rows of formula text (``hall_of_fame.json``: never code), and as one genome."""
from __future__ import annotations

from pathlib import Path

from gp_loss.errors import GpLossError
from gp_loss.evolution.individual import Individual, genome_of
from gp_loss.evolution.run_files import HALL_OF_FAME_JSON
from gp_loss.export import to_latex
from gp_loss.language.genome import Genome
from gp_loss.runtime.run_dir import RunDir


def hall_of_fame_rows(layout: dict[str, str], members: list[Individual]) -> list[dict]:
    """One row per member, best first: rank, fitness, evaluation, generation, formulas, kinds, LaTeX."""
    rows = []
    for rank, ind in enumerate(members, 1):
        genome = genome_of(layout, ind)
        rows.append({"rank": rank, "fitness": ind.fitness.values[0], "evaluation": ind.id,
                     "generation": ind.generation, "formulas": genome.formulas(), "kinds": dict(layout),
                     "latex": {b.name: to_latex(b.kind, b.tree) for b in genome}})
    return rows


def load_hall_of_fame(run_dir: str | Path) -> list[dict]:
    """The rows of ``RUN_DIR/hall_of_fame.json`` (rank, fitness, formulas, kinds, latex)."""
    run = RunDir(run_dir)
    if not run.path.is_dir():
        raise GpLossError(f"{run.path} is not a run directory")
    data = run.read_json(HALL_OF_FAME_JSON)
    if data is None:
        raise GpLossError(f"{run.path} has no hall_of_fame.json yet: the run has not finished a generation")
    return data["hall_of_fame"]


def hall_of_fame_genome(rows: list[dict], top: int | None = None) -> Genome:
    """One genome with the branches of the ``top`` best rows (all by default), named ``top{rank}_{branch}``."""
    items = []
    for row in rows[:top]:
        for name, formula in row["formulas"].items():
            items.append((f"top{row['rank']}_{name}", row["kinds"][name], formula))
    if not items:
        raise GpLossError("the hall of fame is empty")
    return Genome.from_formulas(items)

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
    return check_hall_of_fame(data, run.file(HALL_OF_FAME_JSON))


def check_hall_of_fame(data, where) -> list[dict]:
    """The rows of a ``hall_of_fame.json``'s content, or :class:`GpLossError` saying what is wrong with it.

    A row needs ``rank`` (int), ``fitness`` (number), ``formulas`` and ``kinds`` (branch name ->
    text, a kind for every formula); ``latex`` (branch name -> text) is filled in when missing.
    """
    def bad(what: str) -> GpLossError:
        return GpLossError(f"{where} is not a hall of fame ({what}); it is rewritten after every generation: "
                           f"resume the run, or restore the file")

    if not isinstance(data, dict) or not isinstance(data.get("hall_of_fame"), list):
        raise bad('expected {"hall_of_fame": [rows]}')
    rows = []
    for i, row in enumerate(data["hall_of_fame"], 1):
        if not isinstance(row, dict):
            raise bad(f"row {i} is not a mapping")
        formulas, kinds = row.get("formulas"), row.get("kinds")
        if not isinstance(formulas, dict) or not formulas or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in formulas.items()):
            raise bad(f"row {i} has no formulas (branch name -> formula text)")
        if not isinstance(kinds, dict) or any(not isinstance(kinds.get(n), str) for n in formulas):
            raise bad(f"row {i} has no kind for every branch of its formulas")
        rank, fitness = row.get("rank"), row.get("fitness")
        if not isinstance(rank, int) or isinstance(rank, bool):
            raise bad(f"row {i} has no integer rank")
        if not isinstance(fitness, (int, float)) or isinstance(fitness, bool):
            raise bad(f"row {i} has no numeric fitness")
        latex = row.get("latex")
        latex = latex if isinstance(latex, dict) else {}
        rows.append({**row, "latex": {n: latex.get(n) if isinstance(latex.get(n), str) else "?" for n in formulas}})
    return rows


def hall_of_fame_genome(rows: list[dict], top: int | None = None) -> Genome:
    """One genome with the branches of the ``top`` best rows (all by default), named ``top{rank}_{branch}``."""
    items = []
    for row in rows[:top]:
        for name, formula in row["formulas"].items():
            items.append((f"top{row['rank']}_{name}", row["kinds"][name], formula))
    if not items:
        raise GpLossError("the hall of fame is empty")
    return Genome.from_formulas(items)

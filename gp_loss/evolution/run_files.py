"""The files a search leaves in its run directory, and the record of one evaluation.

* ``config.json``: the resolved :class:`~gp_loss.evolution.config.SearchConfig`;
* ``evaluations.jsonl``: one line per proxy training, appended as it finishes
  (:func:`evaluation_record`); the checkpoint holds the digest of the lines it covers;
* ``evaluations.set_aside.jsonl``: lines a resume found damaged or not its own,
  each with its line number, the reason and its text as found;
* ``logbook.csv``: DEAP Logbook, one row per generation;
* ``hall_of_fame.json`` (formula text) and ``hall_of_fame.py`` (PyTorch export);
* ``baselines.json``: the baselines' proxy fitness; ``final.json``: test metric of
  the best losses and the baselines retrained with several seeds;
* ``fitness.png``: fitness over evaluations;
* ``checkpoint.json`` (+ ``checkpoint.prev.json``), see :mod:`gp_loss.runtime.checkpoint`.
"""
from __future__ import annotations

from gp_loss.errors import GpLossError
from gp_loss.evolution.config import with_added_fields
from gp_loss.runtime.run_dir import RunDir
from gp_loss.tasks import TrainOutcome

CONFIG = "config.json"
EVALUATIONS = "evaluations.jsonl"
SET_ASIDE = "evaluations.set_aside.jsonl"
LOGBOOK = "logbook.csv"
HALL_OF_FAME_JSON = "hall_of_fame.json"
HALL_OF_FAME_PY = "hall_of_fame.py"
BASELINES = "baselines.json"
FINAL = "final.json"
PLOT = "fitness.png"
MACHINE = "machine.json"  # where the run last ran: not a result, so apart from final.json


def read_stored_config(run: RunDir) -> dict | None:
    """The run's stored configuration as a dict (``None`` if it has no ``config.json``).

    Fields added to :class:`~gp_loss.evolution.config.SearchConfig` since the run
    was made are filled in with the values that reproduce what it did.
    """
    stored = run.read_json(CONFIG)
    if stored is not None and not isinstance(stored, dict):
        raise GpLossError(f"{run.file(CONFIG)} is not a configuration (a JSON mapping of fields)")
    if stored is not None and not isinstance(stored.get("task_options", {}), dict):
        raise GpLossError(f"{run.file(CONFIG)}: task_options is not a mapping of options")
    return None if stored is None else with_added_fields(stored)


def evaluation_record(outcome: TrainOutcome, *, generation: int, slot: int, evaluation: int,
                      formulas: dict[str, str], signature: tuple, fidelity: float = 1.0) -> dict:
    """One line of ``evaluations.jsonl``: where the child was made, and its training.

    Every field of the outcome goes in (its ``score`` as ``fitness``), so one
    that a task's outcome gains is recorded without a change here.
    """
    trained = outcome.to_dict()
    trained["fitness"] = trained.pop("score")
    return {"generation": generation, "slot": slot, "evaluation": evaluation, "fidelity": fidelity,
            "formulas": formulas, "signature": signature, **trained}

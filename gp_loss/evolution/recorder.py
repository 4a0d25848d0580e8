"""What a search leaves behind: its run directory's files, the checkpoint and its progress on screen.

The :class:`~gp_loss.evolution.search.Search` keeps the evolution state and
tells the recorder of every evaluation (appended to ``evaluations.jsonl`` at
once, so a kill loses only the trainings in flight) and of every generation's
end (logbook, hall of fame as JSON and PyTorch code, the plot, the checkpoint,
one summary line). File names: :mod:`gp_loss.evolution.run_files`.

The checkpoint carries the SHA-256 of the ``evaluations.jsonl`` lines it
covers: a resume whose file differs in them is refused, never reconciled.
"""
from __future__ import annotations

import sys
import time
from typing import TYPE_CHECKING

from tqdm import tqdm

from gp_loss.evolution.config import SearchConfig
from gp_loss.evolution.hall_of_fame import hall_of_fame_genome, hall_of_fame_rows
from gp_loss.evolution.individual import formulas_of
from gp_loss.evolution.plot import plot_fitness
from gp_loss.evolution.run_files import (BASELINES, EVALUATIONS, FINAL, HALL_OF_FAME_JSON, HALL_OF_FAME_PY,
                                         LOGBOOK, PLOT, SET_ASIDE)
from gp_loss.export import export_torch
from gp_loss.runtime.checkpoint import save_checkpoint
from gp_loss.runtime.run_dir import JsonlLine, RunDir, jsonl_digest, jsonl_text
from gp_loss.runtime.progress import Progress
from gp_loss.runtime.terminal import safe_line

if TYPE_CHECKING:
    from gp_loss.evolution.search import Search

# Every worker waits while the plot is drawn at the end of a generation, and matplotlib
# is slow next to the rest of the bookkeeping: redraw it at most this often (and at the end).
PLOT_EVERY_S = 120.0


SUMMARY_FORMULA_CHARS = 160


class Recorder:
    """Writes one search's run directory ``run`` and shows its progress."""

    def __init__(self, run: RunDir, config: SearchConfig, progress: bool | None = None):
        self.run = run
        self.config = config
        self._last_plot = float("-inf")
        self._digest = jsonl_digest([])  # of the evaluations.jsonl lines counted so far
        self._kept = 0  # how many lines, from the top of the file, those are
        self._pending: list[JsonlLine] = []  # lines after them, kept for reuse (resume_evaluations)
        self._aside: set[int] = set()  # ids of the lines set aside: each is copied there once
        self.progress_enabled = progress  # None: a bar while stderr is a terminal
        self.bar = tqdm(total=config.max_evaluations, unit="eval", desc="search", disable=progress is False
                        or (progress is None and not sys.stderr.isatty()), file=sys.stderr)

    def start_clock(self) -> None:
        """The search starts now: the plot is first drawn ``PLOT_EVERY_S`` after this, then as often."""
        self._last_plot = time.perf_counter()

    # -- evaluations.jsonl ------------------------------------------------------------------
    def evaluation(self, record: dict) -> None:
        """One proxy training (:func:`~gp_loss.evolution.run_files.evaluation_record`), flushed to disk.

        A record already on disk past the checkpoint (a training that finished before an interruption,
        reused on resume) is the next pending line: it is counted where it stands, not written again.
        """
        text = jsonl_text(record)
        if self._pending and self._pending[0].text == text:
            self._pending.pop(0)
        else:
            if self._pending:  # the search reuses pending lines in file order or sets them aside first
                self.set_aside([(line, "not reused in the order it was recorded on resume")
                                for line in self._pending])
            self.run.append_jsonl_text(EVALUATIONS, [text])
        self._kept += 1
        self._digest.update((text + "\n").encode("utf-8"))
        self.bar.update(record.get("fidelity", 1.0))  # the bar counts the budget: full proxy trainings

    def read_evaluations(self) -> list[dict]:
        """The records of ``evaluations.jsonl``'s sound lines."""
        return self.run.read_jsonl(EVALUATIONS)

    def evaluation_lines(self) -> list[JsonlLine]:
        """Every line of ``evaluations.jsonl`` as found, damaged ones included."""
        return self.run.read_jsonl_lines(EVALUATIONS)

    def evaluations_digest(self) -> str:
        """SHA-256 of the ``evaluations.jsonl`` lines the search has counted so far."""
        return self._digest.hexdigest()

    def resume_evaluations(self, covered: list[JsonlLine], pending: list[JsonlLine],
                           unusable: list[tuple[JsonlLine, str]]) -> None:
        """Line ``evaluations.jsonl`` up with a checkpoint that covers its first ``len(covered)`` lines.

        ``pending``: lines past them that the search may reuse, in file order; they stay where they
        are until reused (:meth:`evaluation`) or set aside, so a second interruption finds them again.
        ``unusable`` ``(line, reason)`` pairs are copied to ``evaluations.set_aside.jsonl`` (flushed to
        disk) before the file is rewritten without them: no record is ever only in memory.
        """
        self.set_aside(unusable)
        if unusable:
            self.run.rewrite_jsonl_text(EVALUATIONS, [line.text for line in covered + pending])
        self._kept = len(covered)
        self._digest = jsonl_digest([line.text for line in covered])
        self._pending = list(pending)

    def set_aside(self, lines: list[tuple[JsonlLine, str]]) -> None:
        """Move ``(line, reason)`` pairs of ``evaluations.jsonl`` to ``evaluations.set_aside.jsonl``, and say so.

        Nothing is dropped silently: each keeps its line number, reason and text as found. The copy
        is on disk before a pending line leaves ``evaluations.jsonl`` (rewritten atomically).
        """
        lines = [(line, reason) for line, reason in lines if id(line) not in self._aside]
        if not lines:
            return
        self._aside.update(id(line) for line, _ in lines)
        self.run.append_jsonl_text(SET_ASIDE, [jsonl_text({"line": line.number, "reason": reason,
                                                           "text": line.text}) for line, reason in lines])
        for line, reason in lines:
            tqdm.write(safe_line(f"gp-loss: warning: {self.run.file(EVALUATIONS)} line {line.number}: {reason}; "
                                 f"set aside in {SET_ASIDE}"), file=sys.stderr)
        leaving = {id(line) for line, _ in lines}
        if any(id(line) in leaving for line in self._pending):
            self._pending = [line for line in self._pending if id(line) not in leaving]
            kept = [line.text for line in self.evaluation_lines()[:self._kept]]
            self.run.rewrite_jsonl_text(EVALUATIONS, kept + [line.text for line in self._pending])

    def checkpoint(self, search: Search) -> None:
        """Save the search's state with the digest of the evaluation lines it covers."""
        save_checkpoint(self.run.path, {**search.state_dict(), "evaluations_sha256": self.evaluations_digest()})

    def resumed(self, search: Search) -> None:
        """The search continues from a checkpoint: its evaluations so far are done."""
        self.bar.update(search.spent)

    # -- the end of a generation ---------------------------------------------------------------
    def generation(self, search: Search) -> None:
        """Write the run files and the checkpoint; print one summary line."""
        now = time.perf_counter()
        self.write_results(search, plot=now - self._last_plot >= PLOT_EVERY_S)
        self.checkpoint(search)
        funnel, best = search.funnel, search.best()
        spent = f" ({search.spent:.1f} of {self.config.max_evaluations} spent)" if search.multi_fidelity else (
            f"/{self.config.max_evaluations}")
        line = (f"gen {search.generation - 1:>3} | evals {search.evaluations}{spent} "
                f"| reused {search.reused} | candidates {funnel.candidates} "
                f"({100 * funnel.rejection_rate:.1f}% filtered) | {search.elapsed():.0f} s")
        if best is not None:
            formulas = " ".join(f"{n}={f}" for n, f in formulas_of(search.layout, best).items())
            # One line per generation: a long genome (a detector's branches) is cut; the files hold it whole.
            line += f" | best {best.fitness.values[0]:.4f} " + (
                formulas if len(formulas) <= SUMMARY_FORMULA_CHARS else formulas[:SUMMARY_FORMULA_CHARS - 1] + "…")
        tqdm.write(safe_line(line), file=sys.stdout)

    def write_results(self, search: Search, plot: bool = True) -> None:
        """Logbook, hall of fame (JSON and PyTorch) and, with ``plot``, the fitness plot."""
        metric = search.metric
        self.run.write_csv(LOGBOOK, list(search.logbook))
        rows = hall_of_fame_rows(search.layout, list(search.hall_of_fame))
        self.run.write_json(HALL_OF_FAME_JSON, {"metric": f"validation {metric}", "task": self.config.task,
                                                "hall_of_fame": rows})
        if rows:
            self.run.write_text(HALL_OF_FAME_PY, export_torch(
                hall_of_fame_genome(rows),
                header=f"Hall of fame of the {self.config.task} search in {self.run.path} "
                       f"(top1 is the best by validation {metric}; each of its branches is also "
                       f"defined under the branch's own name).",
                aliases={branch: f"top1_{branch}" for branch in rows[0]["formulas"]}))
        if plot:
            # Scores of the whole proxy only: a lower rung's are not comparable with the baselines'.
            whole = [r for r in self.read_evaluations() if r.get("fidelity", 1.0) == 1.0]
            plot_fitness(whole, search.baseline_fitness, self.run.file(PLOT), metric)
            self._last_plot = time.perf_counter()

    # -- results outside the generations ------------------------------------------------------
    def baselines_start(self, names: list[str], metric: str) -> None:
        """Show the baselines' proxy trainings as they end: they run before the first generation."""
        self._baseline_metric = metric
        self._baselines = Progress(len(names), "baselines", enabled=self.progress_enabled)
        self._baselines.line(safe_line(f"baselines: {len(names)} proxy training(s) ({', '.join(names)})"))

    def baseline_trained(self, name: str, outcome) -> None:
        progress = self._baselines
        progress.step()
        status = "" if outcome.status == "ok" else f" ({outcome.status}" + (
            f": {outcome.reason})" if outcome.reason else ")")
        progress.line(safe_line(f"baseline {progress.done}/{progress.total} | {name}: {self._baseline_metric} "
                                f"{100 * outcome.score:.2f}{status} | {progress.seconds():.0f} s"))
        if progress.done >= progress.total:
            progress.close()

    def baselines(self, fitness: dict[str, float]) -> None:
        """The baselines' proxy fitness (``baselines.json``)."""
        self.run.write_json(BASELINES, fitness)

    def final(self, result: dict) -> None:
        """The final retraining's results (``final.json``)."""
        self.run.write_json(FINAL, result)

    def read_final(self) -> dict | None:
        return self.run.read_json(FINAL)

    def close(self) -> None:
        """The search is over: take the progress bar down."""
        self.bar.close()

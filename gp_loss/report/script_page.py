"""The page sections of an HPS-Det or PAP-Loss run (:class:`~gp_loss.report.script_runs.ScriptRun`).

The run at a glance, its settings, the history of proxy trainings (each one's
metric and the best so far), the best point, the final comparison and the
pictures the script drew. Every text from the run directory goes through
:func:`~gp_loss.report.page.e`; a picture from it is put into the page only if it
is a PNG (its first bytes say so) of at most
:data:`~gp_loss.report.script_runs.PICTURE_BYTES`.
"""
from __future__ import annotations

from gp_loss.metrics.paired import comparison_text
from gp_loss.report import figures
from gp_loss.report.page import data_uri, e, img
from gp_loss.report.script_runs import HPS_DET, PICTURE_BYTES, ScriptRun, describe, point_text, verdict_text
from gp_loss.report.units import metric_gain, metric_label, metric_value, scaled

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _final_line(run: ScriptRun) -> str:
    seeds = ", ".join(str(s) for s in run.final_seeds) or "?"
    return f"{metric_label(run.final_metric or run.metric)} after {run.final_steps} steps, seeds {seeds}"


def script_glance(run: ScriptRun) -> str:
    parts = []
    if run.best_point is not None or run.best_value is not None:
        parts.append(f"Best point of the search: <b>{e(run.best_name)} = {e(point_text(run.best_point))}</b>, "
                     f"proxy {e(metric_label(run.metric))} {metric_value(run.best_value)}")
    if run.final:
        rows = "; ".join(f"{e(r.label)} <b>{metric_value(r.mean)} ± {metric_value(r.std)}</b>"
                         + (f" ({e(comparison_text(r.vs_reference))}, paired, 95% CI)" if r.vs_reference else "")
                         for r in run.final)
        gain = run.gain
        parts.append(f"After retraining ({e(_final_line(run))}): {rows}"
                     + (f". Gain over {e(run.gain_over)}: <b>{metric_gain(gain)}</b>" if gain is not None else "")
                     + ".")
    if not parts:
        return ""
    return '<div class="glance">' + "<br>".join(parts) + "</div>"


def _facts(run: ScriptRun) -> str:
    task, settings = run.task, run.settings
    facts = [("what", e(run.title)), ("search", e(describe(run)))]
    if run.history_file:
        facts.append(("history read from", e(run.history_file)))
    if task:
        data = task.get("data")
        facts.append(("data", e(data) + (f", validation {e(task.get('val_data'))}" if task.get("val_data") else "")))
        facts.append(("training", f"{e(task.get('proxy_steps'))} steps a proxy, {e(task.get('final_steps'))} steps "
                                  f"a final training, batch {e(task.get('batch_size'))}, lr {e(task.get('lr'))}"))
    if settings:
        facts.append(("device", f"{e(settings.get('device'))}, {e(settings.get('workers'))} worker(s), "
                                f"{e(settings.get('threads'))} torch thread(s) each, seed {e(settings.get('seed'))}"))
    facts.append(("run directory", f"<code>{e(run.path.resolve())}</code>"))
    body = "".join(f"<dt>{k}</dt><dd>{v}</dd>" for k, v in facts)
    return f'<h2>The run</h2><dl class="facts">{body}</dl>'


def _history(run: ScriptRun) -> str:
    if not run.trials:
        return ""
    records = [{"evaluation": t.number, "fitness": scaled(t.value) if t.value is not None else 0.0,
                "status": "ok" if t.value is not None else "failed"} for t in run.trials]
    png = figures.fitness_png(records, {}, f"proxy {metric_label(run.metric)}")
    rows, best = [], None
    for t in run.trials:
        if t.value is not None and (best is None or t.value > best):
            best = t.value
        at = f"{t.at_s:.1f}" if t.at_s is not None else "–"
        rows.append(f"<tr><td class=num>{t.number}</td><td class=num>{metric_value(t.value)}</td>"
                    f"<td class=num>{metric_value(best)}</td><td class=num>{at}</td>"
                    f"<td><code>{e(point_text(t.point, limit=12))}</code></td><td>{e(t.error)}</td></tr>")
    failed = sum(t.value is None for t in run.trials)
    table = (f"<details><summary>every proxy training ({len(run.trials)}"
             + (f", {failed} failed" if failed else "") + f")</summary><table><tr><th>#</th>"
             f"<th>{e(metric_label(run.metric))}</th><th>best so far</th><th>finished at (s)</th>"
             f"<th>{e(run.point_name)}</th><th>error</th></tr>{''.join(rows)}</table></details>")
    return (f"<h2>History of the search</h2><p class=note>Each dot is one proxy training, by its number; crosses "
            f"are trainings that failed (shown at 0); the line is the best so far.</p>"
            f"{img(png, 'proxy metric over the search')}{table}")


def _best(run: ScriptRun) -> str:
    if run.best_point is None and run.best_value is None:
        return ""
    details = "".join(f"<tr><td>{e(k)}</td><td><code>{e(v)}</code></td></tr>" for k, v in run.best_details)
    table = f"<table><tr><th>part</th><th>value</th></tr>{details}</table>" if details else ""
    shown = point_text(run.best_point, limit=12 if run.best_details else 50)  # (the table shows every value)
    return (f"<h2>Best point</h2><p>{e(run.best_name)} = <code>{e(shown)}</code>, "
            f"proxy {e(metric_label(run.metric))} {metric_value(run.best_value)}.</p>{table}")


def _final(run: ScriptRun) -> str:
    if not run.final:
        return ""
    rows = []
    # a final.json without verdicts has no paired column
    paired = any(r.vs_reference is not None for r in run.final)
    for r in run.final:
        scores = ", ".join(metric_value(s) for s in r.scores)
        failed = "<br>".join(e(f) for f in r.failed)
        verdict = f"<td>{e(verdict_text(run, r))}</td>" if paired else ""
        rows.append(f"<tr><td>{e(r.label)}</td><td class=num>{metric_value(r.mean)} ± {metric_value(r.std)}</td>"
                    f"{verdict}<td class=num>{scores}</td><td>{failed}</td></tr>")
    head = f"<th>vs {e(run.reference or 'the reference')} (paired, ×100, 95% CI)</th>" if paired else ""
    gain = (f"<p>Gain of the searched {'assignment' if run.kind == HPS_DET else 'θ'} over {e(run.gain_over)}: "
            f"<b>{metric_gain(run.gain)}</b></p>") if run.gain is not None else ""
    return (f"<h2>Final comparison</h2><p class=note>{e(_final_line(run))}: each row retrained on the same "
            f"seeds.</p><table><tr><th>loss or assignment</th><th>mean ± std</th>{head}<th>each seed</th>"
            f"<th>failed trainings</th></tr>{''.join(rows)}</table>{gain}")


def _pictures(run: ScriptRun, notes: list[str]) -> str:
    out = []
    for caption, path in run.pictures.items():
        try:
            data = path.read_bytes() if path.stat().st_size <= PICTURE_BYTES else b""
        except OSError:
            data = b""
        if not data.startswith(PNG_MAGIC):
            notes.append(f"{path.name} is not put into the page (not a PNG of at most "
                         f"{PICTURE_BYTES // 1024 // 1024} MB); it is left as it is")
            continue
        out.append(f'<h3>{e(path.name)}: {e(caption)}</h3><img class="chart" alt="{e(path.name)}" '
                   f'src="{data_uri(data)}">')
    return ("<h2>The script's pictures</h2>" + "".join(out)) if out else ""


def script_sections(run: ScriptRun) -> list[str]:
    """The sections of the page of ``run``, in order (a picture that cannot be shown adds to its problems)."""
    notes: list[str] = []
    sections = [_facts(run), _history(run), _best(run), _final(run), _pictures(run, notes)]
    run.problems.extend(notes)
    return sections

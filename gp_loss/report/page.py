"""``gp-loss report RUN_DIR --html``: one self-contained HTML page of a run.

The page holds everything it shows: CSS inline, every picture a base64 PNG
``data:`` URI, no script, no font or file fetched from anywhere, so it opens from
disk, offline, and can be mailed. Every text that comes from the run directory
(its path, branch names, formulas, baseline names, reasons, configuration
values) goes through :func:`html.escape`; formulas are drawn only after the
loss language's parser accepted them (:mod:`gp_loss.report.formulas`).

Sections: what is missing, the run at a glance (task, budget, device, wall time),
the hall of fame beside the baselines (rendered simplified formulas and their
exact text, validation fitness, final test metric), each loss of the final retraining
against the reference baseline (paired difference, 95% interval and verdict, drawn as
a forest plot; :mod:`gp_loss.metrics.paired`), loss curves of the top losses
against the baselines (:mod:`gp_loss.report.curves`), fitness over time, the
filter funnel with its rejection reasons, how proxy trainings ended, and the
whole configuration.
"""
from __future__ import annotations

import base64
import datetime
import html
import json
import math
from collections import Counter
from pathlib import Path

from gp_loss.errors import GpLossError
from gp_loss.report import curves as curve_mod
from gp_loss.report import figures
from gp_loss.report.collect import RunFiles, finite, number
from gp_loss.report.formulas import Formula, Formulas, kind_of
from gp_loss.metrics.paired import read_comparison
from gp_loss.report.legend import operator_legend
from gp_loss.runtime.terminal import safe_text
from gp_loss.report.units import UNIT, metric_gain, metric_label, metric_value, scaled

CURVE_TOP = 3  # found losses drawn per branch
REASONS_SHOWN = 6
MACHINE_KEYS = ("machine", "host", "hostname", "platform", "device_name", "devices", "gpu", "cpu", "python",
                "torch_version", "cuda", "workers")

CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,Helvetica,Arial,sans-serif;margin:0 auto;
max-width:1180px;padding:0 18px 40px;color:#222;line-height:1.45}
h1{font-size:1.5em;margin:18px 0 4px}h2{font-size:1.2em;margin-top:30px;border-bottom:1px solid #ddd;
padding-bottom:3px}h3{font-size:1.02em;margin:18px 0 6px}
.sub{color:#666;margin:0 0 12px;word-break:break-all}
.glance{background:#f4f8fc;border:1px solid #cfe0f0;border-radius:6px;padding:10px 14px;font-size:1.05em}
.missing{background:#fff6e5;border:1px solid #f0c36d;border-radius:6px;padding:8px 14px}
.missing li{word-break:break-word}
table{border-collapse:collapse;margin:6px 0;font-size:.92em}
th,td{border:1px solid #ddd;padding:4px 8px;vertical-align:top;text-align:left}
th{background:#f3f3f3}td.num{text-align:right;white-space:nowrap;font-variant-numeric:tabular-nums}
tr.baseline td{background:#fafafa}
code{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;font-size:.86em;word-break:break-all}
.formula img{max-width:100%;height:auto;display:block;margin:2px 0 4px}
.formula{max-width:640px}.branch{color:#555;font-size:.85em}
.note{color:#666;font-size:.88em}
img.chart{max-width:100%;height:auto;border:1px solid #eee}
dl.facts{display:grid;grid-template-columns:max-content auto;gap:2px 14px;margin:6px 0}
dl.facts dt{color:#555}dl.facts dd{margin:0;word-break:break-word}
details{margin:8px 0}summary{cursor:pointer;color:#345}
td ul{margin:0;padding-left:18px}
"""


def e(value: object) -> str:
    """Escaped text of anything from the run directory: HTML's special characters, and control characters
    and bidirectional overrides shown as visible escapes (a browser would otherwise reorder the text)."""
    return html.escape(safe_text(value), quote=True)


def data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def img(png: bytes | None, alt: str, cls: str = "chart") -> str:
    if not png:
        return ""
    return f'<img class="{cls}" alt="{e(alt)}" src="{data_uri(png)}">'


def _duration(seconds) -> str:
    if not finite(seconds):
        return "–"
    seconds = float(seconds)
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, s = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min {s} s" if hours else f"{minutes} min {s} s"


def _label(name: str) -> str:
    """``top3`` (a row of final.json) as the hall of fame's ``#3``."""
    return "#" + name[3:] if name.startswith("top") and name[3:].isdigit() else name


def display_reason(key: str) -> str:
    """A funnel reason as shown: each number that differs between the candidates counted together
    (blanked to ``#`` when they were grouped) as "…", and a reason cut short marked so."""
    text = key.replace("#", "…")
    return text + " (cut short)" if len(key) >= 120 else text


def legend_html(formulas) -> str:
    """The legend of the operators drawn by name in ``formulas`` (:mod:`gp_loss.report.legend`)."""
    entries = operator_legend(formulas)
    if not entries:
        return ""
    items = "".join(f"<li><code>{e(entry.text())}</code></li>" for entry in entries)
    return f'<div class="note">Operators drawn by name in these formulas:<ul>{items}</ul></div>'


class Page:
    """Builds the page of one run from its :class:`~gp_loss.report.collect.RunFiles`."""

    def __init__(self, run: RunFiles, top: int = 5):
        self.run = run
        self.top = top
        self.formulas = Formulas()
        self.config = run.config or {}
        self.layout = run.layout
        self.notes: list[str] = []  # things drawn with a caveat, listed with the missing files
        self.task = None
        try:
            from gp_loss.tasks.registry import task_info
            self.task = task_info(self.config.get("task")) if self.config else None
        except GpLossError:
            self.task = None
        self.val_metric = f"validation {self.task.metric}" if self.task else "validation fitness"
        self.final_metric = run.final["metric"] if run.final else "final metric"
        self.shown: list[Formula] = []  # every formula drawn, for the legend of its operators

    # -- data --------------------------------------------------------------------------------
    def hall_rows(self) -> list[dict]:
        return self.run.hall_of_fame[:self.top]

    def final_row(self, name: str) -> dict | None:
        for r in (self.run.final or {}).get("rows", []):
            if r["name"] == name:
                return r
        return None

    def baseline_rows(self) -> list[tuple[str, dict[str, object]]]:
        """Baseline name -> branch -> text (formula or what trains it), from final.json, else the task."""
        names = list(self.run.baselines)
        listed = self.config.get("baselines")
        for n in listed if isinstance(listed, list) else []:
            if isinstance(n, str) and n not in names:
                names.append(n)
        rows = []
        final_rows = [r for r in (self.run.final or {}).get("rows", [])
                      if r.get("baseline") is True or (r.get("baseline") is None and r["name"] in names)]
        for r in final_rows:
            rows.append((r["name"], r["formulas"]))
        known = {n for n, _ in rows}
        if self.task is not None and any(n not in known for n in names):
            try:
                texts = self.task.baselines_for(self.task.make_options(self.config.get("task_options") or {}))
            except (GpLossError, KeyError, TypeError, ValueError, OSError):
                texts = {}
            for n in names:
                if n not in known and isinstance(texts.get(n), dict):
                    rows.append((n, texts[n]))
        return rows

    # -- pieces ------------------------------------------------------------------------------
    def formula_cell(self, kind_name: object, text: object, branch: str | None = None) -> str:
        f = self.formulas.get(kind_name, text)
        self.shown.append(f)
        head = "" if branch is None else (f'<div class="branch">{e(branch)}</div>' if branch == kind_name else
                                          f'<div class="branch">{e(branch)} ({e(kind_name)})</div>')
        if not f.parsed:
            return (f'<div class="formula">{head}<code>{e(f.text)}</code>'
                    f'<div class="note">shown as text: {e(f.problem)}</div></div>')
        picture = img(self.formulas.image(f), f"{branch or ''} = {f.text}", cls="math")
        if not picture:
            picture = '<div class="note">(mathtext cannot draw this formula)</div>'
        return f'<div class="formula">{head}{picture}<code>{e(f.text)}</code></div>'

    def glance(self) -> str:
        run = self.run
        parts = []
        rows = self.hall_rows()
        final = run.final
        if rows:
            best = rows[0]
            fr = self.final_row(f"top{best['rank']}")
            line = (f"Best found loss: <b>#{e(best['rank'])}</b>, {e(metric_label(self.val_metric))} "
                    f"{metric_value(best['fitness'])}")
            if fr:
                line += (f"; {e(metric_label(self.final_metric))} "
                         f"<b>{metric_value(fr['mean'])} ± {metric_value(fr['std'])}</b>")
            parts.append(line)
        if final:
            found = [r for r in final["rows"] if r.get("baseline") is not True and r["name"].startswith("top")]
            base = [r for r in final["rows"] if r not in found]
            if isinstance(final.get("summary"), str) and final["summary"]:  # its verdict, paired on the seeds
                parts.append(f"After retraining: {e(final['summary'])} (×100, paired on the seeds).")
            elif found and base:  # a run without paired verdicts: the numbers alone, no verdict
                fb = max(found, key=lambda r: r["mean"] if finite(r["mean"]) else -math.inf)
                bb = max(base, key=lambda r: r["mean"] if finite(r["mean"]) else -math.inf)
                parts.append(f"After retraining, on {e(metric_label(final['metric']))}: the best found loss "
                             f"({e(_label(fb['name']))}) {metric_value(fb['mean'])} ± {metric_value(fb['std'])}, "
                             f"the best baseline ({e(bb['name'])}) {metric_value(bb['mean'])} ± "
                             f"{metric_value(bb['std'])}.")
            if isinstance(final.get("load_dependence"), str):  # a time limit stopped trainings or candidates
                parts.append(f"<b>Warning</b>: {e(final['load_dependence'])}.")
        elif run.baselines and rows:
            name, value = max(run.baselines.items(), key=lambda kv: kv[1] if finite(kv[1]) else -math.inf)
            parts.append(f"Best baseline on the proxy: {e(name)}, {e(metric_label(self.val_metric))} "
                         f"{metric_value(value)}.")
        if not parts:
            return ""
        return '<div class="glance">' + "<br>".join(parts) + "</div>"

    def missing(self) -> str:
        items = self.run.problems + [f"warning: {w}" for w in self.run.warnings] + self.notes
        if not items:
            return ""
        lis = "".join(f"<li>{e(i)}</li>" for i in items)
        return f'<div class="missing"><b>Missing, damaged or left out</b>:<ul>{lis}</ul></div>'

    def facts(self) -> str:
        c, s = self.config, self.run.state or {}
        facts: list[tuple[str, str]] = []
        if c:
            facts.append(("task", e(c.get("task"))))
            facts.append(("scheme, seed", f"{e(c.get('scheme'))}, seed {e(c.get('seed'))}"))
            facts.append(("branches", ", ".join(f"{e(n)} ({e(k)})" for n, k in self.layout.items()) or "–"))
        done = s.get("evaluations") if number(s.get("evaluations")) else len(self.run.evaluations) or None
        budget = c.get("max_evaluations")
        line = f"{e(done) if done is not None else '–'} of {e(budget) if budget is not None else '–'} proxy trainings"
        if number(s.get("generation")):
            line += f", {e(s['generation'])} generations"
        if number(s.get("reused")) and s.get("reused"):
            line += f", {e(s['reused'])} children reused without training"
        facts.append(("evaluations", line))
        if c.get("max_seconds") is not None:
            facts.append(("time budget", _duration(c.get("max_seconds"))))
        wall = s.get("elapsed_s")
        if not finite(wall) and self.run.logbook:
            try:
                wall = float(self.run.logbook[-1].get("wall_s"))
            except (TypeError, ValueError):
                wall = None
        timing = _duration(wall)
        if finite(s.get("train_s")) and finite(s.get("breed_s")):
            timing += (f" (proxy training {_duration(s['train_s'])}, breeding through the filters "
                       f"{_duration(s['breed_s'])})")
        facts.append(("search wall time", timing))
        if c:
            facts.append(("device", f"{e(c.get('device'))}, {e(c.get('torch_threads'))} torch thread(s) an evaluation"
                                    + (", deterministic" if c.get("deterministic") is True else "")))
        machine = self.machine()
        facts.append(("machine", machine or '<span class="note">not recorded in this run directory</span>'))
        if c.get("task_options"):
            facts.append(("task options", e(json.dumps(c.get("task_options"), sort_keys=True))))
        facts.append(("run directory", f"<code>{e(self.run.path.resolve())}</code>"))
        body = "".join(f"<dt>{k}</dt><dd>{v}</dd>" for k, v in facts)
        return f'<h2>The run</h2><dl class="facts">{body}</dl>'

    def machine(self) -> str:
        found = []
        for where in (self.run.machine or {}, self.config, self.run.state or {}, self.run.final or {}):
            for key in MACHINE_KEYS:
                if key in where and where[key] not in (None, "", {}, []):
                    value = where[key]
                    text = json.dumps(value, sort_keys=True) if not isinstance(value, str) else value
                    found.append(f"{e(key)}: {e(text[:300])}")
        return "; ".join(dict.fromkeys(found))

    def hall_of_fame(self) -> str:
        rows = self.hall_rows()
        if not rows:
            return ""
        final = self.run.final
        head = (f"<tr><th>rank</th><th>{e(metric_label(self.val_metric))}<br>(proxy)</th><th>"
                f"{e(metric_label(self.final_metric))}<br>(mean ± std over seeds)</th><th>found at</th>"
                f"<th>formulas (simplified; exact text below)</th></tr>")
        body = []
        for row in rows:
            fr = self.final_row(f"top{row['rank']}")
            test = f"{metric_value(fr['mean'])} ± {metric_value(fr['std'])}" if fr else (
                "not retrained" if final else "–")
            where = []
            if number(row.get("evaluation")):
                where.append(f"evaluation {e(row['evaluation'])}")
            if number(row.get("generation")):
                where.append(f"generation {e(row['generation'])}")
            cells = "".join(self.formula_cell(row["kinds"].get(n), t, n) for n, t in row["formulas"].items())
            body.append(f"<tr><td class=num>#{e(row['rank'])}</td><td class=num>{metric_value(row['fitness'])}</td>"
                        f"<td class=num>{test}</td><td>{'<br>'.join(where)}</td><td>{cells}</td></tr>")
        for name, texts in self.baseline_rows():
            fr = self.final_row(name)
            test = f"{metric_value(fr['mean'])} ± {metric_value(fr['std'])}" if fr else "–"
            cells = "".join(self.formula_cell(self.layout.get(n, "?") if isinstance(n, str) else "?", t, n)
                            for n, t in texts.items())
            body.append(f'<tr class="baseline"><td>baseline<br><b>{e(name)}</b></td>'
                        f"<td class=num>{metric_value(self.run.baselines.get(name))}</td><td class=num>{test}</td>"
                        f"<td></td><td>{cells}</td></tr>")
        others = ""
        if final:
            metrics = sorted({m for r in final["rows"] if isinstance(r.get("metrics"), dict) for m in r["metrics"]})
            if metrics:
                mhead = "".join(f"<th>{e(m)}</th>" for m in metrics)
                mrows = []
                for r in final["rows"]:
                    ms = r.get("metrics") if isinstance(r.get("metrics"), dict) else {}
                    mrows.append(f"<tr><td>{e(r['name'])}</td>" + "".join(
                        f"<td class=num>{metric_value(ms.get(m))}</td>" for m in metrics) + "</tr>")
                others = (f"<details><summary>every metric of the final retraining ({UNIT})</summary>"
                          f"<table><tr><th>loss</th>{mhead}</tr>{''.join(mrows)}</table></details>")
        return (f"<h2>Hall of fame and baselines</h2><p class=note>The formulas are drawn simplified by SymPy, "
                f"for reading only (the guards of log, div and exp left out); the text below each is the exact "
                f"loss that trained.</p><table>{head}{''.join(body)}</table>{legend_html(self.shown)}{others}")

    def comparison(self) -> str:
        """Each loss of the final retraining against the reference baseline: its paired difference, 95%
        interval and verdict as a table and a forest plot, under the summary sentence. Empty for a run whose
        final.json holds no verdicts."""
        final = self.run.final
        if not final:
            return ""
        rows = [(r, read_comparison(r.get("vs_reference"))) for r in final["rows"]]
        compared = [c for _, c in rows if c]
        if not compared:
            return ""
        reference = final["reference"] if isinstance(final.get("reference"), str) else compared[0]["baseline"]
        metric = metric_label(final["metric"])
        body = []
        for r, c in rows:
            score = f"{metric_value(r['mean'])} ± {metric_value(r['std'])}"
            if c is None:
                cells = ('<td colspan=3 class="note">the reference</td>' if r["name"] == reference else
                         '<td colspan=3 class="note">not compared</td>')
            else:
                ci = c["ci95"]
                cells = (f"<td class=num>{metric_gain(c['delta'])}</td><td class=num>"
                         + (f"[{metric_gain(ci[0])}, {metric_gain(ci[1])}]" if ci else "one seed: none")
                         + f"</td><td>{e(c['verdict'])}"
                         + (f" than {e(c['baseline'])}" if c["verdict"] in ("better", "worse") else "")
                         + ("" if c["baseline"] == reference else f" (vs {e(c['baseline'])})") + "</td>")
            cls = ' class="baseline"' if r.get("baseline") is True else ""
            kept = f" (= {e(r['same_as'])})" if isinstance(r.get("same_as"), str) else ""  # a baseline kept as best
            body.append(f"<tr{cls}><td>{e(r['name'])}{kept}</td><td class=num>{score}</td>{cells}</tr>")
        forest = [(r["name"], scaled(c["delta"]), (scaled(c["ci95"][0]), scaled(c["ci95"][1])) if c["ci95"] else None,
                   c["verdict"]) for r, c in rows if c and c["delta"] is not None]
        png = figures.forest_png(forest, reference, metric) if forest else None
        seeds = next((r["seeds"] for r in final["rows"] if isinstance(r.get("seeds"), list)), None)
        on = f" ({', '.join(e(s) for s in seeds)})" if seeds else ""
        summary = final.get("summary")
        head = f"<p><b>{e(summary)}</b></p>" if isinstance(summary, str) and summary else ""
        return (f"<h2>Final retraining: each loss against {e(reference)}</h2>{head}<p class=note>Every loss was "
                f"retrained on the same seeds{on}, so each is compared with {e(reference)} seed by seed: the mean "
                f"of the paired differences in {e(metric)} and its 95% Student-t confidence interval. A loss is "
                f"better or worse only where the interval excludes 0; otherwise the difference is within the "
                f"seeds' noise.</p>{img(png, f'paired differences from {reference}')}"
                f"<table><tr><th>loss</th><th>{e(metric)}<br>(mean ± std over seeds)</th><th>difference</th>"
                f"<th>95% CI</th><th>verdict</th></tr>{''.join(body)}</table>")

    def loss_curves(self) -> str:
        if not self.layout:
            return ""
        out = []
        baselines = self.baseline_rows()
        for branch, kind_name in self.layout.items():
            sweeps = curve_mod.sweeps_for(kind_name)
            kind = kind_of(kind_name)
            if not sweeps or kind is None:
                self.notes.append(f"no loss curves for branch {branch} of kind {kind_name}")
                continue
            series: list[tuple[str, bool, dict]] = []
            labels: dict[str, list[str]] = {}
            order: list[str] = []
            for row in self.hall_rows()[:CURVE_TOP]:
                text = row["formulas"].get(branch)
                if isinstance(text, str):
                    if text not in labels:
                        order.append(text)
                    labels.setdefault(text, []).append(f"#{row['rank']}")
            base_texts = [(name, texts.get(branch)) for name, texts in baselines]
            for text in order:
                label = ", ".join(labels[text])
                same = [n for n, t in base_texts if t == text]
                if same:
                    label += f" (= {same[0]})"
                self._add_series(series, label, False, kind_name, text, sweeps, branch)
            skipped = []
            for name, text in base_texts:
                if text is None:
                    continue
                f = self.formulas.get(kind_name, text)
                if not f.parsed:
                    skipped.append(f"{name} ({text})")
                    continue
                self._add_series(series, name, True, kind_name, text, sweeps, branch)
            if not series:
                continue
            png = figures.curves_png(sweeps, series)
            note = (f'<p class="note">Baselines not drawn, as they are not formulas of this kind: '
                    f'{e("; ".join(skipped))}</p>') if skipped else ""
            out.append(f"<h3>branch {e(branch)} ({e(kind_name)})</h3>{img(png, f'loss curves of branch {branch}')}"
                       f"{note}")
        if not out:
            return ""
        return ("<h2>Loss curves: the top losses against the baselines</h2><p class=note>One sample's loss (top) "
                "and the size of its gradient (bottom, log scale) as the prediction moves; found losses solid, "
                "baselines dashed. A loss trains like the baseline if its gradient is large far from the target "
                "and vanishes at it; the scale of the loss itself matters little under Adam.</p>" + "".join(out))

    def _add_series(self, series, label, baseline, kind_name, text, sweeps, branch) -> None:
        f: Formula = self.formulas.get(kind_name, text)
        if not f.parsed:
            return
        curves = {}
        for sweep in sweeps:
            try:
                curves[sweep.key] = curve_mod.loss_curve(f.kind, f.tree, sweep)
            except (RuntimeError, ValueError, TypeError, IndexError, ZeroDivisionError, OverflowError) as err:
                self.notes.append(f"branch {branch}: the curve of {label} along '{sweep.title}' could not be "
                                  f"computed ({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''})")
        if curves:
            series.append((label, baseline, curves))

    def fitness(self) -> str:
        ev = self.run.evaluations
        if not ev:
            return ""
        png = figures.fitness_png([dict(r, fitness=scaled(r["fitness"])) for r in ev],
                                  {k: scaled(v) for k, v in self.run.baselines.items() if finite(v)},
                                  metric_label(self.val_metric))
        return (f"<h2>Fitness over time</h2><p class=note>Each dot is one proxy training, by its evaluation "
                f"number; crosses are trainings that failed (scored 0); the line is the best so far, dashed lines "
                f"the baselines' proxy fitness.</p>{img(png, 'fitness over time')}")

    def funnel(self) -> str:
        f = self.run.funnel
        if f is None:
            return ""
        stages = [(n, int(s.entered), int(s.rejected)) for n, s in f.stages.items()]
        png = figures.funnel_png(stages, int(f.candidates), int(f.passed)) if stages else None
        rows = []
        for name, s in f.stages.items():
            ms = 1000 * s.seconds / s.entered if s.entered else 0.0
            reasons = "".join(f"<li>{e(display_reason(r))} <b>({c:,})</b>"
                              + (f"<br><span class=note>e.g. {e(example)}</span>"
                                 if (example := getattr(s, "examples", {}).get(r)) and example != r else "")
                              + "</li>"
                              for r, c in s.reasons.most_common(REASONS_SHOWN))
            more = len(s.reasons) - REASONS_SHOWN
            if more > 0:
                reasons += f"<li class=note>… and {more} other reason(s)</li>"
            rows.append(f"<tr><td>{e(name)}</td><td class=num>{int(s.entered):,}</td><td class=num>"
                        f"{int(s.rejected):,}</td><td class=num>{int(s.entered - s.rejected):,}</td>"
                        f"<td class=num>{ms:.2f}</td><td><ul>{reasons}</ul></td></tr>")
        table = ("<table><tr><th>stage</th><th>in</th><th>rejected</th><th>passed</th><th>ms a candidate</th>"
                 f"<th>why rejected (count)</th></tr>{''.join(rows)}</table>")
        return (f"<h2>Filter funnel</h2><p class=note>Every candidate bred went through the stages in order; "
                f"{int(f.candidates):,} bred, {int(f.passed):,} passed all ({100 * f.rejection_rate:.2f}% rejected). "
                f"In a reason, … stands for a measured value that differs between the candidates counted together."
                f"</p>{img(png, 'filter funnel')}{table}")

    def outcomes(self) -> str:
        ev = self.run.evaluations
        if not ev:
            return ""
        counts = Counter(r.get("status") if isinstance(r.get("status"), str) else "?" for r in ev)
        reused = (self.run.state or {}).get("reused")
        png = figures.outcomes_png(counts, reused if number(reused) else None)
        failures = Counter(str(r.get("reason"))[:200] for r in ev
                           if r.get("status") != "ok" and r.get("reason"))
        table = ""
        if failures:
            lis = "".join(f"<li>{e(reason)} <b>({c})</b></li>" for reason, c in failures.most_common(REASONS_SHOWN))
            table = f"<h3>Why trainings failed (most common)</h3><ul>{lis}</ul>"
        order = ["ok", "non-finite", "error", "too slow"] + sorted(k for k in counts if k not in
                                                                   ("ok", "non-finite", "error", "too slow"))
        tally = ", ".join(f"{e(k)} {counts.get(k, 0)}" for k in order)
        if number(reused) and reused:
            tally += f"; {e(reused)} more children reused a twin's fitness without training"
        return (f"<h2>How proxy trainings ended</h2><p>{tally}.</p><p class=note>A loss that turned "
                f"non-finite, raised an error or ran past the time limit scores 0.</p>"
                f"{img(png, 'proxy training outcomes')}{table}")

    def configuration(self) -> str:
        if not self.config:
            return ""
        items = sorted(self.config.items())
        if self.run.script is not None:  # a script's {"task": {...}, "run": {...}}: one row per setting
            items = [(f"{k}.{n}" if isinstance(v, dict) else k, w)
                     for k, v in items for n, w in (sorted(v.items()) if isinstance(v, dict) else [(None, v)])]
        rows = "".join(f"<tr><td>{e(k)}</td><td><code>{e(json.dumps(v, sort_keys=True)[:2000])}</code></td></tr>"
                       for k, v in items)
        return (f"<h2>Configuration</h2><details><summary>config.json ({len(items)} fields)</summary>"
                f"<table>{rows}</table></details>")

    # -- the page -----------------------------------------------------------------------------
    def html(self) -> str:
        import gp_loss
        if self.run.script is not None:
            from gp_loss.report.script_page import script_glance, script_sections
            glance, sections = script_glance(self.run.script), script_sections(self.run.script)
            sections.append(self.configuration())
        else:
            sections = [self.facts(), self.hall_of_fame(), self.comparison(), self.loss_curves(), self.fitness(),
                        self.funnel(), self.outcomes(), self.configuration()]
            glance = self.glance()
        title = f"gp-loss report: {self.run.path.name or self.run.path}"
        made = datetime.datetime.now().isoformat(timespec="seconds")
        return "".join([
            '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">',
            '<meta name="viewport" content="width=device-width, initial-scale=1">',
            f"<title>{e(title)}</title><style>{CSS}</style></head><body>",
            f"<h1>{e(title)}</h1>",
            f'<p class="sub">{e(self.run.path.resolve())} · made by gp-loss {e(gp_loss.__version__)} on {made}</p>',
            glance, self.missing(), *sections, "</body></html>\n",
        ])


def build_page(run: RunFiles, top: int = 5) -> str:
    """The HTML text of the report of ``run``."""
    return Page(run, top).html()


def write_html(text: str, target: str | Path) -> Path:
    """Write the page ``text`` to ``target`` atomically; one-line :class:`GpLossError` where it cannot be written."""
    from gp_loss.runtime.atomic import write_text_atomic

    target = Path(target)
    if target.is_dir():
        raise GpLossError(f"--out {target} is a directory: give the path of the .html file to write")
    try:
        write_text_atomic(target, text)
    except OSError as err:
        raise GpLossError(f"cannot write {target}: {err.strerror or err}") from None
    return target


def write_page(run_dir: str | Path, out: str | Path | None = None, top: int = 5) -> Path:
    """Read ``run_dir``, write its page to ``out`` (default ``RUN_DIR/report.html``) and return that path."""
    from gp_loss.report.collect import collect

    run = collect(run_dir)
    return write_html(build_page(run, top), Path(out) if out is not None else run.path / "report.html")

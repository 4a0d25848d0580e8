"""``gp-loss report RUN_DIR --html``: one self-contained page, for classification and detection runs.

The run directories are written here file by file, as a search writes them (no
training: these tests take seconds). The browser test opens the page in headless
Chromium (Debian's ``chromium-headless-shell`` or ``chromium``; ``.ci/run`` installs
it where apt-get can) and is skipped, saying so, where none is installed.
"""
import base64
import json
import math
import os
import select
import shutil
import subprocess
import time
from html.parser import HTMLParser

import numpy as np
import pytest

from gp_loss.cli import main
from gp_loss.evolution.config import SearchConfig
from gp_loss.filters.base import StageResult
from gp_loss.filters.funnel import Funnel
from gp_loss.language.parse import parse_formula
from gp_loss.paper_losses import PAPER_LOSSES
from gp_loss.probes.curve_sweeps import CLASSES
from gp_loss.report.curves import loss_curve, sweeps_for
from gp_loss.runtime.checkpoint import save_checkpoint
from primitives import get_kind
from tests.helpers import assert_user_error

CE = PAPER_LOSSES["ce"].formula
FOUND = ["div(div(sub(w, neg(y)), mul(2, softmax(add(3, neg(x))))), y)", "div(softmax(y), softmax(alf(x)))",
         "exp(div(sub(y, w), softmax(gd(tanh(x)))))"]
TORCHVISION_TEXT = "torchvision's own loss code"


def _funnel(stages):
    f = Funnel(stages)
    for k in range(40):
        f.candidates += 1
        f.record(StageResult(stages[0], False, f"loss is not monotonic towards its minimum (positive class 0, "
                                               f"w=1, its logit rising: {k}% of steps go the wrong way)"))
    f.record(StageResult(stages[0], False, "loss is 1.5e-3 at step 12"))  # an old run's key: "#" placeholders
    for _ in range(3):
        f.candidates += 1
        f.passed += 1
        for s in stages:
            f.record(StageResult(s, True, "ok"))
    return f


def write_run(path, branches, found, baselines, metric="test accuracy", evaluations=12):
    """A finished run's files: ``found`` rows of branch -> formula, ``baselines`` name -> branch -> text."""
    path.mkdir(parents=True, exist_ok=True)
    task = "detection" if "reg" in branches.values() else "classification"
    config = SearchConfig(max_evaluations=evaluations, baselines=list(baselines)).to_dict() \
        if task == "classification" else {
        "task": task, "branches": dict(branches), "max_evaluations": evaluations, "baselines": list(baselines),
        "device": "auto", "torch_threads": 2, "scheme": "cse", "seed": 0, "task_options": {"proxy_steps": 2}}
    (path / "config.json").write_text(json.dumps(config))
    rows = [{"rank": r, "fitness": 0.9 - 0.01 * r, "evaluation": r + 3, "generation": 1, "formulas": f,
             "kinds": dict(branches), "latex": {n: "?" for n in f}} for r, f in enumerate(found, 1)]
    (path / "hall_of_fame.json").write_text(json.dumps({"hall_of_fame": rows}))
    (path / "baselines.json").write_text(json.dumps({n: 0.91 for n in baselines}))
    final = [{"name": f"top{r}", "baseline": False, "formulas": f, "mean": 0.9, "std": 0.01, "scores": [0.9],
              "seeds": [1000], "metrics": {"AP50": 0.5}} for r, f in enumerate(found[:2], 1)]
    final += [{"name": n, "baseline": True, "formulas": f, "mean": 0.95, "std": 0.002, "scores": [0.95],
               "seeds": [1000], "metrics": {"AP50": 0.6}} for n, f in baselines.items()]
    (path / "final.json").write_text(json.dumps({"metric": metric, "evaluations": evaluations, "rows": final}))
    statuses = ["ok"] * (evaluations - 3) + ["non-finite", "error", "too slow"]
    with open(path / "evaluations.jsonl", "w") as fh:
        for k, status in enumerate(statuses, 1):
            fh.write(json.dumps({"evaluation": k, "generation": k // 5, "slot": k % 5, "formulas": found[0],
                                 "fitness": 0.5 + 0.03 * k if status == "ok" else 0.0, "status": status,
                                 "reason": "" if status == "ok" else f"branch cls: loss is nan at step {k}",
                                 "seconds": 1.0, "steps": 10, "losses": {}, "metrics": {}, "signature": []}) + "\n")
    (path / "logbook.csv").write_text("gen,evaluations,wall_s\n0,5,3.5\n1,12,9.25\n")
    save_checkpoint(path, {"evaluations": evaluations, "generation": 2, "reused": 4, "elapsed_s": 9.25,
                           "train_s": 8.0, "breed_s": 1.0,
                           "funnel": _funnel(["convergence", "validity", "range", "rejection"]).to_dict()})
    return path


@pytest.fixture
def cls_run(tmp_path):
    return write_run(tmp_path / "cls_run", {"cls": "cls"}, [{"cls": f} for f in FOUND], {"ce": {"cls": CE}})


@pytest.fixture
def det_run(tmp_path):
    fl = {"cls": PAPER_LOSSES["sigmoid_focal"].formula, "reg": PAPER_LOSSES["giou"].formula}
    found = [{"cls": fl["cls"], "reg": "exp(sub(1, div(i, u)))"}, {"cls": fl["cls"], "reg": "sub(1, div(i, u))"}]
    return write_run(tmp_path / "det_run", {"cls": "bcls", "reg": "reg"}, found,
                     {"fl_giou": fl, "torchvision": {"cls": TORCHVISION_TEXT, "reg": TORCHVISION_TEXT}},
                     metric="validation AP")


def _page(capsys, run, *extra):
    assert main(["report", str(run), "--html", *extra]) == 0
    out = capsys.readouterr().out
    assert out.startswith("wrote ")
    target = run / "report.html" if "--out" not in extra else extra[extra.index("--out") + 1]
    return open(target, encoding="utf-8").read()


class _Tags(HTMLParser):
    """Every start tag of a page with its attributes, as a browser's parser sees them."""

    def __init__(self, page):
        super().__init__(convert_charrefs=True)
        self.tags = []
        self.feed(page)

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))


def assert_self_contained(page):
    tags = _Tags(page).tags
    names = {t for t, _ in tags}
    assert not names & {"script", "link", "iframe", "object", "embed", "base", "form", "svg"}, names
    assert "@import" not in page and "url(" not in page and "http://" not in page and "https://" not in page
    sources = []
    for tag, attrs in tags:
        assert not [a for a in attrs if a.startswith("on")], (tag, attrs)  # no event handler from the run's text
        for a in ("src", "href", "srcset", "data", "action"):
            if a in attrs:
                sources.append(attrs[a])
    assert sources and all(s.startswith("data:image/png;base64,") for s in sources), sources
    for s in sources:
        assert base64.b64decode(s.split(",", 1)[1]).startswith(b"\x89PNG")
    assert len(page.encode("utf-8")) < 3 * 1024 * 1024


def test_classification_page_shows_everything_and_is_self_contained(cls_run, capsys):
    page = _page(capsys, cls_run)
    assert_self_contained(page)
    for section in ("The run", "Hall of fame and baselines", "Loss curves", "Fitness over time", "Filter funnel",
                    "How proxy trainings ended", "Configuration"):
        assert f">{section}" in page, section
    for formula in FOUND + [CE]:
        assert formula in page  # the exact text beside each rendered formula
    assert "95.00 ± 0.20" in page and "90.00 ± 1.00" in page  # final test metric, mean ± std
    assert "non-finite" in page and "too slow" in page and "branch cls: loss is nan at step 10" in page
    # Funnel reasons: real condition numbers, no "#" placeholder (an old run's key shows "…").
    assert "positive class 0, w=1, its logit rising: …% of steps go the wrong way" in page
    funnel = page.split(">Filter funnel")[1].split(">How proxy trainings ended")[0]
    assert "loss is … at step …" in funnel and "#" not in funnel
    assert "e.g. loss is 1.5e-3 at step 12" in funnel  # the first real reason of each group
    assert "Missing" not in page  # nothing lacking


def test_detection_page_draws_both_branches_and_keeps_text_baselines_as_text(det_run, tmp_path, capsys):
    target = tmp_path / "elsewhere.html"
    page = _page(capsys, det_run, "--out", str(target))
    assert not (det_run / "report.html").exists()
    assert_self_contained(page)
    assert "branch cls (bcls)" in page and "branch reg (reg)" in page
    assert "torchvision&#x27;s own loss code" in page and "shown as text" in page
    assert "Baselines not drawn, as they are not formulas of this kind" in page
    assert "validation AP" in page and "fl_giou" in page


def test_run_text_is_escaped(tmp_path, capsys):
    hostile = '<script>alert("x")</script>'
    run = write_run(tmp_path / '<b onmouseover="x">run&"\'', {"cls": "cls"},
                    [{"cls": FOUND[0]}], {"ce": {"cls": CE}})
    hof = json.loads((run / "hall_of_fame.json").read_text())
    row = hof["hall_of_fame"][0]
    row["formulas"][hostile] = '<img src=x onerror=alert(1)>'  # a branch name and formula from an edited file
    row["kinds"][hostile] = "cls"
    (run / "hall_of_fame.json").write_text(json.dumps(hof))
    (run / "baselines.json").write_text(json.dumps({"<i>ce</i>": 0.5, "ce": 0.9}))
    page = _page(capsys, run)
    assert_self_contained(page)
    assert hostile not in page and "<img src=x" not in page and "<b onmouseover" not in page and "<i>ce" not in page
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in page
    assert "&lt;img src=x onerror=alert(1)&gt;" in page and "&lt;b onmouseover=&quot;x&quot;&gt;run&amp;" in page


def test_a_damaged_run_dir_gives_a_page_saying_what_is_missing(cls_run, capsys):
    (cls_run / "final.json").unlink()
    (cls_run / "hall_of_fame.json").write_text('{"hall_of_fame": [1]}')
    with open(cls_run / "evaluations.jsonl", "a") as fh:
        fh.write('{"evaluation": 13, "fitn')  # cut short by a kill
    (cls_run / "checkpoint.json").write_text("{truncated")
    (cls_run / "checkpoint.prev.json").write_text("{truncated")
    page = _page(capsys, cls_run)
    assert_self_contained(page)
    missing = page.split("Missing, damaged or left out")[1].split("</ul>")[0]
    assert "final.json is missing" in missing and "hall_of_fame.json is not a hall of fame" in missing
    assert "1 of 13 line(s) damaged" in missing and "no readable checkpoint" in missing
    assert "checkpoint.json is corrupt" in missing
    assert "Fitness over time" in page and "Hall of fame" not in page and "Filter funnel" not in page
    assert "Loss curves" in page  # the baseline's, from the task's configuration


@pytest.mark.parametrize("setup", ["absent", "empty", "garbage"])
def test_nothing_to_show_is_one_line_and_exit_2(tmp_path, capsys, setup):
    run = tmp_path / "run"
    if setup != "absent":
        run.mkdir()
    if setup == "garbage":
        (run / "config.json").write_text("[1, 2]")
        (run / "hall_of_fame.json").write_text("not json")
        (run / "evaluations.jsonl").write_text("nonsense\n")
    err = assert_user_error(main(["report", str(run), "--html"]), capsys.readouterr().err)
    assert ("not a run directory" if setup == "absent" else "nothing to report") in err
    assert not (run / "report.html").exists()


@pytest.mark.parametrize("argv, message", [(["--out", "x.html"], "--out is the page that --html writes"),
                                           (["--html", "--json"], "choose one")])
def test_report_options_that_do_not_go_together(cls_run, capsys, argv, message):
    assert main(["report", str(cls_run), *argv]) == 2
    assert message in capsys.readouterr().err


def test_plain_report_prints_simplified_latex_and_reasons_without_placeholders(cls_run, capsys):
    hof = json.loads((cls_run / "hall_of_fame.json").read_text())
    hof["hall_of_fame"][0]["formulas"]["cls"] = "sub(w, neg(y))"
    (cls_run / "hall_of_fame.json").write_text(json.dumps(hof))
    assert main(["report", str(cls_run)]) == 0
    out = capsys.readouterr().out
    assert "LaTeX: w + y" in out and "w - -y" not in out
    assert "loss is … at step …" in out and "#" not in out.split("filter funnel")[1]


# -- the curves' data ---------------------------------------------------------------------------------------
def _curve(name, key):
    loss = PAPER_LOSSES[name]
    kind = get_kind(loss.kind)
    sweep = next(s for s in sweeps_for(loss.kind) if s.key == key)
    return loss_curve(kind, parse_formula(kind, loss.formula), sweep)


def _at(curve, x):
    k = int(np.argmin(np.abs(curve.x - x)))
    assert abs(curve.x[k] - x) < 1e-9
    return curve.loss[k], curve.grad[k]


def test_cross_entropy_curve_is_minus_log_p():
    c = _curve("ce", "true")
    loss, grad = _at(c, 0.5)
    assert math.isclose(loss, math.log(2), rel_tol=1e-9)
    np.testing.assert_allclose(c.loss, -np.log(c.x), rtol=1e-9)
    # |dCE/dx| = |softmax(x) - onehot|: (1 - p) on the true class, p/(C-1) on each other class.
    np.testing.assert_allclose(c.grad, np.sqrt((1 - c.x) ** 2 + (CLASSES - 1) * ((1 - c.x) / (CLASSES - 1)) ** 2))
    confusing = _curve("ce", "confusing")  # the true class keeps 1/(C-1) of what the confusing one leaves
    np.testing.assert_allclose(confusing.loss, -np.log((1 - confusing.x) / (CLASSES - 1)), rtol=1e-9)
    focal = _curve("focal", "true")
    np.testing.assert_allclose(focal.loss, -(1 - focal.x) ** 2 * np.log(focal.x), rtol=1e-9)


def test_binary_and_dense_curves():
    pos, neg = _curve("bce", "positive"), _curve("bce", "negative")
    assert math.isclose(_at(pos, 0.5)[0], math.log(2), rel_tol=1e-9) and math.isclose(_at(pos, 0.5)[1], 0.5)
    np.testing.assert_allclose(neg.loss, -np.log(1 - neg.x), rtol=1e-9)
    np.testing.assert_allclose(pos.grad, 1 - pos.x, rtol=1e-9)  # |dBCE/dx| = 1 - sigmoid(x)
    zero = _curve("zero_ce", "true")  # per-pixel CE minus ln C
    np.testing.assert_allclose(zero.loss, -np.log(zero.x) - math.log(CLASSES), atol=1e-10)  # (slog: + 1e-12)


def test_box_curves_follow_iou():
    for key in ("shift", "scale"):
        iou = _curve("iou", key)
        np.testing.assert_allclose(iou.loss, 1 - iou.x, atol=1e-9)
        assert iou.x.max() > 0.98 and np.all(np.diff(iou.x) < 0)  # the box moves away: IoU falls
        assert np.all(np.isfinite(iou.grad)) and np.all(iou.grad > 0)
    grown = _curve("giou", "scale")  # a grown box encloses its target: GIoU = IoU loss
    np.testing.assert_allclose(grown.loss, 1 - grown.x, atol=1e-9)
    shifted = _curve("giou", "shift")  # shifted diagonally: GIoU's enclosing term adds to the IoU loss
    assert np.all(shifted.loss[5:] > 1 - shifted.x[5:] + 1e-3)


def test_a_curve_that_is_not_finite_is_nan_not_an_error():
    kind = get_kind("cls")
    c = loss_curve(kind, parse_formula(kind, "dot(y, sqrt(neg(softmax(x))))"), sweeps_for("cls")[0])
    assert np.isnan(c.loss).all() and len(c.x) == len(c.loss)


# -- in a real browser --------------------------------------------------------------------------------------
def _chromium():
    for name in ("chromium-headless-shell", "chromium", "chromium-browser", "google-chrome", "headless_shell"):
        found = shutil.which(name)
        if found:
            return found
    return None


class _DevTools:
    """Chrome's DevTools protocol over ``--remote-debugging-pipe`` (fd 3 in, fd 4 out; NUL-separated JSON)."""

    def __init__(self, binary, profile):
        to_chrome_r, self._to_chrome = os.pipe()
        self._from_chrome, from_chrome_w = os.pipe()

        def fds():
            os.dup2(to_chrome_r, 3)
            os.dup2(from_chrome_w, 4)

        self.proc = subprocess.Popen(
            [binary, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-extensions",
             "--remote-debugging-pipe", f"--user-data-dir={profile}", "--window-size=1280,2000", "about:blank"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            preexec_fn=fds, pass_fds=(3, 4))
        os.close(to_chrome_r)
        os.close(from_chrome_w)
        self._buffer = b""
        self._id = 0
        self.events = []

    def _read(self, deadline):
        while b"\0" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self._from_chrome], [], [], left)[0]:
                raise TimeoutError("Chromium did not answer in time")
            chunk = os.read(self._from_chrome, 1 << 20)
            if not chunk:
                raise RuntimeError("Chromium closed its DevTools pipe")
            self._buffer += chunk
        message, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(message)

    def send(self, method, params=None, session=None, timeout=60):
        self._id += 1
        message = {"id": self._id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        os.write(self._to_chrome, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            reply = self._read(deadline)
            if reply.get("id") == self._id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply["result"]
            self.events.append(reply)

    def wait_for(self, method, timeout=60):
        deadline = time.monotonic() + timeout
        while not any(ev.get("method") == method for ev in self.events):
            self.events.append(self._read(deadline))

    def close(self):
        try:
            self.send("Browser.close", timeout=10)
        except (RuntimeError, TimeoutError, OSError):
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        os.close(self._to_chrome)
        os.close(self._from_chrome)


def _console_errors(events):
    errors = []
    for ev in events:
        method, params = ev.get("method"), ev.get("params", {})
        if method == "Runtime.exceptionThrown":
            errors.append(json.dumps(params.get("exceptionDetails", {}))[:300])
        elif method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
            errors.append(json.dumps(params.get("args", []))[:300])
        elif method == "Log.entryAdded" and params.get("entry", {}).get("level") == "error":
            errors.append(params["entry"].get("text", "")[:300])
    return errors


@pytest.mark.parametrize("which", ["cls", "det"])
def test_the_page_in_headless_chromium(cls_run, det_run, tmp_path, capsys, which):
    binary = _chromium()
    if binary is None:
        pytest.skip("no Chromium found (chromium-headless-shell or chromium on PATH): the browser check of the "
                    "report page did not run; `apt-get install chromium-headless-shell` enables it")
    run = cls_run if which == "cls" else det_run
    _page(capsys, run)
    page_url = (run / "report.html").resolve().as_uri()
    tools = _DevTools(binary, tmp_path / "profile")
    try:
        target = tools.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = tools.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        for domain in ("Runtime", "Log", "Page"):
            tools.send(f"{domain}.enable", session=session)
        tools.send("Emulation.setDeviceMetricsOverride", {"width": 1280, "height": 2000, "deviceScaleFactor": 1,
                                                          "mobile": False}, session=session)
        tools.send("Page.navigate", {"url": page_url}, session=session)
        tools.wait_for("Page.loadEventFired")
        check = ("JSON.stringify({images: document.images.length, broken: Array.from(document.images)"
                 ".filter(i => !i.complete || i.naturalWidth === 0).map(i => i.alt),"
                 "text: document.body.innerText.length, height: document.body.scrollHeight,"
                 "scripts: document.scripts.length, resources: performance.getEntriesByType('resource')"
                 ".map(r => r.name)})")
        result = json.loads(tools.send("Runtime.evaluate", {"expression": check, "returnByValue": True},
                                       session=session)["result"]["value"])
        shot = tools.send("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True},
                          session=session)["data"]
    finally:
        tools.close()
    assert _console_errors(tools.events) == []
    assert result["broken"] == [] and result["images"] >= 4, result
    assert result["scripts"] == 0 and result["resources"] == [], result  # nothing fetched: data: URIs only
    assert result["text"] > 500 and result["height"] > 1500, result
    png = base64.b64decode(shot)
    (tmp_path / "screenshot.png").write_bytes(png)
    from PIL import Image
    image = Image.open(tmp_path / "screenshot.png").convert("L")
    lo, hi = image.getextrema()
    assert image.size[0] >= 1000 and hi - lo > 100  # not a blank page
    assert len(image.resize((64, 64)).getcolors(maxcolors=4096) or []) > 20


# -- units and the operators' legend --------------------------------------------------------------------------
def test_the_headline_shows_every_metric_on_one_scale(cls_run, capsys):
    hof = json.loads((cls_run / "hall_of_fame.json").read_text())
    hof["hall_of_fame"][0]["fitness"] = 0.1565  # a segmentation-sized mIoU on the proxy ...
    (cls_run / "hall_of_fame.json").write_text(json.dumps(hof))
    final = json.loads((cls_run / "final.json").read_text())
    final["rows"][0]["mean"] = 0.149  # ... and after retraining
    (cls_run / "final.json").write_text(json.dumps(final))
    page = _page(capsys, cls_run)
    glance = page.split('class="glance">')[1].split("</div>")[0]
    assert "validation accuracy (×100) 15.65" in glance and "test accuracy (×100) <b>14.90 ± 1.00</b>" in glance
    assert "0.1565" not in page and "0.149" not in page
    table = page.split(">Hall of fame and baselines")[1]
    assert ">15.65<" in table and ">91.00<" in table  # the proxy's values and the baselines' on the same scale


def test_the_page_explains_the_operators_it_draws_by_name(tmp_path, capsys):
    run = write_run(tmp_path / "zero_run", {"seg": "zero"}, [{"seg": "neg(mul(y, log(yhat)))"}],
                    {"zero_ce": {"seg": PAPER_LOSSES["zero_ce"].formula}})
    page = _page(capsys, run)
    legend = page.split("Operators drawn by name")[1].split("</div>")[0]
    assert f"slog(x) = {get_kind('zero').operators['log'].definition}" in legend
    assert "&quot;log&quot; in the formula text of kind zero" in legend


def test_a_run_whose_results_depend_on_load_says_so(cls_run, capsys):
    final = json.loads((cls_run / "final.json").read_text())
    note = "2 proxy trainings hit the time limit (eval_time_limit_s) and scored 0: these results depend on the load"
    (cls_run / "final.json").write_text(json.dumps({**final, "load_dependence": note}))
    glance = _page(capsys, cls_run).split('class="glance">')[1].split("</div>")[0]
    assert f"<b>Warning</b>: {note}." in glance
    assert main(["report", str(cls_run)]) == 0
    assert f"warning: {note}" in capsys.readouterr().out


def test_control_characters_and_bidi_overrides_are_shown_escaped_on_the_page(cls_run, capsys):
    hof = json.loads((cls_run / "hall_of_fame.json").read_text())
    row = hof["hall_of_fame"][0]
    name = "cls\u202etxt.exe\x1b]52;c;ZXZpbA==\x07"
    row["formulas"][name] = "neg(x)"
    row["kinds"][name] = "cls"
    (cls_run / "hall_of_fame.json").write_text(json.dumps(hof))
    page = _page(capsys, cls_run)
    assert "\u202e" not in page and "\x1b" not in page and "\x07" not in page
    assert "cls\\u202etxt.exe\\x1b]52;c;ZXZpbA==\\x07" in page

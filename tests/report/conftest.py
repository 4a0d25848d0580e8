"""Run directories of runs/hps_det.py and runs/search_pap.py, written file by file as the scripts write them.

Each writer here follows the package's writer code (gp_loss.tasks.detection.hps_results: write_history,
compare, and the config.json of hps_search.main; gp_loss.pap.search_proxy: search_ppo via gp_loss.pap.ppo's
results.json, search_surrogate's history.json; gp_loss.pap.search_compare: compare and write_exports; the
checkpoints through
gp_loss.runtime.checkpoint), with made-up numbers: no training, so the tests take seconds.
"""
import json
from types import SimpleNamespace

import pytest

from gp_loss.runtime.checkpoint import save_checkpoint

DETECTION = {"model": "fcos", "backbone": "small", "data": "digits", "val_data": "", "image_size": 64,
             "canvases": 96, "max_digits": 2, "batch_size": 8, "lr": 0.02, "warmup_steps": 10, "proxy_steps": 150,
             "final_steps": 150, "metric": "AP"}
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 32  # enough of a PNG for the page to embed it
AP = [0.101, None, 0.1565, 0.12]  # one proxy training failed


def _json(path, data):
    path.write_text(json.dumps(data, indent=1) + "\n")


def _training(seed, score, status="ok", reason=""):
    return {"seed": seed, "score": score, "status": status, "reason": reason,
            "metrics": {"AP": score, "AP50": 2 * score}, "seconds": 1.5}


def write_hps_config(path):
    path.mkdir(parents=True, exist_ok=True)
    run = {"bins": "1,1,1", "loss": "torchvision", "budget": 4, "n_init": 2, "seed": 0, "strategy": "dycors",
           "final_seeds": 2, "workers": 1, "device": "cpu", "threads": 2, "max_seconds": None}
    _json(path / "config.json", {"task": {**DETECTION, "assignment_alpha": 1.0, "aspect_bins": 1}, "run": run,
                                 "layout": "(1,1,1)"})


def write_hps_checkpoint(path, values=AP):
    save_checkpoint(path, {"version": 1, "budget": 4, "records": [
        {"x": [k + 1, 2, 3], "value": v, "error": None if v is not None else "RuntimeError: boom",
         "design": k < 2, "t": 10.0 * (k + 1)} for k, v in enumerate(values)], "pending": []})


def write_hps_run(path):
    """A finished HPS-Det run: config, checkpoint, history.csv/json, best.json, final.json, plot."""
    write_hps_config(path)
    write_hps_checkpoint(path)
    rows, best = [], None
    for k, v in enumerate(AP):
        best = v if v is not None and (best is None or v > best) else best
        rows.append({"evaluation": k + 1, "AP": v, "best_AP": best, "seconds": 10.0 * (k + 1),
                     "error": "" if v is not None else "RuntimeError: boom", "positives": [k + 1, 2, 3]})
    (path / "history.csv").write_text("evaluation,AP,best_AP,seconds,error,s0,s1,s2\n1,0.101,0.101,10.0,,1,2,3\n")
    _json(path / "history.json", {"layout": "(1,1,1)", "bins": ["P0 any w/h", "P1 any w/h", "P2 any w/h"],
                                  "lower": [1, 1, 1], "upper": [25, 25, 25], "n_init": 2, "metric": "AP",
                                  "stopped": "budget", "seconds": 40.0, "evaluations": rows})
    _json(path / "best.json", {"positives": [3, 2, 3], "AP": 0.1565, "layout": "(1,1,1)",
                               "by_bin": {"P0 any w/h": 3, "P1 any w/h": 2, "P2 any w/h": 3}, "evaluations": 4})
    _json(path / "final.json", {"metric": "AP", "seeds": [0, 1], "final_steps": 150,
                                "dynamic": {"mean": 0.17, "trainings": [_training(0, 0.16), _training(1, 0.18)],
                                            "positives": [3, 2, 3]},
                                "default": {"mean": 0.15, "trainings": [_training(0, 0.15), _training(1, 0.15)]},
                                "gain": 0.02})
    (path / "ap_over_iterations.png").write_bytes(PNG)
    return path


def write_pap_config(path, strategy="ppo"):
    path.mkdir(parents=True, exist_ok=True)
    run = {"strategy": strategy, "rounds": 2, "samples": 2, "theta": "shared", "grid": 20, "top_k": 3000, "seed": 0,
           "final_seeds": 2, "workers": 1, "device": "cpu", "threads": 2}
    _json(path / "config.json", {"task": {**DETECTION, "model": "retinanet", "proxy_steps": 20, "final_steps": 60},
                                 "run": run})


def _pap_history():
    return [{"round": k // 2, "index": k % 2, "theta": [0.1 * (k + 1)] * 9,
             "reward": 0.0 if v is None else v, "status": "failed" if v is None else "ok",
             "error": "RuntimeError: boom" if v is None else None} for k, v in enumerate(AP)]


def write_pap_run(path, strategy="ppo"):
    """A finished PAP-Loss run of ``strategy``: config, checkpoint, history, theta.json, final.json, plot."""
    write_pap_config(path, strategy)
    full = [0.25] * 40 + [0.5]
    if strategy == "ppo":
        save_checkpoint(path, {"version": 1, "rounds_done": 2, "history": _pap_history(), "pending": None})
        _json(path / "results.json", {"best_theta": [0.3] * 9, "best_reward": 0.1565, "rounds_done": 2,
                                      "stopped": "budget", "mean": [0.5] * 9, "rounds": [], "seconds": 4.0,
                                      "history": _pap_history()})
    else:
        write_hps_checkpoint(path)
        _json(path / "history.json", {"free": 1, "grid": 20, "n_init": 2, "stopped": "budget", "evaluations": [
            {"k": [k * 5], "theta": full, "AP": v, "seconds": 10.0 * (k + 1),
             "error": "" if v is not None else "RuntimeError: boom"} for k, v in enumerate(AP)]})
    _json(path / "theta.json", {"format": "gp-loss/pap-parameters", "version": 1, "name": "searched",
                                "theta_order": ["H2", "I2", "I3", "I1", "H1", "grad_scale"], "theta": full,
                                "grad_scale": 1.0})
    (path / "pap_loss.py").write_text('"""the searched PAP-Loss"""\n')
    (path / "substitutions.png").write_bytes(PNG)
    losses = {"searched": {"mean": 0.17, "std": 0.01, "trainings": [_training(0, 0.16), _training(1, 0.18)]},
              "fl_giou": {"mean": 0.15, "std": 0.0, "trainings": [_training(0, 0.15), _training(1, 0.15)]},
              "pap": {"mean": 0.075, "std": 0.075, "trainings": [_training(0, 0.15),
                                                                 _training(1, 0.0, "non-finite", "loss is nan")]}}
    _json(path / "final.json", {"metric": "AP", "seeds": [0, 1], "final_steps": 60, "strategy": strategy,
                                "proxy_best": 0.1565, "theta": full, "losses": losses})
    return path


@pytest.fixture
def hps_run(tmp_path):
    return write_hps_run(tmp_path / "hps")


@pytest.fixture(params=["ppo", "surrogate"])
def pap_run(tmp_path, request):
    return write_pap_run(tmp_path / f"pap_{request.param}", request.param)


@pytest.fixture
def writers():
    """The writers above, for a test that builds a run part by part (test modules cannot import this one)."""
    return SimpleNamespace(hps_config=write_hps_config, hps_checkpoint=write_hps_checkpoint,
                           pap_config=write_pap_config)

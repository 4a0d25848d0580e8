"""Hostile inputs: each below is refused with one clear line (exit 2) or handled, never a crash, a hang
or a silent acceptance."""
import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from gp_loss.cli import main as cli
from gp_loss.errors import GpLossError
from gp_loss.evolution.config import SearchConfig
from gp_loss.evolution.run_search import run_search
from gp_loss.runtime.run_dir import RunDir
from tests.helpers import ROOT, assert_user_error

SCRIPT = ROOT / "runs" / "search_classification.py"
TINY = dict(population=3, max_evaluations=6, offspring_per_generation=3, final_seeds=1, final_top=1,
            task_options={"proxy_epochs": 1, "final_epochs": 1})


def _script(tmp_path, *args):
    return subprocess.run([sys.executable, str(SCRIPT), "--no-progress", *args], capture_output=True, text=True,
                          cwd=tmp_path, timeout=300)


@pytest.mark.parametrize("text, message", [
    ("branches: {cls: [1]}", "branches must map branch names to text"),
    ("search: [[1]]", "search must be a list of names"),
    ("baselines: [{a: 1}]", "baselines must be a list of names"),
    ("task_options: {split_seed: -1}", "split_seed must be in"),
    ("torch_threads: 100000", "torch_threads must be at most 256"),
    ("task_options: {width: 100000000}", r"width must be in \[1, 1024\]"),
])
def test_bad_config_values_are_one_line(tmp_path, text, message):
    (tmp_path / "c.yaml").write_text(text)
    proc = _script(tmp_path, "--config", "c.yaml", "--out", "run")
    assert_user_error(proc.returncode, proc.stderr)
    import re
    assert re.search(message, proc.stderr), proc.stderr
    assert not (tmp_path / "run").exists()


def test_a_config_that_is_not_utf8_or_has_an_upper_case_suffix(tmp_path):
    (tmp_path / "c.yaml").write_bytes(b"\xff\xfe")
    proc = _script(tmp_path, "--config", "c.yaml", "--out", "run")
    assert "is not UTF-8 text" in assert_user_error(proc.returncode, proc.stderr)
    (tmp_path / "c.YAML").write_text("population: [")
    proc = _script(tmp_path, "--config", "c.YAML", "--out", "run")
    assert "is not valid YAML" in assert_user_error(proc.returncode, proc.stderr)


def test_a_generation_without_any_child_stops_with_a_reason(tmp_path):
    with pytest.raises(GpLossError, match="no child passed the filters in generation 0.*max_breed_tries"):
        run_search(SearchConfig(**TINY, max_breed_tries=1), str(tmp_path / "run"), progress=False)


def test_a_cse_start_formula_the_filters_reject_is_refused(tmp_path):
    with pytest.raises(GpLossError, match=r"filters reject branch 'cls' \(convergence: .*gp-loss check"):
        run_search(SearchConfig(**TINY, scheme="cse", start={"cls": "neg(x)"}), str(tmp_path / "run"),
                   progress=False)


def test_a_start_formula_beyond_the_tree_limits_is_refused_at_once():
    deep = "neg(" * 400 + "dot(y, log(softmax(x)))" + ")" * 400
    with pytest.raises(GpLossError, match="height 403 and 405 nodes.*max_height 12 and max_size 60"):
        SearchConfig(scheme="cse", start={"cls": deep}).check()


def test_deeply_nested_json_in_run_files_is_not_a_crash(tmp_path):
    run = RunDir(tmp_path)
    (tmp_path / "config.json").write_text("[" * 100_000)
    with pytest.raises(GpLossError, match="nested too deeply"):
        run.read_json("config.json")
    (tmp_path / "e.jsonl").write_text('{"a": 1}\n' + "[" * 100_000 + "\n")
    lines = run.read_jsonl_lines("e.jsonl")
    assert [line.sound for line in lines] == [True, False]
    from gp_loss.runtime.checkpoint import load_checkpoint, save_checkpoint
    save_checkpoint(tmp_path, {"generation": 1})
    save_checkpoint(tmp_path, {"generation": 2})
    (tmp_path / "checkpoint.json").write_text("[" * 100_000)
    state, warnings = load_checkpoint(tmp_path)
    assert state == {"generation": 1} and "corrupt" in warnings[0]


def test_bench_filters_refuses_a_wall_time_that_is_not_finite(capsys):
    for value in ("nan", "inf", "0"):
        assert cli(["bench", "filters", "--seconds", value]) == 2
        assert "--seconds must be a positive finite number" in capsys.readouterr().err


@pytest.mark.parametrize("first, second, message", [
    ("cls=y", "cls=w", "cannot compare: loss does not depend on the prediction"),
    ("cls=mul(x, 1e308)", "cls=neg(mul(x, 1e308))", "is not finite on the probe samples"),
    ("cls=div(1, sub(x, x))", "cls=neg(div(1, sub(x, x)))", "is not finite on the probe samples"),
])
def test_equiv_of_losses_without_a_usable_gradient_is_one_line(capsys, first, second, message):
    assert message in assert_user_error(cli(["equiv", first, second]), capsys.readouterr().err)


def _folder(root, per_class, corrupt=False):
    for c in ("a", "b"):
        (root / c).mkdir(parents=True)
        for i in range(per_class):
            Image.fromarray(np.full((8, 8, 3), 40 + 100 * (c == "b"), dtype=np.uint8)).save(root / c / f"{i}.png")
    if corrupt:
        (root / "a" / "bad.png").write_bytes(b"\x89PNG garbage")
    return root


def test_a_corrupt_image_or_too_few_images_is_one_line(tmp_path, capsys):
    bad = _folder(tmp_path / "bad", 3, corrupt=True)
    assert cli(["evaluate", "--loss", "ce", "--data", str(bad), "--seeds", "1", "--epochs", "1"]) == 2
    assert f"cannot read image {bad / 'a' / 'bad.png'}" in capsys.readouterr().err
    tiny = _folder(tmp_path / "tiny", 1)
    assert cli(["evaluate", "--loss", "ce", "--data", str(tiny), "--seeds", "1", "--epochs", "1"]) == 2
    assert "split(s) empty" in capsys.readouterr().err


def test_evaluate_says_why_a_training_failed(capsys):
    # Every training failing is an error line (exit 2) naming the reason, not a row of zeros.
    assert cli(["evaluate", "--loss", "ce", "--lr", "1e300", "--seeds", "1", "--epochs", "1", "--json"]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and "every training failed (ce, seed 1000: error: RuntimeError: " in captured.err


def test_a_new_run_refuses_a_directory_with_set_aside_or_corrupt_checkpoint_files(tmp_path):
    for name in ("evaluations.set_aside.jsonl", "checkpoint.corrupt.json"):
        run = tmp_path / name
        run.mkdir()
        (run / name).write_text("{}\n")
        with pytest.raises(GpLossError, match=f"files of an earlier run \\({name}\\)"):
            run_search(SearchConfig(**TINY), str(run), progress=False)

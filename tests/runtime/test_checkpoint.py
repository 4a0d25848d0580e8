"""Checkpoints: checksummed JSON, the previous copy as fallback, clear errors."""
import json

import pytest

from gp_loss.errors import GpLossError
from gp_loss.runtime import checkpoint as ckpt
from gp_loss.runtime.checkpoint import CHECKPOINT, CORRUPT, PREVIOUS, load_checkpoint, save_checkpoint

A = {"generation": 1, "evaluations": 3, "population": [{"formulas": {"cls": "neg(x)"}, "fitness": 0.25}],
     "random_state": [3, [1, 2, 3], None]}
B = {"generation": 2, "evaluations": 6, "population": [], "random_state": [3, [4, 5, 6], None]}
C = {"generation": 3, "evaluations": 9, "population": [], "random_state": [3, [7, 8, 9], None]}


def test_no_checkpoint_gives_none(tmp_path):
    assert load_checkpoint(tmp_path) == (None, [])


def test_round_trip_and_previous_copy(tmp_path):
    save_checkpoint(tmp_path, A)
    assert load_checkpoint(tmp_path) == (A, [])
    assert not (tmp_path / PREVIOUS).exists()
    save_checkpoint(tmp_path, B)
    assert load_checkpoint(tmp_path) == (B, [])
    prev = json.loads((tmp_path / PREVIOUS).read_text())
    assert prev["state"] == A and len(prev["sha256"]) == 64


def test_non_finite_state_is_refused(tmp_path):
    with pytest.raises(ValueError):
        save_checkpoint(tmp_path, {"fitness": float("nan")})


def _truncate(path):
    text = path.read_text()
    path.write_text(text[: len(text) // 2])


def _edit(path):
    data = json.loads(path.read_text())
    data["state"]["evaluations"] += 1  # valid JSON, wrong checksum
    path.write_text(json.dumps(data))


@pytest.mark.parametrize("corrupt", [_truncate, _edit, lambda p: p.write_bytes(b"\xff\xfe\x00"),
                                     lambda p: p.write_text("[1, 2]"), lambda p: p.write_text("")])
def test_corrupt_checkpoint_falls_back_to_previous(tmp_path, corrupt):
    save_checkpoint(tmp_path, A)
    save_checkpoint(tmp_path, B)
    corrupt(tmp_path / CHECKPOINT)
    state, warnings = load_checkpoint(tmp_path)
    assert state == A
    assert len(warnings) == 1 and CHECKPOINT in warnings[0] and "corrupt" in warnings[0]


def test_missing_current_uses_previous_without_warning(tmp_path):
    # A kill between moving the current checkpoint aside and writing the new one.
    save_checkpoint(tmp_path, A)
    save_checkpoint(tmp_path, B)
    (tmp_path / CHECKPOINT).unlink()
    assert load_checkpoint(tmp_path) == (A, [])


def test_both_corrupt_is_an_error(tmp_path):
    save_checkpoint(tmp_path, A)
    save_checkpoint(tmp_path, B)
    _truncate(tmp_path / CHECKPOINT)
    _edit(tmp_path / PREVIOUS)
    with pytest.raises(GpLossError, match="no readable checkpoint") as err:
        load_checkpoint(tmp_path)
    assert CHECKPOINT in str(err.value) and PREVIOUS in str(err.value)


def test_only_checkpoint_corrupt_without_previous_is_an_error(tmp_path):
    save_checkpoint(tmp_path, A)
    _truncate(tmp_path / CHECKPOINT)
    with pytest.raises(GpLossError):
        load_checkpoint(tmp_path)


class _Killed(BaseException):
    pass


def _crash_while_writing(monkeypatch):
    def crash(path, text):
        raise _Killed()
    monkeypatch.setattr(ckpt, "write_text_atomic", crash)


def test_crash_while_saving_leaves_the_last_good_checkpoint(tmp_path, monkeypatch):
    save_checkpoint(tmp_path, A)
    save_checkpoint(tmp_path, B)
    _crash_while_writing(monkeypatch)
    with pytest.raises(_Killed):
        save_checkpoint(tmp_path, C)
    assert load_checkpoint(tmp_path) == (B, [])


def test_crash_after_resuming_from_previous_leaves_a_good_checkpoint(tmp_path, monkeypatch):
    save_checkpoint(tmp_path, A)
    save_checkpoint(tmp_path, B)
    _truncate(tmp_path / CHECKPOINT)
    state, _ = load_checkpoint(tmp_path)  # resumed from A
    assert state == A
    _crash_while_writing(monkeypatch)
    with pytest.raises(_Killed):
        save_checkpoint(tmp_path, C)
    state, _ = load_checkpoint(tmp_path)
    assert state == A


def test_corrupt_checkpoint_is_set_aside_and_never_rotated_over_the_good_one(tmp_path):
    save_checkpoint(tmp_path, A)
    save_checkpoint(tmp_path, B)
    _truncate(tmp_path / CHECKPOINT)
    assert load_checkpoint(tmp_path)[0] == A
    assert (tmp_path / CORRUPT).exists() and not (tmp_path / CHECKPOINT).exists()
    save_checkpoint(tmp_path, C)
    assert load_checkpoint(tmp_path) == (C, [])
    assert json.loads((tmp_path / PREVIOUS).read_text())["state"] == A


def test_saving_leaves_no_temporary_file_and_takes_a_str_path(tmp_path):
    for state in (A, B, C):
        save_checkpoint(str(tmp_path), state)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([CHECKPOINT, PREVIOUS])
    assert load_checkpoint(str(tmp_path)) == (C, [])


def _listing(path):
    return {p.name: p.read_bytes() for p in path.iterdir()}


def test_read_only_load_never_moves_a_corrupt_checkpoint(tmp_path):
    save_checkpoint(tmp_path, A)
    save_checkpoint(tmp_path, B)
    _truncate(tmp_path / CHECKPOINT)
    before = _listing(tmp_path)
    state, warnings = load_checkpoint(tmp_path, read_only=True)
    assert state == A and len(warnings) == 1 and CHECKPOINT in warnings[0]
    assert _listing(tmp_path) == before and not (tmp_path / CORRUPT).exists()


def test_read_only_load_with_both_corrupt_gives_none_and_warnings(tmp_path):
    save_checkpoint(tmp_path, A)
    save_checkpoint(tmp_path, B)
    _truncate(tmp_path / CHECKPOINT)
    _edit(tmp_path / PREVIOUS)
    before = _listing(tmp_path)
    state, warnings = load_checkpoint(tmp_path, read_only=True)
    assert state is None and len(warnings) == 2
    assert _listing(tmp_path) == before

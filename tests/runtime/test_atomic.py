"""Atomic writes: the whole new content or the old one, never a temporary file left behind."""
import os
import stat

import pytest

from gp_loss.errors import GpLossError
from gp_loss.runtime import atomic
from gp_loss.runtime.atomic import write_bytes_atomic, write_text_atomic


def test_writes_text_and_bytes_and_makes_the_parent(tmp_path):
    write_text_atomic(tmp_path / "sub" / "a.txt", "héllo\n")
    assert (tmp_path / "sub" / "a.txt").read_text(encoding="utf-8") == "héllo\n"
    write_bytes_atomic(tmp_path / "b.bin", b"\x00\x01")
    assert (tmp_path / "b.bin").read_bytes() == b"\x00\x01"


def test_permissions_follow_the_umask(tmp_path):
    write_text_atomic(tmp_path / "a.txt", "x")
    mask = os.umask(0)
    os.umask(mask)
    assert stat.S_IMODE((tmp_path / "a.txt").stat().st_mode) == 0o666 & ~mask


def test_a_failed_write_keeps_the_old_content_and_no_temporary_file(tmp_path, monkeypatch):
    target = tmp_path / "a.txt"
    write_text_atomic(target, "old")

    def killed(src, dst):
        raise KeyboardInterrupt

    monkeypatch.setattr(atomic.os, "replace", killed)
    with pytest.raises(KeyboardInterrupt):
        write_text_atomic(target, "new")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["a.txt"]


def test_an_unwritable_place_is_a_user_error(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(GpLossError, match="cannot write"):
        write_text_atomic(tmp_path / "file" / "a.txt", "x")

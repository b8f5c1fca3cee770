"""srgan.atomic: a failed write leaves nothing behind, a finished one has the usual permissions."""

import os
import stat

import pytest

from srgan.atomic import atomic_write


def test_write_lands_under_the_final_name_with_umask_permissions(tmp_path):
    target = tmp_path / "sub" / "a.txt"  # the folder is created
    atomic_write(target, lambda tmp: open(tmp, "w").write("hello"))
    assert target.read_text() == "hello"
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(target.stat().st_mode) == 0o666 & ~umask
    assert [p.name for p in target.parent.iterdir()] == ["a.txt"]


def test_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "a.txt"
    target.write_text("old")

    def half_then_fail(tmp):
        open(tmp, "w").write("partial")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        atomic_write(target, half_then_fail)
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["a.txt"]

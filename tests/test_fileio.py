"""Atomic writes: whole files only, with the usual permissions."""

import os


def test_atomic_write_gives_normal_file_mode(tmp_path):
    from harness.fileio import atomic_write_text

    target = tmp_path / "r.json"
    atomic_write_text(target, "{}")
    mask = os.umask(0)
    os.umask(mask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~mask
    assert [p.name for p in tmp_path.iterdir()] == ["r.json"]


def test_failed_atomic_write_leaves_old_file_and_no_temp(tmp_path):
    import pytest

    from harness.fileio import atomic_write_text

    target = tmp_path / "r.json"
    atomic_write_text(target, "old")
    (tmp_path / "d").mkdir()
    with pytest.raises(OSError):
        atomic_write_text(tmp_path / "d", "new")  # os.replace onto a directory fails after the write
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d", "r.json"]

"""integrations.files.atomic_write: all or nothing, private files private from the start."""

import stat

import numpy as np
import pytest

from integrations.files import atomic_write


def test_text_bytes_and_writer_functions_land_whole(tmp_path):
    atomic_write(tmp_path / "a.txt", "héllo")
    atomic_write(tmp_path / "b.bin", b"\x00\x01")
    atomic_write(tmp_path / "deeper" / "c.npz", lambda handle: np.savez(handle, x=np.arange(3)))
    assert (tmp_path / "a.txt").read_text(encoding="utf-8") == "héllo"
    assert (tmp_path / "b.bin").read_bytes() == b"\x00\x01"
    np.testing.assert_array_equal(np.load(tmp_path / "deeper" / "c.npz")["x"], [0, 1, 2])
    assert stat.S_IMODE((tmp_path / "a.txt").stat().st_mode) == 0o644


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "manifest.csv"
    atomic_write(path, "old\n")

    def half_then_fail(handle):
        handle.write(b"new, but only ha")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write(path, half_then_fail)
    assert path.read_text() == "old\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["manifest.csv"]


def test_private_files_are_owner_only_also_when_replacing_a_readable_one(tmp_path):
    path = tmp_path / "settings.json"
    atomic_write(path, "{}")
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    atomic_write(path, '{"token": "x"}', private=True)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600

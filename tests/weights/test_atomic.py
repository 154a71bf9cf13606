"""Atomic writes: a failure or a kill at any moment leaves the old file or the new one, never a part of one."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from scriba.weights import atomic
from scriba.weights.atomic import DiskFullError, remove_stale, write_durably


def _half_then(exc: BaseException):
    real = atomic._write_all

    def write(fd: int, view: memoryview) -> None:
        real(fd, view[: len(view) // 2])
        raise exc

    return write


def test_write_durably_replaces_and_leaves_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "a.ckpt"
    write_durably(target, b"old")
    write_durably(target, b"new contents")
    assert target.read_bytes() == b"new contents"
    assert os.listdir(tmp_path) == ["a.ckpt"]


def test_disk_full_while_writing_keeps_the_old_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "checkpoint_last.ckpt"
    target.write_bytes(b"good")
    monkeypatch.setattr(atomic, "_write_all", _half_then(OSError(errno.ENOSPC, "No space left on device")))
    with pytest.raises(DiskFullError) as err:
        write_durably(target, b"x" * 3_000_000)
    message = str(err.value)
    assert "\n" not in message and str(tmp_path) in message and "3.0 MB" in message
    assert target.read_bytes() == b"good"
    assert os.listdir(tmp_path) == ["checkpoint_last.ckpt"]


def test_too_little_space_is_found_before_writing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(atomic, "free_bytes", lambda d: 1000)
    with pytest.raises(DiskFullError, match=r"needs 0\.0 MB, 0\.0 MB free"):
        write_durably(tmp_path / "b.ckpt", b"x" * 2000)
    assert os.listdir(tmp_path) == []


def test_other_errors_pass_through_and_clean_up(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(atomic, "_write_all", _half_then(OSError(errno.EIO, "I/O error")))
    with pytest.raises(OSError) as err:
        write_durably(tmp_path / "c.ckpt", b"x" * 100)
    assert not isinstance(err.value, DiskFullError)
    assert os.listdir(tmp_path) == []


def test_a_kill_during_the_write_leaves_the_old_file_and_a_stale_temporary(tmp_path: Path) -> None:
    target = tmp_path / "checkpoint_last.ckpt"
    target.write_bytes(b"good")
    script = textwrap.dedent(
        """
        import os, signal, sys
        from scriba.weights import atomic
        real = atomic._write_all
        def write(fd, view):
            real(fd, view[: len(view) // 2])
            os.kill(os.getpid(), signal.SIGKILL)
        atomic._write_all = write
        atomic.write_durably(sys.argv[1], b"n" * 1_000_000)
        """
    )
    proc = subprocess.run([sys.executable, "-c", script, str(target)], capture_output=True)
    assert proc.returncode == -9
    assert target.read_bytes() == b"good"
    left = [p for p in os.listdir(tmp_path) if p != target.name]
    assert len(left) == 1 and left[0].endswith(".tmp")  # the half-written temporary, under its own name
    assert remove_stale(tmp_path) == [str(tmp_path / left[0])]
    assert os.listdir(tmp_path) == [target.name]


def test_remove_stale_keeps_the_temporaries_of_live_processes(tmp_path: Path) -> None:
    mine = tmp_path / f".a.ckpt.{os.getpid()}.tmp"
    mine.write_bytes(b"")
    (tmp_path / "best_0.9.safetensors").write_bytes(b"")
    assert remove_stale(tmp_path) == []
    assert sorted(os.listdir(tmp_path)) == sorted([mine.name, "best_0.9.safetensors"])


def test_a_full_disk_under_atomic_path_is_one_line_naming_the_directory(tmp_path: Path) -> None:
    from scriba.weights.atomic import atomic_path

    target = tmp_path / "best_0.9000.safetensors"
    target.write_bytes(b"old")
    with pytest.raises(DiskFullError) as err:
        with atomic_path(target) as tmp:
            Path(tmp).write_bytes(b"part")
            raise OSError(errno.ENOSPC, "No space left on device")
    assert str(err.value).startswith(f"{tmp_path}: no space left for best_0.9000.safetensors (")
    assert target.read_bytes() == b"old" and os.listdir(tmp_path) == [target.name]

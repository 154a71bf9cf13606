"""Checkpoints on a full disk, and what interrupted or diverged runs leave behind."""

from __future__ import annotations

import errno
import os
import tempfile

import pytest
import torch

from scriba.config import TrainConfig
from scriba.jobs.train.job import train
from scriba.weights import atomic
from scriba.weights.atomic import DiskFullError
from train_helpers import tiny_config, tiny_global


def _files_under(folder):
    # importing torch makes an empty torchinductor_<user> folder there; files are what would fill a disk
    return [os.path.join(d, f) for d, _, fs in os.walk(folder) for f in fs]


def test_full_disk_stops_with_one_line_and_keeps_the_earlier_checkpoints(synth, tmp_path, monkeypatch):
    tmpdir = tmp_path / "tmpdir"
    tmpdir.mkdir()
    monkeypatch.setenv("TMPDIR", str(tmpdir))
    monkeypatch.setattr(tempfile, "tempdir", None)
    out = tmp_path / "out"
    real, writes = atomic._write_all, []

    def fill_up(fd, view):
        writes.append(len(view))
        if len(writes) == 3:  # epoch 0 wrote checkpoint_00 and checkpoint_last; checkpoint_01 finds the disk full
            real(fd, view[: len(view) // 2])
            raise OSError(errno.ENOSPC, "No space left on device")
        real(fd, view)

    monkeypatch.setattr(atomic, "_write_all", fill_up)
    with pytest.raises(DiskFullError) as err:
        train(tiny_config(synth, out, epochs=3), tiny_global(), progress=False)
    message = str(err.value)
    assert message.startswith(f"{out}: no space left for checkpoint_01-") and "\n" not in message
    assert f"needs {writes[2] / 1e6:.1f} MB" in message
    names = sorted(os.listdir(out))
    assert len(names) == 2 and names[0].startswith("checkpoint_00-") and names[1] == "checkpoint_last.ckpt"
    for name in names:
        assert torch.load(out / name, map_location="cpu", weights_only=True)["epoch"] == 0
    assert _files_under(tmpdir) == []
    monkeypatch.setattr(atomic, "_write_all", real)
    resumed = train(TrainConfig(resume=str(out / "checkpoint_last.ckpt")), tiny_global(), progress=False)
    assert resumed.epochs == 3 and resumed.weights is not None


def test_checkpoints_never_pass_through_tmpdir(synth, tmp_path, monkeypatch):
    tmpdir = tmp_path / "tmpdir"
    tmpdir.mkdir()
    monkeypatch.setenv("TMPDIR", str(tmpdir))
    monkeypatch.setattr(tempfile, "tempdir", None)
    made = []
    real_mkstemp = tempfile.mkstemp
    monkeypatch.setattr(tempfile, "mkstemp", lambda *a, **k: made.append(a) or real_mkstemp(*a, **k))
    r = train(tiny_config(synth, tmp_path / "out", epochs=1), tiny_global(), progress=False)
    assert r.weights is not None
    assert made == [] and _files_under(tmpdir) == []

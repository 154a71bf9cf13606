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


@pytest.mark.slow
def test_sigkill_at_random_moments_never_leaves_a_truncated_checkpoint(synth, tmp_path):
    """The acceptance check of issue 14: kills at random moments and while checkpoints are written; every file
    under a final name loads, and resuming from checkpoint_last.ckpt ends with the uninterrupted run's weights."""
    import random
    import subprocess
    import sys
    import time

    lists = {}
    for name in ("train", "val"):
        lists[name] = tmp_path / f"{name}.lst"
        lists[name].write_text("".join(f"{p}\n" for p in synth[name]), encoding="utf-8")

    def command(out, resume=None):
        head = [sys.executable, "-m", "scriba.cli.main", "-d", "cpu", "--threads", "1", "-s", "7", "-r", "train"]
        if resume:
            return [*head, "--resume", str(resume)]
        return [
            *head,
            "-f",
            "path",
            "-t",
            str(lists["train"]),
            "-e",
            str(lists["val"]),
            "-o",
            str(out),
            "-s",
            "[1,16,0,1 Cr3,3,32 Mp2,2 S1(1x0)1,3 Lbx128]",
            "-q",
            "fixed",
            "-N",
            "6",
            "-B",
            "8",
        ]

    ref = tmp_path / "ref"
    subprocess.run(command(ref), check=True, capture_output=True, timeout=600)
    out = tmp_path / "run"
    rng = random.Random(14)
    kills = during_writes = 0
    for attempt in range(10):
        last = out / "checkpoint_last.ckpt"
        proc = subprocess.Popen(
            command(out, last if last.exists() else None), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.time() + (rng.uniform(2, 12) if attempt % 2 else 60)
        while time.time() < deadline and proc.poll() is None:
            # every other attempt waits for a checkpoint being written
            if attempt % 2 == 0 and out.exists() and any(n.endswith(".tmp") for n in os.listdir(out)):
                during_writes += 1
                break
            time.sleep(0.001)
        if proc.poll() is None:
            proc.kill()
            kills += 1
        proc.wait()
        for p in out.glob("*.ckpt"):
            torch.load(p, map_location="cpu", weights_only=True)  # no truncated file under a final name
    print(f"{kills} kills, {during_writes} while a checkpoint was being written")
    assert kills >= 5
    last = out / "checkpoint_last.ckpt"
    subprocess.run(command(out, last if last.exists() else None), check=True, capture_output=True, timeout=600)
    a = torch.load(ref / "checkpoint_last.ckpt", map_location="cpu", weights_only=True)["state_dict"]
    b = torch.load(last, map_location="cpu", weights_only=True)["state_dict"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert not [n for n in os.listdir(out) if n.endswith(".tmp")]  # the last run removed what the kills left

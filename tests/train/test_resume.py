"""Interrupting and resuming: abort checkpoints, epoch counts, and exact continuation of deterministic runs."""

from __future__ import annotations

import os
import signal

import lightning as L
import pytest
import torch
from train_helpers import tiny_config, tiny_global

from scriba.config import TrainConfig
from scriba.train.callbacks import ABORT_CHECKPOINT
from scriba.train.job import train

EPOCHS = 3


def _cfg(synth, out):
    # augmentation and dropout-free nets still draw random numbers: augmentation seeds and shuffling
    return tiny_config(synth, out, epochs=EPOCHS, augment=True, spec="[1,16,0,1 Cr3,3,8 Do0.2 Mp2,2 S1(1x0)1,3 Lbx16]")


def _val(history):
    return [(h["completed_epoch"], h["val_errors"], h["val_chars"], round(h["val_accuracy"], 6)) for h in history]


def _same_final_weights(dir_a, dir_b) -> bool:
    a = torch.load(f"{dir_a}/checkpoint_last.ckpt", map_location="cpu", weights_only=True)["state_dict"]
    b = torch.load(f"{dir_b}/checkpoint_last.ckpt", map_location="cpu", weights_only=True)["state_dict"]
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


class SignalAt(L.Callback):
    def __init__(self, epoch: int, batch: int, signum: int) -> None:
        self.epoch, self.batch, self.signum = epoch, batch, signum

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.current_epoch == self.epoch and batch_idx == self.batch:
            os.kill(os.getpid(), self.signum)


class FailAt(L.Callback):
    def __init__(self, epoch: int, batch: int) -> None:
        self.epoch, self.batch = epoch, batch

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.current_epoch == self.epoch and batch_idx == self.batch:
            raise RuntimeError("boom")


@pytest.fixture(scope="module")
def reference(synth, tmp_path_factory):
    r = train(_cfg(synth, tmp_path_factory.mktemp("ref")), tiny_global(), progress=False)
    assert r.epochs == EPOCHS
    return r


def test_sigint_mid_epoch_then_resume_matches(synth, tmp_path, reference):
    r = train(_cfg(synth, tmp_path), tiny_global(), callbacks=[SignalAt(1, 1, signal.SIGINT)], progress=False)
    assert r.stopped == "interrupted"
    abort = tmp_path / ABORT_CHECKPOINT
    assert r.abort_checkpoint == str(abort) and abort.exists()
    ck = torch.load(abort, map_location="cpu", weights_only=True)
    assert ck["epoch"] == 1 and "scriba" in ck
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    resumed = train(TrainConfig(resume=str(abort)), tiny_global(), progress=False)
    assert resumed.epochs == EPOCHS and resumed.stopped == "fixed"
    assert _val(resumed.history) == _val(reference.history)
    assert [h["train_loss"] for h in resumed.history] == pytest.approx([h["train_loss"] for h in reference.history])
    assert _same_final_weights(tmp_path, reference.output_dir)


def test_sigterm_then_resume_from_regular_checkpoint(synth, tmp_path, reference):
    r = train(_cfg(synth, tmp_path), tiny_global(), callbacks=[SignalAt(2, 0, signal.SIGTERM)], progress=False)
    assert r.stopped == "interrupted" and (tmp_path / ABORT_CHECKPOINT).exists()
    last = tmp_path / "checkpoint_last.ckpt"  # written after the validation of epoch 1
    assert torch.load(last, map_location="cpu", weights_only=True)["epoch"] == 1
    (tmp_path / ABORT_CHECKPOINT).unlink()
    resumed = train(TrainConfig(resume=str(last)), tiny_global(), progress=False)
    assert resumed.epochs == EPOCHS
    assert [h["completed_epoch"] for h in resumed.history] == [0, 1, 2]
    assert _val(resumed.history) == _val(reference.history)
    assert _same_final_weights(tmp_path, reference.output_dir)


def test_exception_writes_abort_checkpoint_and_resumes(synth, tmp_path, reference):
    with pytest.raises(RuntimeError, match="boom"):
        train(_cfg(synth, tmp_path), tiny_global(), callbacks=[FailAt(1, 2)], progress=False)
    abort = tmp_path / ABORT_CHECKPOINT
    assert abort.exists()
    resumed = train(TrainConfig(resume=str(abort)), tiny_global(), progress=False)
    assert _val(resumed.history) == _val(reference.history)
    assert _same_final_weights(tmp_path, reference.output_dir)
    assert resumed.weights is not None


def test_resume_needs_a_scriba_checkpoint(tmp_path):
    from scriba.errors import ScribaError

    bogus = tmp_path / "x.ckpt"
    torch.save({"state_dict": {}}, bogus)
    with pytest.raises(ScribaError):
        train(TrainConfig(resume=str(bogus)), tiny_global(), progress=False)

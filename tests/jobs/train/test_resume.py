"""Interrupting and resuming: abort checkpoints, epoch counts, and exact continuation of deterministic runs."""

from __future__ import annotations

import logging
import os
import signal

import lightning as L
import pytest
import torch

from scriba.config import TrainConfig
from scriba.jobs.train.job import train
from scriba.trainer.callbacks import ABORT_CHECKPOINT
from train_helpers import tiny_config, tiny_global

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

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        # before the step: the batch is half-done when the exception arrives
        if trainer.current_epoch == self.epoch and batch_idx == self.batch:
            raise RuntimeError("boom")


@pytest.fixture(scope="module")
def reference(synth, tmp_path_factory):
    r = train(_cfg(synth, tmp_path_factory.mktemp("ref")), tiny_global(), progress=False)
    assert r.epochs == EPOCHS
    return r


def test_sigint_mid_epoch_then_resume_matches(synth, tmp_path, reference, caplog):
    # as in the command line, where Lightning, imported after the logging setup, sets its own logger to INFO
    caplog.set_level(logging.INFO, logger="lightning.pytorch")
    # what the process had before (a shell's background job starts with SIGINT ignored, not Python's handler)
    before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    r = train(_cfg(synth, tmp_path), tiny_global(), callbacks=[SignalAt(1, 1, signal.SIGINT)], progress=False)
    assert r.stopped == "interrupted"
    # Lightning's note when a checkpoint is saved without saying whether it holds only the weights
    assert not any("weights_only" in rec.getMessage() for rec in caplog.records)
    abort = tmp_path / ABORT_CHECKPOINT
    assert r.abort_checkpoint == str(abort) and abort.exists()
    ck = torch.load(abort, map_location="cpu", weights_only=True)
    assert ck["epoch"] == 1 and "scriba" in ck
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before
    # the best weights so far, as a finished run leaves them
    assert r.weights is not None and r.weights.endswith(".safetensors") and os.path.exists(r.weights)
    assert r.best_accuracy == max(h["val_accuracy"] for h in r.history)
    resumed = train(TrainConfig(resume=str(abort)), tiny_global(), progress=False)
    assert resumed.epochs == EPOCHS and resumed.stopped == "fixed"
    assert _val(resumed.history) == _val(reference.history)
    assert [h["train_loss"] for h in resumed.history] == pytest.approx([h["train_loss"] for h in reference.history])
    assert _same_final_weights(tmp_path, reference.output_dir)


class SignalInValidation(L.Callback):
    def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0):
        if trainer.current_epoch == 1 and batch_idx == 0:
            os.kill(os.getpid(), signal.SIGINT)


def test_sigint_during_validation_finishes_it_first(synth, tmp_path, reference):
    r = train(_cfg(synth, tmp_path), tiny_global(), callbacks=[SignalInValidation()], progress=False)
    assert r.stopped == "interrupted"
    assert [h["completed_epoch"] for h in r.history] == [0, 1]
    resumed = train(TrainConfig(resume=str(tmp_path / ABORT_CHECKPOINT)), tiny_global(), progress=False)
    assert _val(resumed.history) == _val(reference.history)
    assert _same_final_weights(tmp_path, reference.output_dir)


def test_sigterm_then_resume_from_regular_checkpoint(synth, tmp_path, reference, caplog):
    r = train(_cfg(synth, tmp_path), tiny_global(), callbacks=[SignalAt(2, 0, signal.SIGTERM)], progress=False)
    assert r.stopped == "interrupted" and (tmp_path / ABORT_CHECKPOINT).exists()
    said = [rec.getMessage() for rec in caplog.records if "SIGTERM" in rec.getMessage()]
    assert said and not any("Ctrl-C" in m for m in said)
    last = tmp_path / "checkpoint_last.ckpt"  # written after the validation of epoch 1
    assert torch.load(last, map_location="cpu", weights_only=True)["epoch"] == 1
    (tmp_path / ABORT_CHECKPOINT).unlink()
    resumed = train(TrainConfig(resume=str(last)), tiny_global(), progress=False)
    assert resumed.epochs == EPOCHS
    assert [h["completed_epoch"] for h in resumed.history] == [0, 1, 2]
    assert _val(resumed.history) == _val(reference.history)
    assert _same_final_weights(tmp_path, reference.output_dir)


@pytest.mark.parametrize("batch", [0, 2])
def test_exception_writes_abort_checkpoint_and_resumes(synth, tmp_path, reference, batch):
    with pytest.raises(RuntimeError, match="boom"):
        train(_cfg(synth, tmp_path), tiny_global(), callbacks=[FailAt(1, batch)], progress=False)
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


def test_ctrl_c_from_the_terminal_with_worker_processes(synth, tmp_path):
    """SIGINT to the whole process group (what a terminal sends): workers ignore it, the main process stops."""
    import json
    import subprocess
    import sys
    import time

    script = (
        "import json, sys\n"
        "from train_helpers import tiny_config, tiny_global\n"
        "from scriba.jobs.train.job import train\n"
        "synth = json.loads(sys.argv[1])\n"
        "r = train(tiny_config(synth, sys.argv[2], epochs=200, augment=True), tiny_global(num_workers=1),"
        " progress=False)\n"
        "print('STOPPED', r.stopped, r.abort_checkpoint)\n"
    )
    env = dict(os.environ, PYTHONPATH=os.path.dirname(os.path.dirname(os.path.dirname(__file__))))  # tests/, for train_helpers
    proc = subprocess.Popen(
        [sys.executable, "-c", script, json.dumps(synth), str(tmp_path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        start_new_session=True,
    )
    try:
        deadline = time.time() + 120
        while not (tmp_path / "checkpoint_last.ckpt").exists() and time.time() < deadline and proc.poll() is None:
            time.sleep(0.2)
        os.killpg(proc.pid, signal.SIGINT)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err[-2000:]
    assert f"STOPPED interrupted {tmp_path / ABORT_CHECKPOINT}" in out
    assert "SIGINT received" in err
    ck = torch.load(tmp_path / ABORT_CHECKPOINT, map_location="cpu", weights_only=True)
    assert ck["epoch"] >= 1


def test_interrupt_with_micro_batches_waits_for_the_optimizer_step(synth, tmp_path):
    g = tiny_global(device="cpu", micro_batch=1)  # batches of 8 run as 8 passes of one line
    ref = train(_cfg(synth, tmp_path / "ref"), g, progress=False)
    out = tmp_path / "run"
    r = train(_cfg(synth, out), g, callbacks=[SignalAt(1, 3, signal.SIGINT)], progress=False)
    assert r.stopped == "interrupted"
    ck = torch.load(out / ABORT_CHECKPOINT, map_location="cpu", weights_only=True)
    assert ck["global_step"] == 5  # 4 steps in epoch 0, then the window holding micro-batch 3 of epoch 1
    resumed = train(TrainConfig(resume=str(out / ABORT_CHECKPOINT)), g, progress=False)
    assert _val(resumed.history) == _val(ref.history)
    assert _same_final_weights(out, ref.output_dir)


class TwoSignalsInValidation(L.Callback):
    def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0):
        if trainer.current_epoch == 1 and batch_idx == 0:
            os.kill(os.getpid(), signal.SIGINT)
            os.kill(os.getpid(), signal.SIGINT)


def test_second_sigint_during_validation_stops_at_once_and_resumes(synth, tmp_path, reference, caplog):
    r = train(_cfg(synth, tmp_path), tiny_global(), callbacks=[TwoSignalsInValidation()], progress=False)
    assert r.stopped == "interrupted" and r.abort_checkpoint is None
    assert not (tmp_path / ABORT_CHECKPOINT).exists()  # Lightning would skip the rest of the validation run
    assert [h["completed_epoch"] for h in r.history] == [0]  # the validation of epoch 1 did not finish
    assert r.weights is not None
    last = tmp_path / "checkpoint_last.ckpt"
    assert any(f"continue with: ketos train --resume {last}" in rec.getMessage() for rec in caplog.records)
    resumed = train(TrainConfig(resume=str(last)), tiny_global(), progress=False)
    assert _val(resumed.history) == _val(reference.history)
    assert _same_final_weights(tmp_path, reference.output_dir)


CLI_SCRIPT = """
import os, signal, sys
from scriba.jobs.train.module import RecognitionModule
from scriba.cli.main import main

kind = sys.argv[1]
start = RecognitionModule.on_validation_epoch_start

def on_validation_epoch_start(self):
    start(self)
    if self.trainer.current_epoch == 1:
        for _ in range(2 if kind == "twice" else 1):
            os.kill(os.getpid(), signal.SIGINT if kind != "term" else signal.SIGTERM)

RecognitionModule.on_validation_epoch_start = on_validation_epoch_start
main(sys.argv[2:])
"""


@pytest.mark.parametrize("kind", ["twice", pytest.param("term", marks=pytest.mark.slow)])
def test_cli_interrupted_exits_130_with_the_resume_line_and_best_weights(synth, tmp_path, kind):
    import subprocess
    import sys

    lists = {}
    for name in ("train", "val"):
        lists[name] = tmp_path / f"{name}.lst"
        lists[name].write_text("".join(f"{p}\n" for p in synth[name]), encoding="utf-8")
    args = ["-d", "cpu", "--threads", "1", "train", "-f", "path", "-s", "[1,16,0,1 Cr3,3,8 Mp2,2 S1(1x0)1,3 Lbx16]",
            "-q", "fixed", "-N", "5", "-B", "8", "-o", str(tmp_path), "-t", str(lists["train"]), "-e", str(lists["val"])]
    proc = subprocess.run([sys.executable, "-c", CLI_SCRIPT, kind, *args], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 130, proc.stderr[-2000:]
    resume_from = tmp_path / ("checkpoint_last.ckpt" if kind == "twice" else ABORT_CHECKPOINT)
    assert f"continue with: ketos train --resume {resume_from}" in proc.stderr
    assert "weights_only" not in proc.stderr and "Traceback" not in proc.stderr
    if kind == "term":
        assert "SIGTERM received" in proc.stderr and "Ctrl-C" not in proc.stderr
    best = list(tmp_path.glob("best_*.safetensors"))
    assert len(best) == 1 and f"best model: {best[0]}" in proc.stdout


def test_sigint_while_the_abort_checkpoint_is_written_keeps_the_last_checkpoint(synth, tmp_path, monkeypatch, caplog):
    from scriba.weights import atomic

    real = atomic.write_durably

    def interrupted_write(path, data):
        if str(path).endswith(ABORT_CHECKPOINT):
            os.kill(os.getpid(), signal.SIGINT)  # the second Ctrl-C, while the first one's checkpoint is written
        real(path, data)

    monkeypatch.setattr(atomic, "write_durably", interrupted_write)
    r = train(_cfg(synth, tmp_path), tiny_global(), callbacks=[SignalAt(1, 1, signal.SIGINT)], progress=False)
    assert r.stopped == "interrupted" and r.abort_checkpoint is None
    assert not (tmp_path / ABORT_CHECKPOINT).exists() and not list(tmp_path.glob(".*.tmp"))
    messages = [rec.getMessage() for rec in caplog.records]
    assert any(f"continue with: ketos train --resume {tmp_path / 'checkpoint_last.ckpt'}" in m for m in messages)
    assert not any("None" in m for m in messages)


def test_a_finished_run_gives_the_signals_back(synth, tmp_path):
    before = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    train(tiny_config(synth, tmp_path, epochs=1), tiny_global(), progress=False)
    # not Lightning's SIGTERM handler: workers forked later (ketos compile's pool) would ignore terminate()
    assert (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)) == before


def test_ema_and_aux_ctc_run_resumes_exactly(synth, tmp_path):
    # the average, the raw weights and the train-only head all continue: the resumed run ends as the whole one
    def cfg(out):
        return tiny_config(synth, out, epochs=EPOCHS, spec="[1,16,0,1 Cr3,3,8 Mp2,2 S1(1x0)1,3 Lbx16]", ema=0.9,
                           aux_ctc=0.3)

    whole = train(cfg(tmp_path / "whole"), tiny_global(), progress=False)
    cut = train(cfg(tmp_path / "cut"), tiny_global(), callbacks=[SignalAt(1, 1, signal.SIGINT)], progress=False)
    assert cut.stopped == "interrupted"
    resumed = train(TrainConfig(resume=cut.abort_checkpoint), tiny_global(), progress=False)
    assert _val(resumed.history) == _val(whole.history)
    assert _same_final_weights(tmp_path / "cut", tmp_path / "whole")
    raw = [torch.load(f"{d}/checkpoint_last.ckpt", map_location="cpu", weights_only=True)["current_model_state"]
           for d in (tmp_path / "cut", tmp_path / "whole")]
    assert all(torch.equal(raw[0][k], raw[1][k]) for k in raw[0])


def test_time_budget_carries_over_a_resume(synth, tmp_path):
    from lightning.pytorch.callbacks import Timer

    seen: dict[str, float] = {}

    class Spy(L.Callback):
        def __init__(self, hook: str) -> None:
            self.hook = hook

        def _timer(self, trainer):
            return next(c for c in trainer.callbacks if isinstance(c, Timer))

        def on_train_start(self, trainer, pl_module):
            seen.setdefault(f"{self.hook}_start", self._timer(trainer).time_elapsed("train"))

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            import time

            time.sleep(0.05)  # every batch takes a while: the first part uses a measurable share of the budget
            seen[f"{self.hook}_last"] = self._timer(trainer).time_elapsed("train")

    cfg = tiny_config(synth, tmp_path, epochs=EPOCHS, max_time=60.0)
    cut = train(cfg, tiny_global(), callbacks=[Spy("first"), SignalAt(1, 1, signal.SIGINT)], progress=False)
    resumed = train(TrainConfig(resume=cut.abort_checkpoint), tiny_global(), callbacks=[Spy("resumed")],
                    progress=False)
    assert resumed.stopped == "fixed"
    # the resumed run starts with the time the first part had used, not with a fresh budget
    assert seen["first_last"] > 0.2
    assert seen["resumed_start"] >= 0.9 * seen["first_last"]


def test_checkpoint_from_before_an_option_resumes_with_its_old_value(synth, tmp_path):
    # a checkpoint written before --aux-ctc existed holds no head: it continues without one
    r = train(tiny_config(synth, tmp_path, epochs=2, aux_ctc=0.0, ema=0.0), tiny_global(),
              callbacks=[SignalAt(1, 1, signal.SIGINT)], progress=False)
    ck = torch.load(r.abort_checkpoint, map_location="cpu", weights_only=False)
    for name in ("aux_ctc", "ema", "max_time"):
        del ck["scriba"]["train_config"][name]
    torch.save(ck, r.abort_checkpoint)
    resumed = train(TrainConfig(resume=r.abort_checkpoint), tiny_global(), progress=False)
    assert resumed.stopped == "fixed" and resumed.epochs == 2

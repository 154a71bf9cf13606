"""What a user sees while training: start lines, epoch lines, the progress bar, the stop line, the curves."""

from __future__ import annotations

import re

import lightning as L

from scriba.jobs.train.job import train
from scriba.jobs.train.plot import epoch_positions
from scriba.trainer.progress import ProgressReporter
from train_helpers import tiny_config, tiny_global


def _epoch_lines(err: str) -> list[str]:
    return [ln for ln in err.splitlines() if ln.startswith("epoch ")]


def test_one_run_numbers_its_epochs_alike_everywhere_and_says_when_it_did_not_validate(synth, tmp_path, capfd):
    out = tmp_path / "out"
    r = train(tiny_config(synth, out, epochs=4, freq=2), tiny_global(), progress=False)
    err = capfd.readouterr().err
    lines = _epoch_lines(err)
    assert [int(ln.split()[1]) for ln in lines] == [0, 1, 2, 3]
    for ln in lines[0::2]:  # -F 2: epochs 0 and 2 run no validation
        assert "not validated" in ln and "val_accuracy" not in ln
    for ln in lines[1::2]:
        assert "val_accuracy" in ln and "not validated" not in ln
    # the validated epochs under the same numbers in the checkpoint names, the metadata and the curves
    names = sorted(
        int(m.group(1)) for p in out.glob("checkpoint_*-*.ckpt") if (m := re.match(r"checkpoint_(\d+)-", p.name))
    )
    assert names == [1, 3]
    assert epoch_positions(r.history) == [1.0, 3.0]
    assert [h["completed_epoch"] for h in r.history] == [1, 3]
    # the start: lines, alphabet, machine, precision chosen by auto, threads, global batch, output folder
    assert "training on 32 lines, validating on 8; alphabet of 7 characters" in err
    assert re.search(r"device cpu, precision \S+ \(chosen by --precision auto\), 1 thread, global batch 8 lines", err)
    assert f"output folder {out}" in err
    assert err.index("training on") < err.index("epoch 0")
    assert "stopped: 4 epochs done (--quit fixed)" in err


def test_early_stopping_counter_is_current_and_the_stop_is_explained(synth, tmp_path, capfd):
    # a learning rate too small to change the accuracy: no validation run improves on the first
    train(tiny_config(synth, tmp_path, quit="early", lag=2, epochs=-1, lrate=1e-12), tiny_global(), progress=False)
    err = capfd.readouterr().err
    counters = [ln.rsplit("early stopping ", 1)[1] for ln in _epoch_lines(err)]
    assert counters == ["0/2", "1/2", "2/2"]
    stop = [ln for ln in err.splitlines() if ln.startswith("stopped:")]
    assert len(stop) == 1 and "val_accuracy did not improve for 2 validation runs" in stop[0]


class BarSpy(L.Callback):
    def __init__(self) -> None:
        self.counts: list[tuple[float, float | None]] = []

    def on_train_epoch_end(self, trainer, pl_module):
        reporter = next(c for c in trainer.callbacks if isinstance(c, ProgressReporter))
        task = reporter._progress.tasks[-1]
        self.counts.append((task.completed, task.total))


def test_the_bar_counts_the_batches_of_its_own_epoch(synth, tmp_path):
    spy = BarSpy()
    train(tiny_config(synth, tmp_path, epochs=3), tiny_global(), callbacks=[spy], progress=True)
    assert spy.counts == [(4, 4)] * 3  # 32 lines in batches of 8


def test_a_run_resumed_within_an_epoch_gets_its_bar(synth, tmp_path):
    import os
    import signal

    from scriba.config import TrainConfig

    class SigintAt(L.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            if trainer.current_epoch == 1 and batch_idx == 1:
                os.kill(os.getpid(), signal.SIGINT)

    r = train(tiny_config(synth, tmp_path, epochs=3), tiny_global(), callbacks=[SigintAt()], progress=False)
    spy = BarSpy()
    train(TrainConfig(resume=r.abort_checkpoint), tiny_global(), callbacks=[spy], progress=True)
    assert spy.counts == [(4, 4)] * 2  # Lightning skips on_train_epoch_start of the resumed epoch

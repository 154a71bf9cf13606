"""Progress display: a rich bar on a terminal, one summary line per epoch elsewhere (logs, clusters)."""

from __future__ import annotations

import logging
import sys
import time
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import EarlyStopping

logger = logging.getLogger(__name__)


def _metric(trainer: L.Trainer, name: str) -> float | None:
    v = trainer.callback_metrics.get(name)
    return None if v is None else float(v)


class ProgressReporter(L.Callback):
    """Throughput (lines/s), loss, validation accuracy and the early-stopping counter.

    ``rich=None`` picks the bar when stderr is a terminal. Without the bar, each epoch ends with one line:
    ``epoch 3  train_loss 1.234  val_accuracy 0.9512  val_word_accuracy 0.8011  lr 1e-03  412.3 lines/s
    early stopping 2/10``; an epoch without a validation run (``--freq 2``) shows ``not validated`` instead of
    the figures of an earlier one. Epochs are numbered from 0, as in the checkpoint names (``checkpoint_03-``
    holds epoch 3). The early-stopping callback must come before this one in the list, so that the bar's
    counter includes the validation run just done.
    """

    def __init__(
        self,
        rich: bool | None = None,
        metrics: tuple[str, ...] = ("val_accuracy", "val_word_accuracy"),
        loss: str = "train_loss",
    ) -> None:
        self.use_rich = sys.stderr.isatty() if rich is None else rich
        self.metrics = metrics
        self.loss = loss
        self._progress: Any = None
        self._task: Any = None
        self._lines = 0
        self._train_time = 0.0
        self._t0: float | None = None
        self._validated = False
        self._pending: list[str] | None = None
        self.lines_per_second: list[float] = []
        # set on the other processes of a DDP run: rank 0 reports
        self.quiet = False

    # -- helpers -----------------------------------------------------------------------------------------------

    def _early_stopping(self, trainer: L.Trainer) -> str:
        for cb in trainer.callbacks:  # type: ignore[attr-defined]
            if isinstance(cb, EarlyStopping):
                return f"{cb.wait_count}/{cb.patience}"
        return "-"

    def _rate(self) -> float:
        return self._lines / self._train_time if self._train_time > 0 else 0.0

    def _fields(self, trainer: L.Trainer) -> dict[str, str]:
        loss = _metric(trainer, self.loss)
        acc = _metric(trainer, self.metrics[0]) if self.metrics and self._validated else None
        return {
            "rate": f"{self._rate():.1f} lines/s",
            "loss": "-" if loss is None else f"{loss:.3f}",
            "acc": "-" if acc is None else f"{acc:.4f}",
            "es": self._early_stopping(trainer),
        }

    # -- hooks -------------------------------------------------------------------------------------------------

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.global_rank != 0:
            self.use_rich = False
            self.quiet = True
        if not self.use_rich:
            return
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self._progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeRemainingColumn(),
            TextColumn(
                "{task.fields[rate]}  loss {task.fields[loss]}  val acc {task.fields[acc]}  "
                "early stop {task.fields[es]}"
            ),
            transient=False,
        )
        self._progress.start()

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._flush(trainer)
        self._lines = 0
        self._train_time = 0.0
        self._validated = False
        self._new_task(trainer)

    def _new_task(self, trainer: L.Trainer) -> None:
        if self._progress is None:
            return
        batches = trainer.num_training_batches
        total = batches if isinstance(batches, int) else None
        # the batches done come with each batch's index: Lightning's progress counters still hold the previous
        # epoch's at its start
        self._task = self._progress.add_task(
            f"epoch {trainer.current_epoch}", total=total, completed=0, **self._fields(trainer)
        )

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        if self._task is None:  # a run resumed within an epoch: Lightning skips on_train_epoch_start
            self._new_task(trainer)
        self._t0 = time.perf_counter()

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if self._t0 is not None:
            self._train_time += time.perf_counter() - self._t0
            self._t0 = None
        if batch is not None:
            # under DDP every process trains as many lines at the same pace: the rate is of all of them
            self._lines += len(batch["seq_lens"]) * trainer.world_size
        if self._progress is not None and self._task is not None:
            self._progress.update(self._task, completed=batch_idx + 1, **self._fields(trainer))

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        self._validated = True
        if self._progress is not None and self._task is not None:
            self._progress.update(self._task, **self._fields(trainer))

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.lines_per_second.append(self._rate())
        parts = [f"epoch {trainer.current_epoch}"]
        for name in (self.loss, *(self.metrics if self._validated else ())):
            v = _metric(trainer, name)
            if v is not None:
                parts.append(f"{name} {v:.4f}")
        if not self._validated:
            parts.append("not validated")
        lr = _metric(trainer, "lr")
        if lr is not None:
            parts.append(f"lr {lr:.2e}")
        parts.append(f"{self._rate():.1f} lines/s")
        # Lightning runs early stopping's on_train_epoch_end after every other callback's: the line waits for
        # the next hook, so that its counter includes the validation run of this epoch
        self._pending = parts

    def _flush(self, trainer: L.Trainer) -> None:
        parts, self._pending = self._pending, None
        if parts is None:
            return
        if self._progress is not None:
            if self._task is not None:
                self._progress.update(self._task, **self._fields(trainer))
            return
        if self.quiet:  # DDP ranks other than 0
            return
        parts.append(f"early stopping {self._early_stopping(trainer)}")
        print("  ".join(parts), file=sys.stderr, flush=True)

    def _stop(self, trainer: L.Trainer) -> None:
        self._flush(trainer)
        if self._progress is not None:
            self._progress.stop()
            self._progress = None

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._stop(trainer)

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        self._stop(trainer)


def announce(line: str) -> None:
    """A line for the user next to the epoch lines (stderr, so that stdout keeps only the results)."""
    print(line, file=sys.stderr, flush=True)


def start_lines(
    trainer: L.Trainer,
    *,
    train_lines: int,
    val_lines: int,
    skipped: int,
    alphabet: int | None,
    output: str,
    batch_size: int,
    accumulate: int,
    precision_asked: str,
    resumed: str | None = None,
) -> list[str]:
    """What a run starts with: its lines, alphabet, device, precision (and whether ``auto`` chose it), threads,
    global batch and output folder."""
    import torch

    data = f"training on {train_lines} lines, validating on {val_lines}"
    if skipped:
        data += f" ({skipped} skipped)"
    if alphabet is not None:
        data += f"; alphabet of {alphabet} characters"
    devices = max(1, int(trainer.world_size))
    chosen = " (chosen by --precision auto)" if precision_asked == "auto" else ""
    threads = torch.get_num_threads()
    machine = (
        f"device {trainer.strategy.root_device}, precision {trainer.precision}{chosen}, "
        f"{threads} thread{'s' if threads != 1 else ''}, global batch {batch_size * accumulate * devices} lines "
        f"({batch_size} per batch x {accumulate} accumulated x {devices} device{'s' if devices != 1 else ''})"
    )
    lines = [data, machine, f"output folder {output}"]
    if resumed:
        lines.append(f"continuing {resumed}")
    return lines

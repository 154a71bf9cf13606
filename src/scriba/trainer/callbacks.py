"""Lightning callbacks shared by training and pretraining.

- :class:`LRScheduleCallback`: applies an :class:`~scriba.trainer.optim.LRSchedule` before every batch,
  advances it after every validation run, logs the rate and implements ``--quit aneal``.
- :class:`TimeBudget`: ``--max-time``, which ends a run even before ``--min-epochs`` epochs.
- :class:`FreezeBackbone`: everything but the output layer frozen for the first N training *samples*.
- :class:`RunState`: what a resumed run needs beyond Lightning's own state (batches consumed in the epoch,
  RNG states), plus the abort checkpoint on exceptions, Ctrl-C and SIGTERM.
"""

from __future__ import annotations

import datetime
import logging
import os
import random
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import Timer

from scriba.errors import ScribaError
from scriba.trainer.optim import LRSchedule

logger = logging.getLogger(__name__)

ABORT_CHECKPOINT = "checkpoint_abort.ckpt"


class LRScheduleCallback(L.Callback):
    """Sets every parameter group's rate from ``make_schedule(steps_per_epoch)`` before each batch."""

    def __init__(
        self,
        make_schedule: Callable[[int], LRSchedule],
        monitor: str = "val_accuracy",
        stop_when_annealed: bool = False,
    ) -> None:
        self.make_schedule = make_schedule
        self.monitor = monitor
        self.stop_when_annealed = stop_when_annealed
        self.schedule: LRSchedule | None = None
        self._pending: dict[str, Any] | None = None
        self.current_lr: float | None = None
        self.budget: TimeBudget | None = None

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        batches = trainer.num_training_batches
        if not isinstance(batches, int) or batches <= 0:
            batches = 1
        spe = -(-batches // max(1, trainer.accumulate_grad_batches))
        self.schedule = self.make_schedule(spe)
        self.budget = next((c for c in trainer.callbacks if isinstance(c, TimeBudget)), None)  # type: ignore[attr-defined]
        if self._pending is not None:
            self.schedule.load_state_dict(self._pending)
            self._pending = None

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        if self.schedule is None:
            return
        lr = self.schedule.lr(trainer.global_step, self._elapsed(trainer))
        self.current_lr = lr
        for opt in trainer.optimizers:
            for group in opt.param_groups:
                group["lr"] = lr

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if self.current_lr is not None:
            pl_module.log("lr", self.current_lr, on_step=True, on_epoch=False, batch_size=1)

    def _elapsed(self, trainer: L.Trainer) -> float | None:
        """Seconds of the ``--max-time`` budget spent, the same on every process (rank 0's clock)."""
        if self.budget is None or self.schedule is None or not self.schedule.over_run():
            return None
        elapsed: float = trainer.strategy.broadcast(self.budget.time_elapsed("train"))
        return elapsed

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.schedule is None or trainer.sanity_checking or not trainer.training and trainer.state.fn != "fit":
            return
        value = trainer.callback_metrics.get(self.monitor)
        self.schedule.on_validation(None if value is None else float(value))
        if self.stop_when_annealed and self.schedule.annealed(trainer.global_step, self._elapsed(trainer)):
            logger.info("learning rate annealed to its floor: stopping")
            trainer.should_stop = True

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # step-based schedules can reach their floor between validation runs
        if (
            self.stop_when_annealed
            and self.schedule is not None
            and self.schedule.annealed(trainer.global_step, self._elapsed(trainer))
        ):
            trainer.should_stop = True

    def state_dict(self) -> dict[str, Any]:
        if self.schedule is not None:
            return self.schedule.state_dict()
        return dict(self._pending or {})

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._pending = dict(state_dict)
        if self.schedule is not None:
            self.schedule.load_state_dict(self._pending)
            self._pending = None


def output_layer(pl_module: L.LightningModule) -> torch.nn.Module:
    """The network's last layer (``net.nn[-1]``): what stays trainable while the backbone is frozen."""
    net: Any = pl_module.net
    last: torch.nn.Module = net.nn[-1]
    return last


class TimeBudget(Timer):
    """Lightning's :class:`~lightning.pytorch.callbacks.Timer` (checked after every batch), except that a spent
    budget also lifts ``--min-epochs``.

    Lightning honours a stop request only once ``min_epochs`` are done, so its own Timer let ``ketos pretrain
    --max-time 12`` (whose ``--min-epochs`` default is 100) run on until the epochs were done: 28 minutes on
    froc_mss before the benchmark killed it. ``--min-epochs`` holds back early stopping, not a wall-clock
    budget. All processes take the same decision (rank 0's), as Lightning's Timer does."""

    def __init__(self, minutes: float) -> None:
        super().__init__(duration=datetime.timedelta(minutes=minutes), interval="step", verbose=False)

    @property
    def state_key(self) -> str:
        return "Timer"  # checkpoints of Lightning's own Timer (runs before this class) resume with this one

    def _stop_if_spent(self, trainer: L.Trainer) -> None:
        remaining = self.time_remaining()
        if remaining is not None and trainer.strategy.broadcast(remaining <= 0):
            trainer.should_stop = True
            trainer.fit_loop.min_epochs = 0

    def on_fit_start(self, trainer: L.Trainer, *args: Any, **kwargs: Any) -> None:
        self._stop_if_spent(trainer)  # a resumed run whose checkpoint had no time left

    def on_train_batch_end(self, trainer: L.Trainer, *args: Any, **kwargs: Any) -> None:
        self._stop_if_spent(trainer)


class FreezeBackbone(L.Callback):
    """Freezes all parameters but the output layer's until ``samples`` training lines have been seen."""

    def __init__(self, samples: int, head: Callable[[L.LightningModule], torch.nn.Module] = output_layer) -> None:
        self.samples = int(samples)
        self.head = head
        self.seen = 0
        self.frozen: list[torch.nn.Parameter] = []

    def _set(self, pl_module: L.LightningModule, frozen: bool) -> None:
        if frozen and not self.frozen:
            keep = {id(p) for p in self.head(pl_module).parameters()}
            self.frozen = [p for p in pl_module.parameters() if id(p) not in keep and p.requires_grad]
            for p in self.frozen:
                p.requires_grad_(False)
            logger.info("backbone frozen for the first %d training lines", self.samples)
        elif not frozen and self.frozen:
            for p in self.frozen:
                p.requires_grad_(True)
            self.frozen = []
            logger.info("backbone unfrozen after %d training lines", self.seen)

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._set(pl_module, self.seen < self.samples)

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if batch is not None:
            # DDP: every process sees its share of the global batch; count the lines of all of them
            self.seen += len(batch["seq_lens"]) * trainer.world_size
        if not self.frozen:
            return
        thaw = self.seen >= self.samples
        if trainer.world_size > 1:
            # the shares of the last batches differ by a line: all processes must thaw at the same step
            thaw = trainer.strategy.reduce_boolean_decision(thaw, all=False)
        if thaw:
            self._set(pl_module, False)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._set(pl_module, False)

    def state_dict(self) -> dict[str, Any]:
        return {"seen": self.seen}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.seen = int(state_dict.get("seen", 0))


class Diverged(ScribaError):
    """The loss stayed NaN or infinite: no checkpoint of the diverged weights is written."""


def weights_finite(pl_module: L.LightningModule) -> bool:
    """Whether every parameter of ``pl_module`` is finite (a diverged run's are not)."""
    return all(bool(torch.isfinite(p).all()) for p in pl_module.parameters())


class Interrupted(Exception):
    """Training was stopped at once by a second Ctrl-C (the abort checkpoint, if any, is written after it)."""

    def __init__(self, checkpoint: str | None, signame: str) -> None:
        self.checkpoint = checkpoint
        self.signame = signame
        super().__init__(f"training interrupted by {signame}")


class RunState(L.Callback):
    """Resume bookkeeping and the abort checkpoint.

    - Sets the train batch sampler's epoch and tells it how many batches of the epoch are done (its state
      goes into the checkpoint through the stateful train loader), so a resumed run continues with the next
      batch of the same order.
    - Stores the RNG states at a batch boundary and restores them on resume: an interrupted and resumed
      deterministic run draws the same dropout masks as an uninterrupted one.
    - Ctrl-C and SIGTERM: the first one asks Lightning to stop at the end of the current training batch (its
      SIGTERM mechanism; during validation, once validation is complete); the exception that follows writes
      ``checkpoint_abort.ckpt``. A second Ctrl-C stops at once (:class:`Interrupted`): during a training
      batch the abort checkpoint holds the state from the start of the batch; during validation none is
      written (the run continues from ``checkpoint_last.ckpt``).
    - Any other exception during fitting writes the abort checkpoint too, then propagates; not a full disk
      (no room for it) and not NaN weights (:class:`Diverged`: a resume would start from them).
    """

    def __init__(self, directory: str | os.PathLike[str], sampler: Any = None) -> None:
        self.directory = Path(directory)
        self.sampler = sampler
        self.abort_path: str | None = None
        self.signal_name: str | None = None
        self._in_batch = False
        self._snapshot: dict[str, Any] | None = None
        self._restore: dict[str, Any] | None = None
        self._training = False
        self._old_handlers: dict[int, Any] = {}
        self._before_fit: dict[int, Any] = {}
        self._trainer: L.Trainer | None = None
        self._deferred = False

    # -- signals -----------------------------------------------------------------------------------------------

    def _on_signal(self, signum: int, frame: Any) -> None:
        if self.signal_name is None:
            self.signal_name = signal.Signals(signum).name
            logger.warning(
                "%s received: saving %s at the end of this batch%s",
                self.signal_name,
                ABORT_CHECKPOINT,
                " (Ctrl-C again to stop at once)" if signum == signal.SIGINT else "",
            )
        elif signum == signal.SIGINT:
            # not KeyboardInterrupt: Lightning answers that with exit(1) and no word; this one reaches the job,
            # which names the checkpoint to resume from and exits 130
            raise Interrupted(None, "SIGINT")
        if self._trainer is not None:
            # stop only where a checkpoint holds everything: after a complete validation run, and after an
            # optimizer step (gradients accumulated so far are not saved)
            self._deferred = True
            return
        self._notify_lightning()

    def _notify_lightning(self) -> None:
        # Lightning's SIGTERM handler makes its loops stop at the next clean batch boundary
        old = self._old_handlers.get(signal.SIGTERM)
        if callable(old):
            old(signal.SIGTERM, None)

    def _stop_together(self, trainer: L.Trainer) -> None:
        """DDP: at a point every process reaches, all of them stop if any was signalled. Lightning's own
        handler broadcasts from inside the signal handler, out of step with the other processes, and its
        loops stop a process as soon as its own flag is set: processes signalled a batch apart would wait
        for each other forever."""
        if trainer.strategy.reduce_boolean_decision(self._deferred, all=False):
            self._deferred = False
            trainer._signal_connector.received_sigterm = True

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.world_size > 1:
            if trainer.state.fn == "fit" and _window_closed(trainer):
                self._stop_together(trainer)
        elif self._deferred and _window_closed(trainer):
            self._deferred = False
            self._notify_lightning()

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        # before Lightning registers its SIGTERM handler: what the process gets back after the run
        self._before_fit = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._training = True
        self._trainer = trainer
        # Lightning has registered its SIGTERM handler by now; both signals go through ours first
        try:
            for signum in (signal.SIGTERM, signal.SIGINT):
                self._old_handlers[signum] = signal.signal(signum, self._on_signal)
        except ValueError:  # not the main thread: leave signals alone
            pass
        if self._restore is not None:
            _set_rng_state(self._restore)
            self._restore = None
        if trainer.world_size > 1:
            _seed_per_rank(trainer.global_rank)

    def _restore_signals(self) -> None:
        # Lightning puts its own handlers back before on_fit_end: restoring the ones found at on_train_start
        # would leave its SIGTERM handler installed after the run, which keeps Pool.terminate() from ending
        # workers forked later (a compile in the same process hung)
        for signum in self._old_handlers:
            old = self._before_fit.get(signum, self._old_handlers[signum])
            try:
                signal.signal(signum, old if old is not None else signal.SIG_DFL)
            except (ValueError, TypeError):
                pass
        self._old_handlers = {}

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._restore_signals()

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self._restore_signals()

    # -- batches -----------------------------------------------------------------------------------------------

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Lightning only sets the epoch of a loader's sampler, not of a batch sampler
        if self.sampler is not None and hasattr(self.sampler, "set_epoch"):
            self.sampler.set_epoch(trainer.current_epoch)

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        self._snapshot = _get_rng_state()
        self._in_batch = True

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        self._in_batch = False
        if self.sampler is not None:
            self.sampler.consumed = batch_idx + 1
        if trainer.world_size > 1:
            if _window_closed(trainer):
                self._stop_together(trainer)
        elif self._deferred and not trainer.validating and _window_closed(trainer):
            self._deferred = False
            self._notify_lightning()

    def state_dict(self) -> dict[str, Any]:
        # mid-batch (an exception inside a step), the batch will be redone: store the state from its start
        rng = self._snapshot if self._in_batch and self._snapshot is not None else _get_rng_state()
        return {"rng": rng}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._restore = state_dict.get("rng")

    # -- failures ----------------------------------------------------------------------------------------------

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        from scriba.weights.atomic import DiskFullError

        if not self._training or isinstance(exception, DiskFullError):
            # a full disk has no room for the abort checkpoint either: the last good ones stay as they are
            return
        if isinstance(exception, Diverged):
            return  # its message says that nothing was saved
        if isinstance(exception, Interrupted) and trainer.validating:
            # Lightning would resume such a checkpoint past the unfinished validation run: the job points to
            # checkpoint_last.ckpt, written when the previous validation run ended
            return
        if not weights_finite(pl_module):
            logger.error("the weights are NaN or infinite (training diverged): %s not written", ABORT_CHECKPOINT)
            return
        from lightning.pytorch.utilities.exceptions import SIGTERMException

        if trainer.world_size > 1 and not isinstance(exception, SIGTERMException):
            # only a signal stops every process at the same batch; after a failure in one process the others
            # are stuck in a collective operation and writing a checkpoint would wait for them
            if trainer.global_rank == 0:
                logger.error("training failed (%s); continue from the last checkpoint", type(exception).__name__)
            return
        path = self.directory / ABORT_CHECKPOINT
        try:
            trainer.save_checkpoint(str(path), weights_only=False)
        except Interrupted:
            logger.warning("Ctrl-C again: %s not written", ABORT_CHECKPOINT)  # the old one, if any, is intact
            return
        except Exception as exc:  # noqa: BLE001 - the original failure matters more than this one
            logger.error("could not write %s: %s", path, exc)
            return
        self.abort_path = str(path)
        if self.signal_name is None:
            logger.error("training failed (%s); its state was saved to %s", type(exception).__name__, path)


def _window_closed(trainer: L.Trainer) -> bool:
    """Whether the last training batch ended an accumulation window (Lightning's own rule)."""
    accum = trainer.accumulate_grad_batches
    if accum <= 1:
        return True
    loop = trainer.fit_loop.epoch_loop
    done = loop.batch_progress.current.ready
    return (loop.total_batch_idx + 1) % accum == 0 or done >= trainer.num_training_batches


def _seed_per_rank(rank: int) -> None:
    """Gives each DDP process its own dropout stream, derived from the common RNG state: seeded runs stay
    reproducible, and the initial weights (drawn before, and broadcast by DDP anyway) stay the same."""
    base = int(torch.randint(0, 2**31, (1,)).item())
    seed = base * 1_000_003 + rank
    torch.manual_seed(seed)
    random.seed(seed)
    np.random.seed(seed % 2**32)


def _get_rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "python": _plain(random.getstate()),
        "numpy": _numpy_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _plain(value: Any) -> Any:
    # torch.load(weights_only=True) accepts lists but not tuples of tuples inside dicts reliably
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    return value


def _numpy_state() -> dict[str, Any]:
    name, keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "name": str(name),
        "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
        "pos": int(pos),
        "has_gauss": int(has_gauss),
        "cached": float(cached),
    }


def _set_rng_state(state: dict[str, Any]) -> None:
    if "torch" in state:
        torch.set_rng_state(state["torch"])
    if "python" in state:
        version, internal, gauss = state["python"]
        random.setstate((version, tuple(internal), gauss))
    if "numpy" in state:
        s = state["numpy"]
        np.random.set_state((s["name"], s["keys"].numpy().astype(np.uint32), s["pos"], s["has_gauss"], s["cached"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])

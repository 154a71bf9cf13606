"""The Lightning module of recognition training: CTC loss, validation with the ``ketos test`` metrics."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import lightning as L
import torch
from torch import nn

from scriba.config import OptimConfig
from scriba.errors import SpecError
from scriba.jobs.train.shortcut import ShortcutHead
from scriba.metrics import COUNTS, Tally
from scriba.recognizer import Recognizer
from scriba.trainer.callbacks import Diverged
from scriba.trainer.optim import build_optimizer
from scriba.trainer.runtime import plain
from scriba.vgsl.model import RecognitionModel

logger = logging.getLogger(__name__)

# kraken 6 recorded these training settings in a model's ``hyper_params`` metadata
HYPER_PARAMS = (
    "padding",
    "freq",
    "batch_size",
    "quit",
    "epochs",
    "min_epochs",
    "lag",
    "min_delta",
    "optimizer",
    "lrate",
    "momentum",
    "weight_decay",
    "schedule",
    "normalization",
    "normalize_whitespace",
    "augment",
    "step_size",
    "gamma",
    "rop_patience",
    "cos_t_max",
    "cos_min_lr",
    "warmup",
    "freeze_backbone",
    "accumulate_grad_batches",
    "gradient_clip_val",
)


# the integer fields of a Tally that DDP validation sums over the processes
REDUCED_COUNTS = COUNTS


class RecognitionModule(L.LightningModule):
    """Trains ``net`` (a :class:`~scriba.vgsl.RecognitionModel`) with CTC.

    ``info`` is stored as the checkpoint's ``scriba`` entry next to the network description (the job puts the
    configurations and the data split there). ``pred_transform`` is applied to predictions before scoring,
    as ``ketos test`` does. Validation logs ``val_accuracy`` (= ``val_metric``), ``val_word_accuracy``; the
    per-run history also becomes the ``accuracy``/``metrics`` metadata of the weights.
    """

    def __init__(
        self,
        net: RecognitionModel,
        optim: OptimConfig,
        info: dict[str, Any] | None = None,
        pred_transform: Callable[[str], str] | None = None,
        max_nonfinite: int = 25,
        aux_ctc: float = 0.0,
    ) -> None:
        super().__init__()
        self.net = net
        self.optim = optim
        self.info = dict(info or {})
        self.pred_transform = pred_transform
        self.ctc = nn.CTCLoss(reduction="sum", zero_infinity=True)
        self.aux_ctc = aux_ctc
        self.shortcut: ShortcutHead | None = None
        if aux_ctc > 0:
            self.shortcut = ShortcutHead.for_network(net, net.n_labels)
        self.history: list[dict[str, Any]] = []
        self.max_nonfinite = max_nonfinite
        # batches split into micro-batches: Lightning divides each loss by the accumulation count, this puts the
        # split's share back so that gradients equal those of the whole batch
        self.loss_scale = 1.0
        self.nonfinite = 0
        self.skipped_batches = 0
        self._loss_sum = 0.0
        self._loss_lines = 0
        self._tally: Tally | None = None
        # device None: the recognizer runs the network wherever Lightning has put it
        self.recognizer = Recognizer(net, device=None, precision="32-true")

    def forward(self, x: torch.Tensor, seq_lens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.net(x, seq_lens)

    def _logits(self, batch: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        o, lens = self.net(batch["images"], batch["seq_lens"])
        if o.dim() != 4 or o.shape[2] != 1:
            raise SpecError(
                f"the network's output has height {o.shape[2] if o.dim() == 4 else '?'}, CTC needs 1: "
                f"fold the height into channels (e.g. S1(1x0)1,3) before the recurrent layers"
            )
        return o.squeeze(2), lens

    # -- training ----------------------------------------------------------------------------------------------

    def _distributed(self) -> bool:
        return self._trainer is not None and self.trainer.world_size > 1

    def _no_update(self) -> torch.Tensor | None:
        """What a step without a usable batch returns: nothing in one process (Lightning skips the step); under
        DDP a zero loss over every trainable parameter, because the other processes wait for this one's
        gradients in their all-reduce."""
        if not self._distributed():
            return None
        return sum((p.sum() * 0.0 for p in self.parameters() if p.requires_grad), torch.zeros((), device=self.device))

    def training_step(self, batch: dict[str, Any] | None, batch_idx: int) -> torch.Tensor | None:
        if batch is None:
            return self._no_update()
        logits, lens = self._logits(batch)
        # CTC in fp32 outside autocast: with 16-mixed its sums over long lines overflow half precision
        with torch.autocast(self.device.type, enabled=False):
            logp = logits.float().log_softmax(1).permute(2, 0, 1)
            # kraken sums over the batch; keeping that keeps learning rates and gradient clipping comparable
            loss = self.ctc(logp, batch["labels"], lens, batch["label_lens"])
            total = loss
            if self.shortcut is not None:
                # the reported loss stays the network's own, comparable with runs without the head
                aux = self.shortcut.logits().float().log_softmax(1).permute(2, 0, 1)
                total = loss + self.aux_ctc * self.ctc(aux, batch["labels"], lens, batch["label_lens"])
        n = len(batch["seq_lens"])
        if not torch.isfinite(total):
            self.nonfinite += 1
            self.skipped_batches += 1
            if self.nonfinite == 1 or self.nonfinite % 10 == 0:
                logger.warning(
                    "non-finite loss in batch %d (lines %s); batch skipped",
                    batch_idx,
                    ", ".join(map(str, batch.get("ids", [])[:3])),
                )
            if self.nonfinite >= self.max_nonfinite:
                raise Diverged(
                    f"the loss was NaN or infinite for {self.nonfinite} batches in a row: training diverged "
                    f"(try a lower --lrate or a --warmup); no checkpoint of the diverged weights was written"
                )
            return self._no_update()
        self.nonfinite = 0
        value = float(loss.detach()) / n
        self._loss_sum += value * n
        self._loss_lines += n
        self.log("train_loss", value, on_step=True, on_epoch=True, batch_size=n)
        return total * self.loss_scale if self.loss_scale != 1.0 else total

    def configure_optimizers(self) -> torch.optim.Optimizer:
        # all parameters, frozen ones included: they get no gradient (and no update) until unfrozen
        return build_optimizer(self.parameters(), self.optim)  # the network's, then the head's (if any)

    # -- validation --------------------------------------------------------------------------------------------

    def on_validation_epoch_start(self) -> None:
        self._tally = Tally()
        self._tally.keep_lines = False

    def validation_step(self, batch: dict[str, Any] | None, batch_idx: int) -> None:
        if batch is None:
            return
        assert self._tally is not None
        # the step of `ketos test`: full precision whatever the training precision, so that validation's figures
        # are the ones `ketos test` gives for the saved weights
        self.recognizer.score_batch(batch, self._tally, self.pred_transform)

    def _reduce(self, tally: Tally) -> tuple[Tally, float, int]:
        """Under DDP the counts of every process summed (not their accuracies averaged), so that the figures
        are those of one process validating every line; with the training loss since the last validation."""
        loss_sum, loss_lines = self._loss_sum, self._loss_lines
        if not self._distributed():
            return tally, loss_sum, loss_lines
        counts = torch.tensor(
            [float(getattr(tally, k)) for k in REDUCED_COUNTS] + [loss_sum, float(loss_lines)],
            dtype=torch.float64,
            device=self.device,
        )
        counts = self.trainer.strategy.reduce(counts, reduce_op="sum")
        values = counts.cpu().tolist()
        for k, v in zip(REDUCED_COUNTS, values):
            setattr(tally, k, int(round(v)))
        return tally, values[-2], int(round(values[-1]))

    def on_validation_epoch_end(self) -> None:
        tally, self._tally = self._tally, None
        if tally is None or self.trainer.sanity_checking:
            return
        tally, loss_sum, loss_lines = self._reduce(tally)
        if tally.lines_seen == 0:
            return
        acc, wacc = float(tally.char_accuracy), float(tally.word_accuracy)
        self.log("val_accuracy", acc, prog_bar=True)
        self.log("val_word_accuracy", wacc)
        self.log("val_metric", acc)
        trainer = self.trainer
        done = trainer.fit_loop.epoch_loop.batch_progress.current.completed
        total = trainer.num_training_batches
        frac = done / total if isinstance(total, int) and total > 0 else 1.0
        train_loss = loss_sum / loss_lines if loss_lines else None
        self._loss_sum, self._loss_lines = 0.0, 0
        lr = None
        if trainer.optimizers:
            lr = float(trainer.optimizers[0].param_groups[0]["lr"])
        self.history.append(
            {
                "epoch": trainer.current_epoch + (frac if frac < 1.0 else 1.0),
                "completed_epoch": trainer.current_epoch,
                "step": trainer.global_step,
                "train_loss": train_loss,
                "val_accuracy": acc,
                "val_word_accuracy": wacc,
                "val_chars": tally.chars,
                "val_errors": tally.errors,
                "lr": lr,
            }
        )

    # -- checkpoints -------------------------------------------------------------------------------------------

    def model_metadata(self) -> dict[str, Any]:
        """The network's metadata with kraken's ``accuracy``/``metrics``/``hyper_params`` filled in."""
        meta = dict(getattr(self.net, "metadata", {}) or {})
        meta["accuracy"] = [
            [h["completed_epoch"], {"val_accuracy": h["val_accuracy"], "val_metric": h["val_accuracy"]}]
            for h in self.history
        ]
        meta["metrics"] = [
            [
                h["completed_epoch"],
                {k: h[k] for k in ("val_accuracy", "val_word_accuracy", "train_loss") if h.get(k) is not None}
                | {"val_metric": h["val_accuracy"]},
            ]
            for h in self.history
        ]
        cfg = self.info.get("train_config") or {}
        hp = {k: cfg[k] for k in HYPER_PARAMS if k in cfg}
        if "padding" in hp:
            hp["pad"] = hp.pop("padding")
        hp["completed_epochs"] = self.trainer.current_epoch if self._trainer is not None else 0
        meta["hyper_params"] = hp
        return plain(meta)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        from scriba.weights.checkpoint import checkpoint_entry

        saved_meta = self.net.metadata
        self.net.metadata = self.model_metadata()
        try:
            checkpoint["scriba"] = plain(
                checkpoint_entry(
                    self.net,
                    **self.info,
                    history=list(self.history),
                    loss_since_validation=[self._loss_sum, self._loss_lines],
                )
            )
        finally:
            self.net.metadata = saved_meta

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        entry = checkpoint.get("scriba") or {}
        self.history = [dict(h) for h in entry.get("history", [])]
        self._loss_sum, self._loss_lines = entry.get("loss_since_validation") or (0.0, 0)

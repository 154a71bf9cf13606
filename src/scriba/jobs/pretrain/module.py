"""The Lightning module of pretraining, and the relative early stopping that ``--min-delta`` asks for."""

from __future__ import annotations

import logging
import math
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import EarlyStopping

from scriba.config import OptimConfig
from scriba.errors import ScribaError
from scriba.jobs.pretrain.contrast import MaskModule, contrastive_forward
from scriba.jobs.pretrain.network import Split, find_split
from scriba.trainer.optim import build_optimizer
from scriba.trainer.runtime import plain
from scriba.vgsl.model import RecognitionModel

logger = logging.getLogger(__name__)

# validation masks and negatives come from a fixed seed: the same lines get the same task every run, so
# differences in validation loss come from the network, not from the draw
VALIDATION_SEED = 42


class PretrainModule(L.LightningModule):
    """Masked contrastive pretraining of ``net``'s convolutional front and recurrent encoder.

    Logs ``train_loss`` and ``val_loss`` (mean cross-entropy per masked frame; ``CE`` and ``val_ce`` too, the
    names kraken uses). ``info`` goes into the checkpoint's ``scriba`` entry next to the network description.
    """

    def __init__(
        self,
        net: RecognitionModel,
        optim: OptimConfig,
        *,
        mask_width: int,
        mask_prob: float,
        num_negatives: int,
        logit_temp: float,
        info: dict[str, Any] | None = None,
        max_nonfinite: int = 25,
    ) -> None:
        super().__init__()
        self.net = net
        self.split: Split = find_split(net)
        self.mask = MaskModule(self.split.feature_dim, self.split.context_dim, mask_width, mask_prob, num_negatives)
        self.optim = optim
        self.logit_temp = logit_temp
        self.info = dict(info or {})
        self.history: list[dict[str, Any]] = []
        self.max_nonfinite = max_nonfinite
        self.nonfinite = 0
        self.skipped_batches = 0
        self._val_generator: torch.Generator | None = None
        self._train_sum = 0.0
        self._train_frames = 0
        self._val_sum = 0.0
        self._val_frames = 0

    @property
    def features(self) -> list[torch.nn.Module]:
        return list(self.net.nn)[: self.split.start]

    @property
    def encoder(self) -> list[torch.nn.Module]:
        return list(self.net.nn)[self.split.start : self.split.stop]

    def _step(self, batch: dict[str, Any], generator: torch.Generator | None) -> tuple[torch.Tensor | None, int]:
        out = contrastive_forward(
            self.features, self.encoder, self.mask, batch["images"], batch["seq_lens"], self.logit_temp, generator
        )
        return out.loss, int(out.valid.sum())

    # -- training ----------------------------------------------------------------------------------------------

    def training_step(self, batch: dict[str, Any] | None, batch_idx: int) -> torch.Tensor | None:
        if batch is None:
            return None
        try:
            loss, frames = self._step(batch, None)
        except torch.OutOfMemoryError:
            # one overlong batch should not end a run of days; kraken skips it too
            logger.warning(
                "out of memory in batch %d (lines %s); batch skipped",
                batch_idx,
                ", ".join(map(str, batch.get("ids", [])[:3])),
            )
            self.skipped_batches += 1
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            return None
        if loss is None:
            # lines too short to hold two masked frames: nothing to contrast
            return None
        if not torch.isfinite(loss):
            self.nonfinite += 1
            self.skipped_batches += 1
            if self.nonfinite >= self.max_nonfinite:
                raise ScribaError(
                    f"the loss was NaN or infinite for {self.nonfinite} batches in a row: pretraining diverged "
                    f"(try a lower --lrate or a longer --warmup)"
                )
            return None
        self.nonfinite = 0
        value = float(loss.detach())
        self._train_sum += value * frames
        self._train_frames += frames
        n = len(batch["seq_lens"])
        self.log("train_loss", value, on_step=True, on_epoch=True, batch_size=n)
        self.log("CE", value, on_step=True, on_epoch=False, batch_size=n)
        return loss

    def configure_optimizers(self) -> torch.optim.Optimizer:
        # the output layer never receives a gradient; the optimizer skips parameters without one
        return build_optimizer(self.parameters(), self.optim)

    # -- validation --------------------------------------------------------------------------------------------

    def on_validation_epoch_start(self) -> None:
        self._val_generator = torch.Generator().manual_seed(VALIDATION_SEED)
        self._val_sum, self._val_frames = 0.0, 0

    def validation_step(self, batch: dict[str, Any] | None, batch_idx: int) -> None:
        if batch is None:
            return
        loss, frames = self._step(batch, self._val_generator)
        if loss is not None and frames:
            self._val_sum += float(loss) * frames
            self._val_frames += frames

    def on_validation_epoch_end(self) -> None:
        if self.trainer.sanity_checking:
            return
        if self._val_frames == 0:
            logger.warning("no validation line is long enough to be masked; validation loss is undefined")
            value = math.inf
        else:
            value = self._val_sum / self._val_frames
        self.log("val_loss", value, prog_bar=True)
        self.log("val_ce", value)
        trainer = self.trainer
        train_loss = self._train_sum / self._train_frames if self._train_frames else None
        self._train_sum, self._train_frames = 0.0, 0
        lr = float(trainer.optimizers[0].param_groups[0]["lr"]) if trainer.optimizers else None
        self.history.append(
            {
                "completed_epoch": trainer.current_epoch,
                "step": trainer.global_step,
                "train_loss": train_loss,
                "val_loss": value if math.isfinite(value) else None,
                "lr": lr,
            }
        )

    # -- checkpoints -------------------------------------------------------------------------------------------

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        from scriba.weights.checkpoint import checkpoint_entry

        entry = checkpoint_entry(
            self.net,
            **self.info,
            history=list(self.history),
            loss_since_validation=[self._train_sum, self._train_frames],
        )
        checkpoint["scriba"] = plain(entry)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        entry = checkpoint.get("scriba") or {}
        self.history = [dict(h) for h in entry.get("history", [])]
        # a run resumed mid-epoch reports the same training loss as an uninterrupted one
        total, frames = entry.get("loss_since_validation") or (0.0, 0)
        self._train_sum, self._train_frames = float(total), int(frames)


class RelativeEarlyStopping(EarlyStopping):
    """Early stopping on a loss where ``min_delta`` is a fraction of the best loss so far.

    Losses shrink by orders of magnitude during pretraining, so an absolute threshold that makes sense at
    the start stops the run too early later on (or never matters). With ``min_delta=0.01`` a new loss
    counts as an improvement when it is at least 1% below the best one; 0 accepts any decrease.
    """

    def __init__(self, monitor: str, relative_delta: float, patience: int) -> None:
        super().__init__(monitor=monitor, mode="min", patience=patience, min_delta=0.0, check_on_train_epoch_end=False)
        self.relative_delta = relative_delta

    def _evaluate_stopping_criteria(self, current: torch.Tensor) -> tuple[bool, str | None]:
        best = self.best_score
        if torch.isfinite(best):
            # Lightning keeps min_delta negative for mode 'min' and compares current - min_delta < best
            self.min_delta = -self.relative_delta * abs(float(best))
        return super()._evaluate_stopping_criteria(current)

"""A train-only CTC head on the convolutional features (``--aux-ctc``), after Retsinas et al.'s CTC shortcut.

A 1-D convolution over the features that enter the first recurrent layer predicts the labels on its own; its
CTC loss, weighted, joins the main one. The convolutions get a short path to the loss, which shortens CTC's
all-blank plateau. The head is part of the training module, not of the network: checkpoints hold it (a resume
continues it), the exported weights do not, so kraken loads them unchanged.
"""

from __future__ import annotations

import logging

import torch
from torch import nn

from scriba.errors import UsageError
from scriba.vgsl.model import RecognitionModel
from scriba.vgsl.rnn import TransposedSummarizingRNN

logger = logging.getLogger(__name__)


class ShortcutHead(nn.Module):
    """Reads the input of ``net``'s first recurrent layer during training steps and maps it to label logits."""

    def __init__(self, net: RecognitionModel, n_labels: int) -> None:
        super().__init__()
        rnn = next((m for m in net.nn.modules() if isinstance(m, TransposedSummarizingRNN)), None)
        if rnn is None or rnn.transpose or rnn.summarize:
            raise UsageError("--aux-ctc needs a network with a recurrent layer along the line (e.g. Lbx200)")
        self.head = nn.Conv1d(rnn.input_size, n_labels, kernel_size=3, padding=1)
        self._features: torch.Tensor | None = None
        # the network calls the hook, but holds no parameters of the head: its state dict stays kraken's
        self._hook = rnn.register_forward_pre_hook(self._capture)

    @classmethod
    def for_network(cls, net: RecognitionModel, n_labels: int) -> ShortcutHead | None:
        """The head, or None (with a warning) for a network it cannot serve: trained then without it."""
        try:
            return cls(net, n_labels)
        except UsageError as exc:
            logger.warning("%s: training without the auxiliary CTC head", exc)
            return None

    def _capture(self, module: nn.Module, args: tuple) -> None:
        self._features = args[0] if torch.is_grad_enabled() else None

    def logits(self) -> torch.Tensor:
        """``(N, labels, W)`` logits of the features seen in the last forward pass with gradients."""
        x = self._features
        if x is None:
            raise RuntimeError("no features captured: run the network in a training step first")
        self._features = None
        if x.shape[2] != 1:
            raise UsageError(
                f"--aux-ctc needs features of height 1 before the first recurrent layer, not {x.shape[2]} "
                f"(fold the height into channels, e.g. S1(1x0)1,3, or pool it)"
            )
        # in fp32, as the main CTC: under bf16/fp16 autocast the features arrive in half precision
        return self.head(x.squeeze(2).float())

"""The recurrent VGSL layer (``L``/``G``): LSTM or GRU along the width or the height of its input."""

from __future__ import annotations

import torch
from torch import nn

from scriba.vgsl.frames import Lens, mask_frames


class TransposedSummarizingRNN(nn.Module):
    """LSTM/GRU (``layer``) along W (``transpose=False``) or H, optionally keeping only the last step.

    Reverse-only RNNs (``Lr``) run forward, as kraken's do, so that their weights give kraken's outputs.
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        direction: str = "b",
        transpose: bool = False,
        summarize: bool = False,
        cell: str = "L",
    ) -> None:
        super().__init__()
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.bidi = direction == "b"
        self.direction = direction
        self.transpose = transpose
        self.summarize = summarize
        self.cell = cell
        self.output_size = 2 * hidden_size if self.bidi else hidden_size
        cls = nn.GRU if cell == "G" else nn.LSTM
        self.layer = cls(input_size, hidden_size, bidirectional=self.bidi, batch_first=True)

    def _direction(self, seq: torch.Tensor, suffix: str) -> torch.Tensor:
        """One direction of the (bidirectional) layer run forward in time over ``seq``."""
        rnn = self.layer
        params = [getattr(rnn, f"{kind}_l0{suffix}") for kind in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")]
        h0 = seq.new_zeros(1, seq.shape[0], self.hidden_size)
        if isinstance(rnn, nn.LSTM):
            return torch.lstm(seq, (h0, h0), params, True, 1, 0.0, self.training, False, True)[0]
        return torch.gru(seq, h0, params, True, 1, 0.0, self.training, False, True)[0]

    def _run_padded(self, seq: torch.Tensor, lens: torch.Tensor) -> torch.Tensor:
        """The RNN over right-padded sequences ``(B, W, C)`` of lengths ``lens``; frames past a length are 0.

        Packed sequences would give the same result, but torch runs them step by step (about 2x slower than
        its oneDNN kernel for whole batches). A forward-in-time pass never sees the padding after a valid
        frame, so the padded batch is run as it is; the backward direction runs forward over each sequence
        reversed within its length, and its outputs are put back in order.
        """
        w = seq.shape[1]
        if bool((lens >= w).all()):
            return self.layer(seq)[0]
        if not self.bidi:
            o = self.layer(seq)[0]
        else:
            t = torch.arange(w, device=seq.device)[None, :]
            # reversal within each length (the padding stays in place); applying it twice is the identity
            rev = torch.where(t < lens[:, None], lens[:, None] - 1 - t, t)
            rows = torch.arange(seq.shape[0], device=seq.device)[:, None]
            fwd = self._direction(seq, "")
            bwd = self._direction(seq[rows, rev], "_reverse")[rows, rev]
            o = torch.cat([fwd, bwd], dim=2)
        keep = torch.arange(w, device=seq.device)[None, :] < lens[:, None]
        return o * keep[:, :, None].to(o.dtype)

    def out_shape(self, c: int, h: int) -> tuple[int, int]:
        if self.transpose and self.summarize:
            return self.output_size, 1
        return self.output_size, h

    def forward(self, x: torch.Tensor, seq_lens: Lens = None) -> tuple[torch.Tensor, Lens]:
        if x.device.type == "cpu" and torch.is_autocast_enabled("cpu"):
            # oneDNN's bf16 LSTM backward is about 3x slower than its fp32 one on CPUs (AVX-512 BF16
            # included), while bf16 convolutions are about 2x faster: under CPU autocast the RNN runs in fp32
            with torch.autocast("cpu", enabled=False):
                return self._forward(x.float(), seq_lens)
        return self._forward(x, seq_lens)

    def _forward(self, x: torch.Tensor, seq_lens: Lens = None) -> tuple[torch.Tensor, Lens]:
        n, c, h, w = x.shape
        if self.transpose:
            # every column is a sequence along H; padded columns are separate sequences, masked below
            seq = x.permute(0, 3, 2, 1).reshape(n * w, h, c)
            o, _ = self.layer(seq)
            o = o.reshape(n, w, h, self.output_size)
            if self.summarize:
                o = o[:, :, -1:, :]
            o = o.permute(0, 3, 2, 1)
            return mask_frames(o.contiguous(), seq_lens), seq_lens
        seq = x.permute(0, 2, 3, 1).reshape(n * h, w, c)
        if seq_lens is not None:
            lens = seq_lens.to(x.device).repeat_interleave(h).clamp(min=1, max=w)
            o = self._run_padded(seq, lens)
        else:
            o, _ = self.layer(seq)
        if self.summarize:
            if seq_lens is not None:
                idx = (lens - 1).to(o.device)
                o = o[torch.arange(n * h, device=o.device), idx].unsqueeze(1)
            else:
                o = o[:, -1:, :]
            seq_lens = None if seq_lens is None else torch.ones_like(seq_lens)
        o = o.reshape(n, h, o.shape[1], self.output_size).permute(0, 3, 1, 2).contiguous()
        return o, seq_lens

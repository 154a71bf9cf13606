"""Checkpoints written in place atomically, on any filesystem.

Lightning's own writer goes through an fsspec transaction that writes to ``$TMPDIR`` and then copies the file
into the output directory: on another filesystem the copy is not atomic, so a full disk or a kill during it
leaves a truncated file under the final name (or destroys the ``checkpoint_last.ckpt`` it replaces) and a
whole checkpoint in ``$TMPDIR``. :class:`AtomicCheckpointIO` serialises the checkpoint in memory and hands it
to :func:`scriba.weights.atomic.write_durably` (temporary in the output directory, fsync, rename).
"""

from __future__ import annotations

import io
import os
from typing import Any

from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's torch checkpoint format, written through a temporary beside the target and renamed."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        import torch

        from scriba.weights.atomic import write_durably

        if storage_options is not None:
            raise TypeError("storage_options are not supported by scriba's checkpoint writer")
        target = os.fspath(path)
        os.makedirs(os.path.dirname(os.path.abspath(target)), exist_ok=True)
        buffer = io.BytesIO()
        torch.save(checkpoint, buffer)
        write_durably(target, buffer.getbuffer())

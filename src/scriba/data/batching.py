"""Batches of line samples: right zero-padding with sequence lengths, concatenated CTC targets."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch


def collate_lines(samples: Sequence[dict[str, Any]], sort: bool = True, width_multiple: int = 1) -> dict[str, Any]:
    """Stacks ``LineDataset`` samples into ``images (N, C, H, Wmax)`` padded with zeros on the right.

    Samples are sorted by width, widest first, as kraken does (``sort=False`` keeps the input order).
    ``width_multiple`` rounds the batch's width up (``seq_lens`` keep the lines' own widths).
    ``labels`` is the concatenation of all samples' labels (``None`` when any sample has none) and
    ``label_lens`` their lengths.
    """
    if not samples:
        raise ValueError("cannot collate an empty batch")
    order = list(range(len(samples)))
    if sort:
        order.sort(key=lambda i: samples[i]["image"].shape[-1], reverse=True)
    items = [samples[i] for i in order]
    c, h = items[0]["image"].shape[:2]
    for s in items:
        if tuple(s["image"].shape[:2]) != (c, h):
            raise ValueError(f"line {s.get('id')!r}: image shape {tuple(s['image'].shape)} does not match ({c}, {h}, W)")
    widths = [int(s["image"].shape[-1]) for s in items]
    width = -(-max(widths) // width_multiple) * width_multiple
    images = items[0]["image"].new_zeros((len(items), c, h, width))
    for i, s in enumerate(items):
        images[i, :, :, : widths[i]] = s["image"]
    labels = [s.get("labels") for s in items]
    if all(lab is not None for lab in labels):
        lab_t = [torch.as_tensor(lab, dtype=torch.long) for lab in labels]
        cat: torch.Tensor | None = torch.cat(lab_t) if lab_t else torch.zeros(0, dtype=torch.long)
        label_lens: torch.Tensor | None = torch.tensor([len(x) for x in lab_t], dtype=torch.long)
    else:
        cat, label_lens = None, None
    return {
        "images": images,
        "seq_lens": torch.tensor(widths, dtype=torch.long),
        "texts": [s.get("text") for s in items],
        "ids": [s.get("id") for s in items],
        "sources": [s.get("source") for s in items],
        "labels": cat,
        "label_lens": label_lens,
        "order": order,
    }

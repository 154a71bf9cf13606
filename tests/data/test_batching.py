"""collate_lines: right zero-padding, lengths, concatenated targets."""

from __future__ import annotations

import pytest
import torch

from scriba.data.batching import collate_lines


def test_collate_pads_and_sorts():
    s = [
        {"image": torch.ones(1, 4, 5), "text": "ab", "labels": torch.tensor([1, 2]), "id": "a"},
        {"image": torch.ones(1, 4, 9), "text": "c", "labels": torch.tensor([3]), "id": "b"},
    ]
    b = collate_lines(s)
    assert b["images"].shape == (2, 1, 4, 9)
    assert b["seq_lens"].tolist() == [9, 5]
    assert b["ids"] == ["b", "a"]
    assert b["labels"].tolist() == [3, 1, 2] and b["label_lens"].tolist() == [1, 2]
    assert float(b["images"][1, :, :, 5:].abs().max()) == 0.0


def test_collate_without_labels_and_unsorted():
    s = [{"image": torch.ones(1, 4, 3)}, {"image": torch.ones(1, 4, 6), "labels": None}]
    b = collate_lines(s, sort=False)
    assert b["labels"] is None and b["seq_lens"].tolist() == [3, 6]


def test_collate_height_mismatch():
    with pytest.raises(ValueError):
        collate_lines([{"image": torch.ones(1, 4, 3)}, {"image": torch.ones(1, 5, 3)}])

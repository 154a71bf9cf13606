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


def test_width_multiple_pads_the_batch_but_not_the_lengths():
    s = [{"image": torch.ones(1, 4, w), "labels": [1], "text": "a", "id": str(w)} for w in (70, 130)]
    b = collate_lines(s, width_multiple=64)
    assert b["images"].shape[-1] == 192
    assert b["seq_lens"].tolist() == [130, 70]
    assert b["images"][:, :, :, 130:].abs().sum() == 0
    assert collate_lines(s, width_multiple=1)["images"].shape[-1] == 130


def test_training_padding_leaves_the_loss_and_gradients_unchanged():
    """The network masks padded frames, so rounding training widths up changes no loss or gradient."""
    from scriba.trainer.datamodule import TRAIN_WIDTH_MULTIPLE, collate_training
    from scriba.vgsl import build_model

    torch.manual_seed(0)
    net = build_model("[1,24,0,1 Cr3,3,8 Mp2,2 Cr3,3,8 S1(1x0)1,3 Lbx16 O1c6]")
    net.eval()  # no dropout; the same kernels either way
    sample = {"image": torch.rand(1, 24, 101), "labels": [1, 2, 3], "text": "abc", "id": "x"}
    grads, losses = [], []
    for batch in (collate_lines([sample]), collate_training([sample])):
        net.zero_grad()
        out, lens = net(batch["images"], batch["seq_lens"])
        logp = out.squeeze(2).log_softmax(1).permute(2, 0, 1)
        loss = torch.nn.functional.ctc_loss(logp, torch.tensor([1, 2, 3]), lens, torch.tensor([3]), reduction="sum")
        loss.backward()
        losses.append(float(loss.detach()))
        grads.append(torch.cat([p.grad.flatten() for p in net.parameters()]))
    assert collate_training([sample])["images"].shape[-1] == 2 * TRAIN_WIDTH_MULTIPLE
    assert losses[0] == pytest.approx(losses[1], rel=1e-5)
    # the same up to float rounding (oneDNN may pick other kernels for another width)
    assert float((grads[0] - grads[1]).norm() / grads[0].norm()) < 1e-4


def test_training_padding_on_real_lines_with_the_default_network():
    """Two real manuscript lines (the repo's FROC sample) through kraken's default network: the padded training
    batch gives the loss and gradients of the unpadded one."""
    from pathlib import Path

    from scriba.codec import Codec
    from scriba.config import KRAKEN_SPEC
    from scriba.data.dataset import LineDataset
    from scriba.data.records import LineRecord
    from scriba.data.transforms import LineTransform
    from scriba.text import TextTransform
    from scriba.trainer.datamodule import collate_training
    from scriba.vgsl import build_model

    root = Path(__file__).resolve().parents[2] / "examples" / "froc_sample"
    images = sorted((root / "train").rglob("*.png"))[:2]
    texts = [p.with_suffix("").with_suffix(".gt.txt").read_text(encoding="utf-8").strip() for p in images]
    codec = Codec(sorted(set("".join(texts))))
    torch.manual_seed(0)
    net = build_model(KRAKEN_SPEC.rstrip("]") + f" O1c{codec.max_label + 1}]")
    net.eval()
    recs = [LineRecord(id=str(p), source=str(p), text=t, image=str(p)) for p, t in zip(images, texts)]
    ds = LineDataset(recs, LineTransform.from_model_input(tuple(net.input), padding=16), TextTransform(), codec=codec)
    samples = [ds[i] for i in range(len(ds))]
    results = []
    for batch in (collate_lines(samples), collate_training(samples)):
        net.zero_grad()
        out, lens = net(batch["images"], batch["seq_lens"])
        logp = out.squeeze(2).log_softmax(1).permute(2, 0, 1)
        loss = torch.nn.functional.ctc_loss(logp, batch["labels"], lens, batch["label_lens"], reduction="sum")
        loss.backward()
        results.append((float(loss.detach()), torch.cat([p.grad.flatten() for p in net.parameters()]), batch))
    (l0, g0, b0), (l1, g1, b1) = results
    assert b1["images"].shape[-1] % 64 == 0 and b1["images"].shape[-1] > b0["images"].shape[-1]
    assert l0 == pytest.approx(l1, rel=1e-5)
    assert float((g0 - g1).norm() / g0.norm()) < 1e-4

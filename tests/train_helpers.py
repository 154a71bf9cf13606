"""Helpers for the training tests: tiny data, tiny networks, fast runs."""

from __future__ import annotations

import random
import time
from pathlib import Path
from typing import Any

import lightning as L

from scriba.config import GlobalConfig, TrainConfig

TINY_SPEC = "[1,16,0,1 Cr3,3,8 Mp2,2 S1(1x0)1,3 Lbx16]"


WORDS = ["ab", "cab", "bad", "dace", "faced", "bead", "cafe", "deaf", "bee", "fee", "ace", "dad"]


def make_lines(folder: Path, n: int, seed: int = 0, prefix: str = "l") -> list[str]:
    """``n`` synthetic path-format lines (PNG + .gt.txt) of a six-letter alphabet, rendered with PIL's font."""
    from PIL import Image, ImageDraw, ImageFont

    rng = random.Random(seed)
    font = ImageFont.load_default(size=18)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        text = " ".join(rng.choice(WORDS) for _ in range(rng.randint(2, 4)))
        width = int(ImageDraw.Draw(Image.new("L", (1, 1))).textlength(text, font=font)) + 12
        im = Image.new("L", (width, 28), 255)
        ImageDraw.Draw(im).text((6, 3), text, font=font, fill=0)
        p = folder / f"{prefix}{i:03d}.png"
        im.save(p)
        p.with_suffix("").with_suffix(".gt.txt").write_text(text, encoding="utf-8")
        paths.append(str(p))
    return paths


def tiny_config(synth: dict[str, list[str]], out: Path, **kw) -> TrainConfig:
    values = dict(
        training_data=synth["train"],
        evaluation_data=synth["val"],
        format_type="path",
        spec=TINY_SPEC,
        quit="fixed",
        epochs=2,
        batch_size=8,
        lrate=3e-3,
        warmup=0,  # the default's 200 steps are more than most of these runs take
        checkpoint_path=str(out),
    )
    values.update(kw)
    return TrainConfig(**values)


def tiny_global(**kw) -> GlobalConfig:
    values = dict(num_workers=0, num_threads=1, seed=7, deterministic=True)
    values.update(kw)
    return GlobalConfig(**values)


class SlowBatches(L.Callback):
    """Makes every training batch take at least ``seconds``, so that a time budget ends mid-epoch."""

    def __init__(self, seconds: float) -> None:
        self.seconds, self.steps = seconds, 0

    def on_train_batch_end(self, trainer: L.Trainer, *args: Any) -> None:
        time.sleep(self.seconds)
        self.steps += 1

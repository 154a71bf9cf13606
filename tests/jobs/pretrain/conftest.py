"""Tiny synthetic line images (with transcriptions, which pretraining ignores) for the pretraining tests."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from PIL import Image, ImageDraw

TINY_SPEC = "[1,16,0,1 Cr3,3,8 Mp2,2 S1(1x0)1,3 Lbx16]"


WORDS = ["abc", "cab", "bad", "dab", "ace", "bead", "fade", "face", "cafe", "deaf", "bed", "fed"]


def make_lines(folder: Path, n: int, seed: int = 0, with_text: bool = True) -> list[str]:
    """``n`` line images drawn with PIL's bitmap font; returns their paths."""
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        text = " ".join(rng.choice(WORDS) for _ in range(rng.randint(2, 4)))
        im = Image.new("L", (8 + 6 * len(text), 16), 255)
        ImageDraw.Draw(im).text((4, 2), text, fill=0)
        path = folder / f"line_{i:03d}.png"
        im.save(path)
        if with_text:
            path.with_suffix("").with_suffix(".gt.txt").write_text(text, encoding="utf-8")
        paths.append(str(path))
    return paths


@pytest.fixture(scope="session")
def tiny_spec() -> str:
    return TINY_SPEC


@pytest.fixture(scope="session")
def tiny_lines(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    return make_lines(tmp_path_factory.mktemp("lines"), 24)


@pytest.fixture(scope="session")
def unlabelled_lines(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    return make_lines(tmp_path_factory.mktemp("unlabelled"), 12, seed=5, with_text=False)

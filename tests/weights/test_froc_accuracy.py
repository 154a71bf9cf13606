"""model_froc.mlmodel on published_split/test.lst with NFD text: kraken 7.1.1 counts 13426 chars, 1077 errors
(1075 on an AVX2-only CPU).

kraken's counts come from references with each whitespace character replaced by a space and the ends
stripped (no collapsing), compared with stripped predictions; the same conventions are used here.
"""

from __future__ import annotations

import re
import unicodedata

import pytest
import torch
from PIL import Image

from scriba.recognizer import Recognizer
from scriba.weights import load_model
from shared_paths import kraken_froc_errors


@pytest.mark.slow
def test_froc_error_count_matches_kraken(shared_data):
    pytest.importorskip("coremltools")
    from rapidfuzz.distance import Levenshtein

    root = shared_data / "froc_mss"
    paths = [p.strip() for p in open(root / "published_split" / "test.lst") if p.strip()]
    refs = []
    for p in paths:
        raw = (root / p).with_suffix("").with_suffix(".gt.txt").read_text(encoding="utf-8").strip("\n\r")
        refs.append(re.sub(r"\s", " ", unicodedata.normalize("NFD", raw)).strip())
    model = load_model(root / "model_froc.mlmodel")
    torch.set_num_threads(2)
    preds = Recognizer(model, device="cpu", batch_size=16).predict([Image.open(root / p) for p in paths])
    chars = sum(len(r) for r in refs)
    errors = sum(Levenshtein.distance(r, p.text.strip()) for r, p in zip(refs, preds))
    assert chars == 13426
    assert errors == kraken_froc_errors()

"""Real kraken files load and predict what kraken 7.1.1 predicts (tests/fixtures/kraken_predictions.json)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from PIL import Image

from scriba.recognizer import Recognizer
from scriba.weights import convert, load_model

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "kraken_predictions.json"


def _kraken_line_predictions(model: str) -> list[dict]:
    if not FIXTURES.exists():
        pytest.skip("kraken reference predictions not present")
    preds = json.load(open(FIXTURES, encoding="utf-8"))["predictions"]
    return [p for p in preds if p["model"] == model and p["mode"].startswith("line image")]


def _logical(text: str) -> str:
    # kraken's `ocr` output is in logical order; networks emit display order
    from bidi.algorithm import get_display

    return get_display(text)


@pytest.mark.parametrize(
    "name,spec_start",
    [
        ("overfit_bl.safetensors", "[1,30,0,1 Cr{C_0}3,3,32,2,2 Gn{Gn_1}32"),
        ("overfit_bl_newpoly.safetensors", "[1,30,0,1"),
        ("overfit.mlmodel", "[1,30,0,1 Cr{C_0}3,3,32,2,2"),
        ("overfit_newpoly.mlmodel", "[1,30,0,1"),
        ("merge_tests/merge_codec_nfd.mlmodel", "[1,10,0,1 Cr{C_0}3,13,6"),
        ("model_small.safetensors", "[1,48,0,1"),
        ("model_small_fp16.safetensors", "[1,48,0,1"),
        ("model_small_mixed.safetensors", "[1,48,0,1"),
        ("model_small.mlmodel", "[1,48,0,1"),
    ],
)
def test_kraken_files_load(kraken_data, name, spec_start):
    if name.endswith(".mlmodel"):
        pytest.importorskip("coremltools")
    m = load_model(kraken_data / name)
    assert m.spec.startswith(spec_start)
    assert m.codec is not None
    assert all(p.dtype == torch.float32 for p in m.parameters())


@pytest.mark.parametrize(
    "model",
    ["kraken/overfit.mlmodel", "kraken/overfit_newpoly.mlmodel", "kraken/merge_tests/merge_codec_nfd.mlmodel",
     "froc_mss/model_froc.mlmodel"],
)
def test_line_predictions_match_kraken(shared_data, model):
    pytest.importorskip("coremltools")
    refs = _kraken_line_predictions(model)
    if not refs:
        pytest.skip(f"no kraken predictions for {model}")
    m = load_model(shared_data / model)
    # `kraken ocr -s` treats a line image as a bbox line: centerline normalisation for 1-channel specs
    preds = Recognizer(m, device="cpu", batch_size=4).predict([Image.open(shared_data / r["input"]) for r in refs])
    assert [_logical(p.text) for p in preds] == [r["prediction"] for r in refs]


def test_froc_converts_to_safetensors(shared_data, tmp_path):
    pytest.importorskip("coremltools")
    out = convert([shared_data / "froc_mss" / "model_froc.mlmodel"], tmp_path / "froc.safetensors")
    a = load_model(shared_data / "froc_mss" / "model_froc.mlmodel").eval()
    b = load_model(out).eval()
    assert a.spec == b.spec and a.codec == b.codec
    x = torch.rand(1, 1, 48, 200)
    with torch.no_grad():
        assert torch.allclose(a(x)[0], b(x)[0], atol=1e-5)

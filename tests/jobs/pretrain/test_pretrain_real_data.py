"""Pretraining on real inputs: kraken's PageXML and Arrow files, and kraken models loaded with --load."""

from __future__ import annotations

import glob
from pathlib import Path
from typing import Any

import pytest

from scriba.config import GlobalConfig, PretrainConfig
from scriba.jobs.pretrain.job import pretrain
from scriba.weights import load_model

G = GlobalConfig(device="cpu", num_workers=0, seed=3)


def _cfg(out: Path, data: list[str], **kw: Any) -> PretrainConfig:
    opts: dict[str, Any] = dict(
        training_data=data,
        checkpoint_path=str(out),
        quit="fixed",
        epochs=1,
        min_epochs=0,
        lrate=1e-3,
        warmup=0,
        schedule="constant",
        batch_size=2,
        mask_width=2,
        num_negatives=5,
        spec="[1,24,0,1 Cr3,3,8 Mp2,2 S1(1x0)1,3 Lbx8]",
    )
    opts.update(kw)
    return PretrainConfig(**opts)


def test_page_xml_keeps_lines_without_text(kraken_data: Path, tmp_path: Path) -> None:
    page = kraken_data / "170025120000003,0074-lite.xml"
    result = pretrain(_cfg(tmp_path, [str(page)], format_type="page", partition=0.6), G, progress=False)
    # five lines, one of them untranscribed: pretraining needs no text, so none is left out
    assert result.train_lines + result.val_lines == 5
    model = load_model(result.weights)  # type: ignore[arg-type]
    assert model.metadata["seg_type"] == "baselines"


def test_binary_dataset(kraken_data: Path, tmp_path: Path) -> None:
    arrow = kraken_data / "merge_tests" / "base.arrow"
    result = pretrain(_cfg(tmp_path, [str(arrow)], format_type="binary", partition=0.5), G, progress=False)
    assert result.train_lines >= 1 and result.val_lines >= 1
    assert result.weights is not None


def test_load_a_kraken_coreml_model_keeps_its_classifier(shared_data: Path, tmp_path: Path) -> None:
    model_path = shared_data / "froc_mss" / "model_froc.mlmodel"
    lines = sorted(glob.glob(str(shared_data / "froc_mss" / "digby23" / "*" / "*.png")))[:8]
    if not model_path.exists() or len(lines) < 8:
        pytest.skip("froc_mss model or lines not found")
    base = load_model(model_path)
    result = pretrain(_cfg(tmp_path, lines, format_type="path", load=str(model_path), partition=0.5), G, progress=False)
    tuned = load_model(result.weights)  # type: ignore[arg-type]
    # the output layer took no part in pretraining: it and the codec come out as they went in
    assert tuned.spec == base.spec
    assert tuned.codec == base.codec
    before, after = base.state_dict(), tuned.state_dict()
    assert all((before[k] == after[k]).all() for k in before if ".O_" in k)
    assert any(not (before[k] == after[k]).all() for k in before if ".L_" in k)

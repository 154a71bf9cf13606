"""The whole pipeline through the command line: compile -> train -> test -> convert, on real pages."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from shared_paths import run_ketos as ketos

SPEC = "[1,24,0,1 Cr3,3,16 Mp2,2 S1(1x0)1,3 Lbx32]"


@pytest.fixture
def pages(kraken_data: Path, tmp_path: Path) -> Path:
    for name in ("170025120000003,0074.xml", "170025120000003,0074.jpg"):
        shutil.copy(kraken_data / name, tmp_path / name)
    return tmp_path


def test_compile_train_test_convert(pages: Path, capsys, monkeypatch):
    pytest.importorskip("coremltools")
    monkeypatch.chdir(pages)
    rc, out, err = ketos(["--workers", "1", "compile", "-o", "page.arrow", "170025120000003,0074.xml"], capsys)
    assert rc == 0, err
    assert "44" in out  # lines written, in the summary
    Path("data.lst").write_text("page.arrow\n")

    rc, out, err = ketos(["-d", "cpu", "--workers", "0", "--seed", "3", "train", "-f", "binary", "-t", "data.lst",
                          "-e", "data.lst", "-s", SPEC, "-q", "fixed", "-N", "2", "-B", "8", "-o", "model",
                          "--weights-format", "coreml"], capsys)
    assert rc == 0, err
    weights = out.split("best model: ")[1].strip()
    assert weights.endswith(".mlmodel") and Path(weights).exists()

    rc, out, err = ketos(["test", "-f", "binary", "-m", weights, "-e", "data.lst", "--output-json", "r.json"],
                         capsys)
    assert rc == 0, err
    assert "Character Accuracy" in out and Path(weights).name in out
    report = json.loads(Path("r.json").read_text())
    assert len(report["lines"]) == 44 and report["summary"]["chars"] > 1000
    assert f'{report["summary"]["char_accuracy"] * 100:.2f}%' in out

    rc, out, err = ketos(["convert", "-o", "again.safetensors", weights], capsys)
    assert rc == 0, err
    from scriba.weights import load_model

    a, b = load_model(weights), load_model("again.safetensors")
    assert a.spec == b.spec and a.codec.c2l == b.codec.c2l


def test_compile_of_nothing_valid_is_one_line_error(kraken_data: Path, tmp_path: Path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    bad = sorted((kraken_data / "page" / "invalid").glob("*.xml"))
    rc, _, err = ketos(["compile", "-o", "x.arrow", *map(str, bad)], capsys)
    assert rc != 0
    last = err.strip().splitlines()[-1]
    assert last.startswith("error: ") and "Traceback" not in err
    assert not Path("x.arrow").exists()

"""``ketos test`` end to end with a real model: kraken's published FROC model on FROC-MSS lines."""

from __future__ import annotations

import json
import shutil
import unicodedata
from pathlib import Path

import pytest

from scriba import config as C
from scriba.errors import ModelError, NoDataError, ScribaError
from scriba.jobs.evaluate.job import run_test, write_reports
from scriba.jobs.evaluate.report import render_text
from scriba.text import normalize_whitespace
from shared_paths import kraken_froc_errors

FIXTURES = Path(__file__).parents[2] / "fixtures"
G = C.GlobalConfig(device="cpu", num_workers=0, num_threads=1)


@pytest.fixture(scope="module")
def froc(shared_data: Path) -> Path:
    folder = shared_data / "froc_mss"
    if not (folder / "model_froc.mlmodel").exists():
        pytest.skip(f"FROC-MSS model not found in {folder}")
    return folder


def _test_lines(froc: Path, n: int | None = None) -> list[str]:
    lst = (froc / "published_split" / "test.lst").read_text(encoding="utf-8").split()
    return [str(froc / p) for p in lst[:n]]


def _cfg(froc: Path, lines: list[str], **kw: object) -> C.TestConfig:
    return C.TestConfig(
        model=str(froc / "model_froc.mlmodel"), test_data=lines, format_type="path", normalization="NFD", **kw
    )


def test_predictions_match_kraken(froc: Path, shared_data: Path) -> None:
    """Per-line predictions equal kraken 7.1.1's for the same model and line images (fixture from bench/)."""
    fixture = FIXTURES / "kraken_predictions.json"
    if not fixture.exists():
        pytest.skip(f"{fixture} not found")
    expected = [
        p for p in json.loads(fixture.read_text(encoding="utf-8"))["predictions"] if "model_froc" in p["model"]
    ][:12]
    lines = [str(shared_data / p["input"]) for p in expected]
    result = run_test(_cfg(froc, lines), G)
    got = {r.id: r.prediction for r in result.tally.lines}
    # ketos test applies -u and whitespace normalization to predictions; kraken's ocr output has neither
    want = {ln: normalize_whitespace(unicodedata.normalize("NFD", p["prediction"])) for ln, p in zip(lines, expected)}
    wrong = {Path(k).name: (want[k], got[k]) for k in lines if got[k] != want[k]}
    assert not wrong, f"{len(wrong)} of {len(lines)} lines differ from kraken: {wrong}"
    assert result.name == "model_froc.mlmodel"
    assert result.tally.lines_seen == len(lines)
    for r in result.tally.lines:  # references: -u NFD and whitespace normalization, as kraken
        assert r.reference == unicodedata.normalize("NFD", r.reference).strip()


def test_batching_and_workers_do_not_change_results(froc: Path) -> None:
    lines = _test_lines(froc, 6)
    one = run_test(_cfg(froc, lines, batch_size=1), G)
    batched = run_test(_cfg(froc, lines, batch_size=4), C.GlobalConfig(device="cpu", num_workers=1, num_threads=1))
    assert {r.id: r.prediction for r in one.tally.lines} == {r.id: r.prediction for r in batched.tally.lines}
    assert one.tally.summary() == batched.tally.summary()
    assert one.tally.chars > 0 and one.lines_per_second > 0


def test_reports_written(froc: Path, tmp_path: Path) -> None:
    cfg = _cfg(froc, _test_lines(froc, 3), output_json=str(tmp_path / "r.json"), output_html=str(tmp_path / "r.html"))
    result = run_test(cfg, G)
    write_reports(result, cfg)
    data = json.loads((tmp_path / "r.json").read_text(encoding="utf-8"))
    assert data["summary"]["chars"] == result.tally.chars
    assert data["summary"]["errors"] == result.tally.errors
    assert len(data["lines"]) == 3 and {"id", "reference", "prediction", "distance"} <= set(data["lines"][0])
    assert data["settings"]["normalization"] == "NFD" and data["settings"]["legacy_polygons"] is True
    page = (tmp_path / "r.html").read_text(encoding="utf-8")
    assert page.count('class="lineimg"') == sum(1 for r in result.tally.lines if r.distance)
    text = render_text(result)
    assert text.startswith("=== report model_froc.mlmodel ===\n")
    assert f"{result.tally.errors}\tErrors" in text


def _copy_line(froc: Path, dest: Path, name: str, text: str) -> str:
    src = _test_lines(froc, 1)[0]
    shutil.copy(src, dest / f"{name}.png")
    (dest / f"{name}.gt.txt").write_text(text, encoding="utf-8")
    return str(dest / f"{name}.png")


def test_unencodable_and_unreadable_lines(froc: Path, tmp_path: Path) -> None:
    good = _copy_line(froc, tmp_path, "a", "e n nule t͛re que ſeıt δe cɑ lɑ mer жж")
    broken = tmp_path / "b.png"
    broken.write_bytes(b"not a png")
    (tmp_path / "b.gt.txt").write_text("abc", encoding="utf-8")
    no_text = tmp_path / "c.png"
    shutil.copy(good, no_text)
    result = run_test(_cfg(froc, [good, str(broken), str(no_text)]), G)
    assert result.tally.lines_seen == 1
    assert result.unencodable == {"ж": 2} and result.unencodable_lines == 1
    assert result.tally.errors >= 2  # what the model cannot produce is an error
    assert sorted(Path(s.source).name for s in result.skipped) == ["b.png", "c.png"]
    notes = render_text(result).split("\n\n")[-1]
    assert notes.count("Note:") == 2
    assert "cannot produce" in notes and "U+0436" in notes and "b.png" in notes


def test_no_lines(froc: Path, tmp_path: Path) -> None:
    missing_text = tmp_path / "x.png"
    shutil.copy(_test_lines(froc, 1)[0], missing_text)
    with pytest.raises(NoDataError, match="no lines"):
        run_test(_cfg(froc, [str(missing_text)]), G)


def test_unreadable_model(froc: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad.mlmodel"
    bad.write_bytes(b"\x00garbage" * 10)
    with pytest.raises(ModelError):
        run_test(C.TestConfig(model=str(bad), test_data=_test_lines(froc, 1), format_type="path"), G)
    with pytest.raises(ScribaError):
        run_test(C.TestConfig(model=str(tmp_path / "nope.safetensors"), test_data=["x"], format_type="path"), G)


@pytest.mark.slow
def test_published_split_acceptance(froc: Path) -> None:
    """Issue 6 acceptance 1: kraken 7.1.1 reports 13426 characters, 1077 errors (91.98 %) at -B 1 (1075 on an
    AVX2-only CPU)."""
    result = run_test(_cfg(froc, _test_lines(froc)), C.GlobalConfig(device="cpu", num_workers=1, num_threads=1))
    assert result.tally.chars == 13426
    assert result.tally.errors == kraken_froc_errors()
    assert result.tally.char_accuracy == pytest.approx(1 - kraken_froc_errors() / 13426)


@pytest.mark.parametrize(
    ("model", "force_off", "legacy"),
    [
        ("overfit_bl.safetensors", False, True),
        ("overfit_bl.safetensors", True, False),
        ("overfit_bl_newpoly.safetensors", False, False),
    ],
)
def test_xml_defaults_follow_the_model(kraken_data: Path, model: str, force_off: bool, legacy: bool) -> None:
    """Line type and legacy polygons come from the model unless --no-legacy-polygons; empty lines are noted."""
    page = kraken_data / "170025120000003,0074-lite.xml"
    cfg = C.TestConfig(
        model=str(kraken_data / model), test_data=[str(page)], format_type="xml", no_legacy_polygons=force_off
    )
    result = run_test(cfg, G)
    assert result.settings["legacy_polygons"] is legacy and result.legacy_polygons is legacy
    assert {r.kind for r in result.records} == {"baselines"}
    assert result.tally.lines_seen == 4
    assert [s.reason for s in result.skipped] == ["empty transcription"]
    assert result.tally.chars == sum(len(r.reference) for r in result.tally.lines) > 0

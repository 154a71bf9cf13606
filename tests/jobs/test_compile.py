"""``compile_dataset`` on real pages and lines, broken inputs, parallel runs and the summary."""

from __future__ import annotations

import io
import json
import logging
import shutil
import time
from pathlib import Path

import pyarrow as pa
import pytest
from PIL import Image

import scriba.jobs.compile as compile_mod
from scriba.config import CompileConfig
from scriba.data.arrow import ArrowDataset
from scriba.data.xml import parse_page
from scriba.errors import NoDataError, UsageError
from scriba.jobs.compile import CompileSummary, compile_dataset

LITE = "170025120000003,0074-lite.xml"
LITE_TEXTS = [
    "$pag:39",
    "y salvedades alli expressadas; Y fue acetada;",
    "y assi mismo el dho$.dicho $ofi:Patron $ant:Miguel $ant:Carreras,",
    "y el $ofi:Rndo$.Reverendo $ant:Miguel $ant:Carreras $ofi:pbro$.presbítero residente en la",
]


def _compile(tmp_path: Path, name: str = "out.arrow", workers: int = 1, **kw) -> tuple[CompileSummary, ArrowDataset]:
    cfg = CompileConfig(output=str(tmp_path / name), **kw)
    summary = compile_dataset(cfg, num_workers=workers, progress=False)
    return summary, ArrowDataset(cfg.output)


def test_kraken_sample_pages(kraken_data: Path, tmp_path: Path) -> None:
    inputs = [str(kraken_data / LITE), str(kraken_data / "merge_tests" / "0014.xml")]
    summary, ds = _compile(tmp_path, ground_truth=inputs)
    assert ds.texts() == [*LITE_TEXTS, "Ꝙesãsͥ", "a9"]
    assert summary.pages == 2 and summary.lines_written == 6 and summary.skipped == {"empty transcription": 1}
    assert "6 lines written from 2 files" in str(summary) and "empty transcription" in str(summary)
    assert ds.seg_type == "baselines" and ds.metadata["im_mode"] == "RGB" and ds.legacy_polygons is False
    assert ds.metadata["counts"]["all"] == 6
    for i in range(len(ds)):
        im = Image.open(io.BytesIO(ds.image_bytes(i)))
        assert im.format == "PNG" and im.height < 60
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.arrow"]


def test_keep_empty_lines_force_type_and_legacy(kraken_data: Path, tmp_path: Path) -> None:
    _, ds = _compile(tmp_path, ground_truth=[str(kraken_data / LITE)], skip_empty_lines=False)
    assert len(ds) == 5 and ds.text(1) == ""
    summary, ds = _compile(
        tmp_path,
        "b.arrow",
        ground_truth=[str(kraken_data / LITE)],
        linetype="bbox",
        force_type="baseline",
        legacy_polygons=True,
    )
    assert ds.metadata["type"] == "kraken_recognition_baseline" and ds.legacy_polygons is True
    assert summary.dataset_type == "kraken_recognition_baseline"


def test_invalid_inputs_and_corrupt_image_next_to_good_ones(
    kraken_data: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    pages = tmp_path / "pages"
    pages.mkdir()
    shutil.copy(kraken_data / LITE, pages / "good.xml")
    shutil.copy(kraken_data / "170025120000003,0074.jpg", pages)
    # The same page pointing at a corrupt image.
    (pages / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 broken")
    (pages / "bad.xml").write_text((kraken_data / LITE).read_text().replace("170025120000003,0074.jpg", "corrupt.jpg"))
    (pages / "broken.xml").write_text("<PcGts><Page")
    inputs = [str(p) for p in sorted((kraken_data / "alto" / "invalid").glob("*.xml"))]
    inputs += [str(p) for p in sorted((kraken_data / "page" / "invalid").glob("*.xml"))]
    inputs += [str(kraken_data / "alto" / "zero_dims.xml"), str(pages / "bad.xml"), str(pages / "broken.xml")]
    inputs += [str(pages / "good.xml")]
    with caplog.at_level(logging.WARNING):
        summary, ds = _compile(tmp_path, ground_truth=inputs, workers=2)
    assert ds.texts() == LITE_TEXTS
    assert summary.pages == 11 and summary.pages_failed == 9
    assert summary.skipped == {"empty transcription": 2, "page image cannot be read": 4}
    assert "Traceback" not in caplog.text
    for name in ("dims.xml", "image.xml", "mu.xml", "zero_dims_missing_image.xml", "broken.xml"):
        assert name in caplog.text
    assert "bad.xml: image cannot be read" in caplog.text and "line_1469098649515_464" in caplog.text


def test_nothing_to_compile(kraken_data: Path, tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="No training data"):
        compile_dataset(CompileConfig(output=str(tmp_path / "x.arrow")), 1, False)
    with pytest.raises(NoDataError, match="no lines could be compiled from 2 input pages.*no page image") as err:
        compile_dataset(
            CompileConfig(
                ground_truth=[
                    str(kraken_data / "alto" / "invalid" / "image.xml"),
                    str(kraken_data / "alto" / "zero_dims.xml"),
                ],
                output=str(tmp_path / "x.arrow"),
            ),
            1,
            False,
        )
    assert "1 of them could not be used" in str(err.value) and "image.xml" in str(err.value)
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(UsageError, match="force-type"):
        compile_dataset(CompileConfig(ground_truth=["a"], force_type="lines"), 1, False)


def test_failure_midway_leaves_no_file(kraken_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(im: Image.Image) -> bytes:
        raise KeyboardInterrupt

    monkeypatch.setattr(compile_mod, "_png", boom)
    with pytest.raises(KeyboardInterrupt):
        _compile(tmp_path, ground_truth=[str(kraken_data / LITE)])
    assert list(tmp_path.iterdir()) == []


def test_path_format_froc_with_manifest_and_corrupt_image(
    shared_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    froc = shared_data / "froc_mss"
    entries = (froc / "splits" / "test.lst").read_text().split()[:20]
    manifest = tmp_path / "m.lst"
    manifest.write_text("\n".join(str(froc / e) for e in entries) + f"\n{tmp_path / 'bad.png'}\n")
    (tmp_path / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    (tmp_path / "bad.gt.txt").write_text("text")
    summary, ds = _compile(tmp_path, files=[str(manifest)], format_type="path", workers=2)
    assert summary.lines_written == 20 and summary.skipped == {"image cannot be read": 1}
    expected = [
        (froc / e).with_suffix("").with_suffix(".gt.txt").read_text(encoding="utf-8").strip("\n\r") for e in entries
    ]
    assert ds.texts() == expected
    assert ds.seg_type == "bbox" and ds.language(0) is None
    # Plain PNG line images are stored byte for byte.
    assert ds.image_bytes(0) == (froc / entries[0]).read_bytes()


def test_path_format_openiti_keeps_logical_order(shared_data: Path, tmp_path: Path) -> None:
    folder = shared_data / "openiti_arabic" / "ara" / "book_IbnAthir.Kamil" / "7_final"
    images = [str(folder / f"{i:06d}.png") for i in range(5)]
    _, ds = _compile(tmp_path, ground_truth=images, format_type="path")
    # Text is stored raw (logical order, kraken's text_type 'raw'); bidi reordering happens on reading.
    assert ds.texts()[1] == (folder / "000001.gt.txt").read_text(encoding="utf-8").strip("\n\r")
    assert ds.metadata["text_type"] == "raw"


def test_cremma_page_parallel_equals_serial(shared_data: Path, tmp_path: Path) -> None:
    root = shared_data / "cremma_medieval"
    pages = [str(root / p) for p in (root / "splits" / "test.lst").read_text().split()[1:3]]
    expected = [line.text for p in pages for line in parse_page(p)[1] if line.text]
    serial, a = _compile(tmp_path, "a.arrow", ground_truth=pages)
    parallel, b = _compile(tmp_path, "b.arrow", ground_truth=pages, workers=2, recordbatch_size=7)
    assert a.texts() == b.texts() == expected
    assert serial.lines_written == parallel.lines_written == len(expected) > 50
    assert all(a.image_bytes(i) == b.image_bytes(i) for i in range(len(a)))
    assert pa.ipc.open_file(pa.memory_map(str(tmp_path / "b.arrow"))).num_record_batches == -(-len(expected) // 7)
    meta = json.loads(pa.ipc.open_file(pa.memory_map(str(tmp_path / "a.arrow"))).schema.metadata[b"lines"])
    assert meta["counts"]["all"] == len(expected)


@pytest.mark.slow
def test_cremma_throughput(shared_data: Path, tmp_path: Path) -> None:
    root = shared_data / "cremma_medieval"
    pages = [str(root / p) for p in (root / "splits" / "train.lst").read_text().split()[:8]]
    for workers in (1, 2):
        started = time.perf_counter()
        summary, _ = _compile(tmp_path, f"w{workers}.arrow", ground_truth=pages, workers=workers)
        print(f"workers={workers}: {summary.lines_written / (time.perf_counter() - started):.0f} lines/s")


FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


def _kraken_reference(name: str) -> dict:
    path = FIXTURES / name
    if not path.exists():
        pytest.skip(f"{path} not generated (bench/make_fixtures.py)")
    return json.loads(path.read_text(encoding="utf-8"))


@pytest.mark.parametrize(
    "set_name", ["kraken_0074_lite", "kraken_0074", "kraken_merge_0014", "cremma_test_page1", "openiti_arabic_test20"]
)
def test_same_lines_texts_and_sizes_as_kraken(shared_data: Path, tmp_path: Path, set_name: str) -> None:
    """kraken 7.1.1's own compile of the same inputs: same rows, same raw text, line images within 3 px."""
    ref = _kraken_reference("kraken_texts.json")["sets"][set_name]
    inputs = [str(shared_data / p) for p in ref["inputs"]]
    summary, ds = _compile(tmp_path, ground_truth=inputs, format_type=ref["format"])
    kept = [line for line in ref["lines"] if line["compiled"]]
    assert summary.lines_written == ref["n_compiled"] == len(kept)
    assert ds.texts() == [line["raw"] for line in kept]
    assert ds.metadata["type"] == ref["arrow_type"]
    for i, line in enumerate(kept):
        w, h = Image.open(io.BytesIO(ds.image_bytes(i))).size
        assert abs(w - line["image_size"][0]) <= 3 and abs(h - line["image_size"][1]) <= 8, (line["line_id"], w, h)


def test_partial_files_of_killed_runs_are_removed_and_named(
    kraken_data: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    import os
    import subprocess
    import sys

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    pid = int(dead.stdout)  # a process that has exited
    stale = [tmp_path / f"out.arrow.partial-{pid}", tmp_path / f"out.arrow.tmp-{pid}"]
    for p in stale:
        p.write_bytes(b"x" * 1000)
    live = tmp_path / f"out.arrow.partial-{os.getppid()}"  # a running compilation keeps its file
    other = tmp_path / f"other.arrow.partial-{pid}"  # another output's: not ours to judge
    live.write_bytes(b"y")
    other.write_bytes(b"z")
    with caplog.at_level(logging.WARNING):
        _compile(tmp_path, ground_truth=[str(kraken_data / LITE)])
    assert not any(p.exists() for p in stale)
    assert live.exists() and other.exists()
    for p in stale:
        assert any(str(p) in r.getMessage() and "interrupted" in r.getMessage() for r in caplog.records)

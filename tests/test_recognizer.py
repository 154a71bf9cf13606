"""The one inference path: predictions on line images, pages and datasets agree with ``ketos test`` and do not
depend on the batch size."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from PIL import Image

from scriba import config as C
from scriba.errors import InputError, ModelError, UsageError
from scriba.jobs.evaluate.job import evaluate, run_test
from scriba.metrics import prediction_normalizer
from scriba.recognizer import Recognizer, inference_device, width_batches

G = C.GlobalConfig(device="cpu", num_workers=0, num_threads=1)


@pytest.fixture(scope="module")
def froc(shared_data: Path) -> tuple[Path, list[str]]:
    folder = shared_data / "froc_mss"
    if not (folder / "model_froc.mlmodel").exists():
        pytest.skip(f"FROC-MSS model not found in {folder}")
    lines = (folder / "published_split" / "test.lst").read_text(encoding="utf-8").split()
    return folder / "model_froc.mlmodel", [str(folder / p) for p in lines[:20]]


@pytest.fixture(scope="module")
def froc_model(froc):
    from scriba.weights import load_model

    return load_model(froc[0])


def test_predictions_equal_ketos_test_at_batch_sizes_1_and_16(froc, froc_model):
    model_path, lines = froc
    tests = {
        b: run_test(C.TestConfig(model=str(model_path), test_data=lines, format_type="path", batch_size=b), G)
        for b in (1, 16)
    }
    want = {r.id: r.prediction for r in tests[1].tally.lines}
    assert {r.id: r.prediction for r in tests[16].tally.lines} == want
    assert tests[1].tally.summary() == tests[16].tally.summary()
    # ketos test normalizes whitespace in predictions; the recognizer gives the network's text
    norm = prediction_normalizer(None, True)
    for b in (1, 16):
        preds = Recognizer(froc_model, device="cpu", batch_size=b).predict(lines)
        assert {ln: norm(p.text) for ln, p in zip(lines, preds)} == want
    pil = Recognizer(froc_model, device="cpu", batch_size=16).predict([Image.open(p) for p in lines[:4]])
    assert [norm(p.text) for p in pil] == [want[ln] for ln in lines[:4]]
    assert all(len(p.confidences) == len(p.text) for p in pil)


def test_predict_files_reads_line_images_and_datasets(froc, froc_model, tmp_path):
    from scriba.config import CompileConfig
    from scriba.jobs.compile import compile_dataset

    _, lines = froc
    manifest = tmp_path / "lines.lst"
    manifest.write_text("\n".join(lines[:6]) + "\n", encoding="utf-8")
    rec = Recognizer(froc_model, device="cpu", batch_size=4)
    from_images = rec.predict_files([str(manifest)], format_type="path")
    assert [r.source for r, _ in from_images] == lines[:6]
    assert from_images[0][0].text  # the transcription comes along with the line
    arrow = tmp_path / "lines.arrow"
    compile_dataset(CompileConfig(ground_truth=[str(manifest)], output=str(arrow), format_type="path"), progress=False)
    from_arrow = rec.predict_files(str(arrow), format_type="binary")
    assert [p.text for _, p in from_arrow] == [p.text for _, p in from_images]
    result = evaluate(froc_model, [str(arrow)], C.TestConfig(format_type="binary"), G)
    norm = prediction_normalizer(None, True)
    assert [r.prediction for r in result.tally.lines] == [norm(p.text) for _, p in from_arrow]


def test_predict_files_reads_page_lines_like_ketos_test(kraken_data):
    model = kraken_data / "overfit_bl.safetensors"
    page = kraken_data / "170025120000003,0074-lite.xml"
    rec = Recognizer(model, device="cpu", batch_size=3)
    got = rec.predict_files([str(page)])
    assert len(got) == 5 and {r.kind for r, _ in got} == {"baselines"}  # the empty line is read too
    result = run_test(C.TestConfig(model=str(model), test_data=[str(page)], batch_size=1), G)
    norm = prediction_normalizer(None, True)
    assert [r.prediction for r in result.tally.lines] == [norm(p.text) for r, p in got if r.text]


def test_session_restores_mode_threads_and_dtype(froc_model):
    threads = torch.get_num_threads()
    froc_model.train()
    rec = Recognizer(froc_model, device="cpu", precision="64-true", num_threads=threads + 1)
    with rec.session():
        assert not froc_model.training and torch.get_num_threads() == threads + 1
        assert next(froc_model.parameters()).dtype == torch.float64
    assert froc_model.training and torch.get_num_threads() == threads
    assert next(froc_model.parameters()).dtype == torch.float32


def test_bad_input_names_the_file(froc_model, tmp_path):
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not a png")
    with pytest.raises(InputError, match="broken.png"):
        Recognizer(froc_model, device="cpu").predict([str(broken)])
    with pytest.raises(UsageError, match="device"):
        inference_device("tpu:0")
    if not torch.cuda.is_available():
        with pytest.raises(UsageError, match="no CUDA"):
            inference_device("cuda:0")
    from scriba.vgsl import build_model

    with pytest.raises(ModelError, match="no codec"):
        Recognizer(build_model("[1,16,0,1 Cr3,3,4 S1(1x0)1,3 Lbx4 O1c5]", init=False))


def test_unreadable_line_among_good_ones_is_skipped_by_evaluate(froc, tmp_path):
    model_path, lines = froc
    good = tmp_path / "good.png"
    shutil.copy(lines[0], good)
    shutil.copy(Path(lines[0]).with_suffix("").with_suffix(".gt.txt"), tmp_path / "good.gt.txt")
    (tmp_path / "bad.png").write_bytes(b"x")
    (tmp_path / "bad.gt.txt").write_text("abc", encoding="utf-8")
    result = evaluate(model_path, str(tmp_path / "*.png"), C.TestConfig(format_type="path"), G)
    assert result.tally.lines_seen == 1 and [Path(s.source).name for s in result.skipped] == ["bad.png"]


def test_width_batches_group_similar_widths():
    assert width_batches([5, 50, 10, 40], 2) == [[1, 3], [2, 0]]
    assert width_batches([5, 50], 1) == [[0], [1]]

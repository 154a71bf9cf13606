"""Validation during training and ``ketos test`` share decode and metric code, so their numbers agree, also
when training runs in bf16 (validation stays in full precision, as ``ketos test`` does)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "train"))
from scriba.config import TestConfig as EvalConfig  # noqa: E402
from train_helpers import make_lines, tiny_config, tiny_global  # noqa: E402


@pytest.fixture(scope="module", params=["32-true", "bf16-mixed"])
def trained(tmp_path_factory, request):
    from scriba.jobs.train.job import train

    root = tmp_path_factory.mktemp("agree")
    data = {"train": make_lines(root / "train", 32, 1, "t"), "val": make_lines(root / "val", 12, 2, "v")}
    cfg = tiny_config(data, root / "model", epochs=25, batch_size=4,
                      spec="[1,24,0,1 Cr3,3,16 Mp2,2 S1(1x0)1,3 Lbx48]")
    return data, train(cfg, tiny_global(precision=request.param), progress=False)


@pytest.mark.parametrize("batch_size", [1, 5])
def test_best_validation_accuracy_equals_ketos_test(trained, batch_size):
    from scriba.jobs.evaluate.job import run_test
    from scriba.weights import load_model

    data, result = trained
    assert result.best_accuracy is not None and 0.05 < result.best_accuracy
    meta = load_model(result.weights).metadata
    epochs = [m for _, m in meta["metrics"]]
    assert max(m["val_accuracy"] for m in epochs) == pytest.approx(result.best_accuracy)
    report = run_test(EvalConfig(model=result.weights, test_data=data["val"], format_type="path",
                                 batch_size=batch_size), tiny_global())
    assert round(report.tally.char_accuracy, 4) == round(result.best_accuracy, 4)


def test_checkpoint_and_weights_evaluate_alike(trained):
    from scriba.jobs.evaluate.job import run_test

    data, result = trained
    scores = [run_test(EvalConfig(model=m, test_data=data["val"], format_type="path"), tiny_global())
              .tally.char_accuracy for m in (result.weights, result.best_checkpoint)]
    assert scores[0] == pytest.approx(scores[1])


def test_validation_ketos_test_and_the_recognizer_read_alike_at_any_batch_size(trained):
    """The acceptance of the one inference path: on the best weights and the validation lines, the best
    validation's error count equals `ketos test`'s at -B 1 and -B 16, and both equal the Python predictor's
    text line by line, also at either batch size."""
    from scriba.jobs.evaluate.job import run_test
    from scriba.metrics import prediction_normalizer
    from scriba.recognizer import Recognizer

    data, result = trained
    best = max(result.history, key=lambda h: h["val_accuracy"])
    reports = {b: run_test(EvalConfig(model=result.weights, test_data=data["val"], format_type="path", batch_size=b),
                           tiny_global()) for b in (1, 16)}
    for report in reports.values():
        assert (report.tally.errors, report.tally.chars) == (best["val_errors"], best["val_chars"])
    tested = {r.id: r.prediction for r in reports[1].tally.lines}
    assert {r.id: r.prediction for r in reports[16].tally.lines} == tested
    norm = prediction_normalizer(None, True)
    for b in (1, 16):
        preds = Recognizer(result.weights, device="cpu", batch_size=b).predict(data["val"])
        assert {line: norm(p.text) for line, p in zip(data["val"], preds)} == tested

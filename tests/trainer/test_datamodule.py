"""Reading and splitting the lines (``collect_lines``)."""

from __future__ import annotations

from pathlib import Path

from scriba.config import TrainConfig
from scriba.trainer.datamodule import collect_lines
from train_helpers import make_lines


def test_lines_without_transcriptions_are_kept_when_text_is_not_required(tmp_path: Path) -> None:
    lines = make_lines(tmp_path, 8)
    Path(lines[0]).with_suffix(".gt.txt").unlink()  # no transcription
    Path(lines[1]).with_suffix(".gt.txt").write_text("", encoding="utf-8")  # empty transcription
    cfg = TrainConfig(training_data=lines, format_type="path", partition=0.5)

    transcribed = collect_lines(cfg, seed=1)
    assert len(transcribed.train) + len(transcribed.val) == 6
    assert len(transcribed.skipped) == 2

    unlabelled = collect_lines(cfg, seed=1, require_text=False)
    assert len(unlabelled.train) + len(unlabelled.val) == 8
    assert not unlabelled.skipped
    assert set(unlabelled.train_texts + unlabelled.val_texts) == {""}  # .gt.txt files are not read
    assert unlabelled.split["mode"] == "partition"

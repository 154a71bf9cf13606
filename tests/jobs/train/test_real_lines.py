"""``ketos train`` on froc's real lines with the default network: how batches run, and what the log says."""

from __future__ import annotations

from pathlib import Path

from shared_paths import run_ketos

MICRO_LINE = "micro-batches of"
EPOCHS_WARNING = "--epochs 2 does not end the run under --quit early"


def _train(froc_lines: list[str], tmp_path: Path, capsys, *opts: str) -> str:
    """What ``ketos -v train`` prints on stderr (its log) for 16 of froc's lines and ``opts``."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    (tmp_path / "train.lst").write_text("\n".join(froc_lines[:16]) + "\n")
    (tmp_path / "val.lst").write_text("\n".join(froc_lines[16:20]) + "\n")
    rc, _, err = run_ketos(
        ["-d", "cpu", "--workers", "0", "--threads", "1", "-v", "train", "-f", "path", "-t", str(tmp_path / "train.lst"),
         "-e", str(tmp_path / "val.lst"), "-u", "NFD", "--max-time", "0.02", "-o", str(tmp_path / "m"), *opts],
        capsys,
    )
    assert rc == 0, err
    return " ".join(err.split())  # the console wraps long lines


def test_default_batches_run_whole_and_large_ones_split(froc_lines, tmp_path, capsys):
    # measured on froc's lines (bench/RESULTS.md): the default -B 4 is fastest whole, -B 16 as two passes of 8
    log = _train(froc_lines, tmp_path / "b4", capsys, "-q", "fixed", "-N", "1")
    assert MICRO_LINE not in log
    log = _train(froc_lines, tmp_path / "b16", capsys, "-q", "fixed", "-N", "1", "-B", "16")
    assert "batches of 16 lines run as 2 micro-batches of 8" in log


def test_epochs_under_early_stopping_warn_on_a_real_run(froc_lines, tmp_path, capsys):
    log = _train(froc_lines, tmp_path / "early", capsys, "-N", "2")  # -q early is the default
    assert EPOCHS_WARNING in log and "-q fixed" in log
    log = _train(froc_lines, tmp_path / "fixed", capsys, "-q", "fixed", "-N", "2")
    assert EPOCHS_WARNING not in log


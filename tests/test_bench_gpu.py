"""The GPU, DDP and quality benchmark sections run (smoke mode, on CPU), so that they cannot rot between real runs."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from shared_paths import SHARED_DATA

ROOT = Path(__file__).resolve().parents[1]


def _run(args: list[str], timeout: float) -> subprocess.CompletedProcess:
    if not (SHARED_DATA / "froc_mss" / "splits" / "train.lst").is_file():
        pytest.skip("froc_mss is not in ../shared/data")
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"), SCRIBA_SHARED_DATA=str(SHARED_DATA))
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, env=env, timeout=timeout)


def test_gpu_section_smoke_on_cpu(tmp_path):
    out = tmp_path / "gpu.md"
    run = _run([str(ROOT / "bench" / "gpu.py"), "--smoke", "-d", "cpu", "--out", str(out)], 300)
    assert run.returncode == 0, run.stderr
    rows = re.findall(r"^\| (\d+) \| (\S+) \| \d+ \| ([0-9.]+) \| ([0-9.]+) % \|", out.read_text(), re.M)
    assert [(b, p) for b, p, _, _ in rows] == [("2", "32-true"), ("4", "bf16-mixed")]
    assert all(float(rate) > 0 and 0 <= float(share) < 100 for _, _, rate, share in rows)
    assert (tmp_path / "gpu.json").is_file()


@pytest.mark.slow
def test_ddp_section_smoke(tmp_path):
    out = tmp_path / "ddp.md"
    run = _run([str(ROOT / "bench" / "ddp.py"), "--smoke", "--out", str(out)], 600)
    assert run.returncode == 0, run.stderr
    text = out.read_text()
    assert "2 processes x 1 thread, -B 2" in text and "1 process x 2 threads, -B 4" in text
    assert "failed" not in text and "points apart" in text


def _quality_smoke(keep: Path, arm: str) -> tuple[list[str], dict]:
    """Runs one arm of bench/quality.py --smoke on froc_pages; its arguments and result.json."""
    import json

    args = [str(ROOT / "bench" / "quality.py"), "--smoke", "--datasets", "froc_pages", "--arms", arm,
            "--keep", str(keep), "--threads", "1"]
    run = _run(args, 300)
    assert run.returncode == 0, run.stdout + run.stderr
    return args, json.loads((keep / "froc_pages" / f"{arm}-0.1min-seed1" / "result.json").read_text())


def test_quality_section_smoke_and_resume(tmp_path):
    import json

    keep = tmp_path / "q"
    args, rec = _quality_smoke(keep, "defaults")
    result = keep / "froc_pages" / "defaults-0.1min-seed1" / "result.json"
    assert rec["stopped"].startswith("the time budget of 0.1 minutes is spent")
    assert rec["greedy"]["chars"] > 0 and 0 <= rec["greedy"]["errors"]
    assert "--max-time 0.1" in rec["train_command"]
    row = re.search(r"^\| froc_pages \| defaults \| 0.1 min \|.*$", (keep / "quality.md").read_text(), re.M)
    assert row and f"({rec['greedy']['errors']}/{rec['greedy']['chars']})" in row.group(0)
    # a finished arm is not trained again
    log = keep / "froc_pages" / "defaults-0.1min-seed1" / "train.log"
    before = log.stat().st_mtime_ns
    assert _run(args, 120).returncode == 0 and log.stat().st_mtime_ns == before
    # an arm interrupted after its training resumes at the test: the model is not trained again
    result.unlink()
    (keep / "froc_pages" / "defaults-0.1min-seed1" / "test.json").unlink()
    assert _run(args, 120).returncode == 0 and log.stat().st_mtime_ns == before
    again = json.loads(result.read_text())
    assert again["greedy"] == {**rec["greedy"], "lines_per_s": again["greedy"]["lines_per_s"]}


def test_quality_pretrained_arm_pretrains_then_fine_tunes_on_a_labelled_subset(tmp_path):
    keep = tmp_path / "q"
    _, rec = _quality_smoke(keep, "pretrained300")
    folder = keep / "froc_pages" / "pretrained300-0.1min-seed1"
    weights = rec["pretrain"]["weights"]
    assert Path(weights).is_file() and " pretrain " in rec["pretrain"]["command"]
    assert f"-i {weights} --resize new" in rec["train_command"]
    assert str(folder / "train_subset.lst") in rec["train_command"]
    # smoke mode's 16 training lines are fewer than 300: the subset is all of them, in order
    full = (keep / "manifests" / "froc_pages-train-16.lst").read_text().split()
    assert (folder / "train_subset.lst").read_text().split() == full and len(full) == 16
    assert rec["greedy"]["chars"] > 0


def test_lm_decoding_section_smoke(tmp_path):
    pytest.importorskip("flashlight.lib.text.decoder", reason="flashlight-text (scriba[lm]) is not installed")
    import json

    model = SHARED_DATA / "froc_mss" / "model_froc.mlmodel"
    if not model.is_file():
        pytest.skip("froc_mss/model_froc.mlmodel is not in ../shared/data")
    out = tmp_path / "lm.json"
    args = [str(ROOT / "bench" / "lm_decoding.py"), "--model", str(model), "--root", str(SHARED_DATA / "froc_mss"),
            "--split", "published_split", "-u", "NFD", "--processes", "1", "--limit", "12", "--weights", "0.5,1.5",
            "--bonuses", "2.5", "--json", str(out)]
    run = _run(args, 600)
    assert run.returncode == 0, run.stdout + run.stderr
    rec = json.loads(out.read_text())
    assert rec["val"]["lines"] == 12 and rec["test"]["lines"] == 12 and rec["test"]["chars"] > 0
    assert rec["best"]["lm_weight"] in (0.5, 1.5) and rec["best"]["token_bonus"] == 2.5
    assert rec["decode_lines_per_s"]["1"] > 0
    assert "test: greedy" in run.stdout

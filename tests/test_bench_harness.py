"""The benchmark's harness (bench/harness.py): one command's wall time, memory, checkpoints and stop rules."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.harness import run_measured  # noqa: E402

# writes checkpoint_00-0.2000.ckpt, then checkpoint_01-0.9000.ckpt, then would run on for a minute
TRAINER = """
import pathlib, sys, time
out = pathlib.Path(sys.argv[1])
buf = bytearray(64 << 20)  # 64 MiB, touched so that it is resident
for i in range(0, len(buf), 4096):
    buf[i] = 1
for e, acc in enumerate((0.2, 0.9)):
    time.sleep(0.5)
    (out / f"checkpoint_{e:02d}-{acc:.4f}.ckpt").write_bytes(b"x")
print("trained", flush=True)
time.sleep(60)
"""


def _run(tmp_path, **kw):
    out = tmp_path / "model"
    out.mkdir()
    return run_measured("t", [sys.executable, "-c", TRAINER, out], tmp_path, logs=tmp_path / "logs", watch=out, **kw)


def test_stops_when_a_checkpoint_reaches_the_target(tmp_path):
    rec = _run(tmp_path, timeout=50, stop_at_score=0.85)
    assert rec.status == "target reached" and rec.ok
    assert sorted(rec.files_seen) == ["checkpoint_00-0.2000.ckpt", "checkpoint_01-0.9000.ckpt"]
    assert rec.files_seen["checkpoint_00-0.2000.ckpt"] < rec.files_seen["checkpoint_01-0.9000.ckpt"] < rec.wall_s < 50
    assert rec.peak_rss_gib > 60 / 1024
    assert "trained" in rec.tail and rec.tail.startswith("$ (cd ")
    assert rec.log == str(tmp_path / "logs" / "t.log")


def test_a_command_past_its_timeout_is_stopped(tmp_path):
    rec = _run(tmp_path, timeout=1.5)
    assert rec.status == "timeout" and not rec.ok
    assert 1.5 <= rec.wall_s < 30


def test_a_failing_command_is_recorded_with_its_exit_status(tmp_path):
    rec = run_measured("f", [sys.executable, "-c", "import sys; print('bad input'); sys.exit(3)"], tmp_path, 30,
                       logs=tmp_path / "logs")
    assert (rec.rc, rec.status, rec.ok) == (3, "exit 3", False)
    assert "bad input" in rec.tail
    assert rec.as_record()["name"] == "f"

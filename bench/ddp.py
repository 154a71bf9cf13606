#!/usr/bin/env python3
"""DDP section: several CPU processes against one process with all threads, at the same global batch.

    python bench/ddp.py            # 2 x 1 thread at -B 8 vs 1 x 2 threads at -B 16, 2 epochs of 640 froc
                                   # lines, default spec: bench/work/ddp.md (about 15 min on a 2-core machine)
    python bench/ddp.py --smoke    # harness check: tiny spec, 16 lines, 1 epoch

Both runs go through the ``ketos`` command line (``-d cpu``, ``--workers 0``, ``-s 1``, ``-u NFD``,
``-q fixed``) on the same lines and validate on the same froc_mss validation lines; the DDP run is
``--processes P --threads 1 -B b`` and the single one ``--threads P -B P*b``. Reported: lines/s of the last
epoch (the rate ``ketos`` prints, over all processes), wall time, and the validation accuracy after the last
epoch; the goal is that the accuracies are within 1 point of each other. Run it on an otherwise idle machine:
the two runs compete for the same cores.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
DATA = Path(os.environ.get("SCRIBA_SHARED_DATA", ROOT.parent / "shared" / "data")).resolve()
TINY_SPEC = "[1,24,0,1 Cr3,3,8 Mp2,2 S1(1x0)1,3 Lbx16]"
EPOCH_LINE = re.compile(r"^epoch (\d+) .*?val_accuracy ([0-9.]+).*?([0-9.]+) lines/s", re.M)


def manifest(tmp: Path, split: str, n: int) -> Path:
    folder = DATA / "froc_mss"
    names = (folder / "splits" / f"{split}.lst").read_text(encoding="utf-8").split()[:n]
    path = tmp / f"{split}.lst"
    path.write_text("".join(f"{folder / name}\n" for name in names), encoding="utf-8")
    return path


def ketos() -> list[str]:
    return [os.environ["SCRIBA_KETOS"]] if os.environ.get("SCRIBA_KETOS") else [sys.executable, "-m", "scriba.cli.main"]


def run(name: str, global_opts: list[str], batch: int, a: argparse.Namespace, train: Path, val: Path,
        out: Path) -> dict[str, Any]:
    cmd = [*ketos(), "-d", "cpu", "--workers", "0", "-s", "1", *global_opts, "train", "-f", "path", "-t", str(train),
           "-e", str(val), "-o", str(out), "-B", str(batch), "-q", "fixed", "-N", str(a.epochs), "-u", "NFD",
           "-s", a.spec]
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src") + os.pathsep + os.environ.get("PYTHONPATH", ""))
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=a.timeout)
    wall = time.perf_counter() - t0
    shown = " ".join(["ketos", *cmd[len(ketos()):]])
    epochs = EPOCH_LINE.findall(proc.stderr)
    row: dict[str, Any] = {"name": name, "command": shown, "wall_s": wall, "ok": proc.returncode == 0}
    if proc.returncode != 0 or not epochs:
        row["error"] = (proc.stderr.strip().splitlines() or ["no output"])[-1][:300]
        return row
    row.update(epochs=len(epochs), val_accuracy=float(epochs[-1][1]), lines_per_s=float(epochs[-1][2]))
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--smoke", action="store_true")
    ap.add_argument("--processes", type=int, default=2)
    ap.add_argument("--batch", type=int, default=8, help="per process in the DDP run")
    ap.add_argument("--train-lines", type=int, default=640)
    ap.add_argument("--val-lines", type=int, default=346)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--spec", default=None)
    ap.add_argument("--timeout", type=float, default=3 * 3600)
    ap.add_argument("--out", type=Path, default=BENCH / "work" / "ddp.md")
    a = ap.parse_args()
    if a.smoke:
        a.train_lines, a.val_lines, a.epochs, a.batch = 16, 4, 1, 2
    if a.spec is None:
        sys.path.insert(0, str(ROOT / "src"))
        from scriba.config import DEFAULT_SPEC

        a.spec = TINY_SPEC if a.smoke else DEFAULT_SPEC
    p = a.processes
    with tempfile.TemporaryDirectory(prefix="scriba-ddp-bench-") as tmp:
        t = Path(tmp)
        train, val = manifest(t, "train", a.train_lines), manifest(t, "val", a.val_lines)
        rows = [
            run(f"{p} processes x 1 thread, -B {a.batch}", ["--processes", str(p), "--threads", "1"], a.batch, a,
                train, val, t / "ddp"),
            run(f"1 process x {p} threads, -B {p * a.batch}", ["--threads", str(p)], p * a.batch, a, train, val,
                t / "single"),
        ]
    lines = [
        "## DDP on CPU: processes against threads at the same global batch",
        "",
        f"Command: `python bench/ddp.py {' '.join(sys.argv[1:])}`; {a.train_lines} froc_mss train lines, "
        f"{a.val_lines} validation lines, {a.epochs} epoch(s), spec `{a.spec}`"
        + (" (smoke mode: not a measurement)." if a.smoke else "."),
        "",
        "| run | lines/s (last epoch) | wall s | val accuracy | command |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        if r.get("error"):
            lines.append(f"| {r['name']} | failed: {r['error']} | {r['wall_s']:.0f} | | `{r['command']}` |")
        else:
            lines.append(f"| {r['name']} | {r['lines_per_s']:.2f} | {r['wall_s']:.0f} | {r['val_accuracy']:.4f} "
                         f"| `{r['command']}` |")
    if all(r.get("ok") and "val_accuracy" in r for r in rows):
        gap = abs(rows[0]["val_accuracy"] - rows[1]["val_accuracy"]) * 100
        speed = rows[0]["lines_per_s"] / rows[1]["lines_per_s"]
        lines += ["", f"DDP/single speed ratio {speed:.2f}x; accuracies {gap:.2f} points apart "
                      f"(goal: within 1 point) — {'met' if gap <= 1.0 else 'not met'}."]
    text = "\n".join(lines) + "\n"
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(text, encoding="utf-8")
    a.out.with_suffix(".json").write_text(json.dumps(rows, indent=1), encoding="utf-8")
    print(text)


if __name__ == "__main__":
    main()

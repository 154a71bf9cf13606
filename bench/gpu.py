#!/usr/bin/env python3
"""GPU section: steady-state training throughput, memory, utilisation and the loader's share on one GPU.

    python bench/gpu.py                      # one GPU (cuda:0), <= 8 min: bench/work/gpu.md + bench/work/gpu.json
    python bench/gpu.py --smoke -d cpu       # harness check in seconds (tiny spec, a few lines, no GPU needed)

For the default spec on froc_mss train lines (`-u NFD`), each configuration trains in its own process
(clean CUDA memory figures; a crash or an out-of-memory ends only its row): `-B 16, 64, 256` in `32-true`
and `bf16-mixed` with `--workers 4`, then the best batch size again with `--workers 8`. Each run skips
`--warmup-steps` steps (CUDA kernels, cuDNN autotuning, the loader's first batches), then times
`--steps` steps:

- lines/s: lines trained / wall time of the timed steps (each step ends with the loss on the host, so the
  GPU has finished it);
- loader share: time between the end of one step and the start of the next (Lightning fetching the batch
  from the workers and copying it to the GPU) over the whole;
- GPU memory: ``torch.cuda.max_memory_allocated`` and ``max_memory_reserved``;
- GPU utilisation: ``nvidia-smi`` sampled every 0.2 s during the timed steps (mean and min), when present.

The batches are in random order from the first epoch on (scriba's first epoch otherwise runs shortest
lines first), so that the figures hold for the rest of a training run.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(ROOT / "src"))
DATA = Path(os.environ.get("SCRIBA_SHARED_DATA", ROOT.parent / "shared" / "data")).resolve()
TINY_SPEC = "[1,24,0,1 Cr3,3,8 Mp2,2 S1(1x0)1,3 Lbx16]"


def froc_lines(split: str, n: int) -> list[str]:
    folder = DATA / "froc_mss"
    names = (folder / "splits" / f"{split}.lst").read_text(encoding="utf-8").split()
    return [str(folder / name) for name in names[:n]]


class _GpuSampler(threading.Thread):
    """Samples ``nvidia-smi`` utilisation of one GPU until stopped."""

    def __init__(self, index: int, period: float = 0.2) -> None:
        super().__init__(daemon=True)
        self.index, self.period = index, period
        self.values: list[float] = []
        self._stop_event = threading.Event()
        self.available = shutil.which("nvidia-smi") is not None

    def run(self) -> None:
        cmd = ["nvidia-smi", "-i", str(self.index), "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits"]
        while self.available and not self._stop_event.is_set():
            try:
                out = subprocess.run(cmd, capture_output=True, text=True, timeout=5).stdout.strip()
                self.values.append(float(out.splitlines()[0]))
            except (OSError, ValueError, IndexError, subprocess.SubprocessError):
                self.available = False
            self._stop_event.wait(self.period)

    def stop(self) -> None:
        self._stop_event.set()


def _timer(warmup: int, steps: int, device: str) -> Any:
    import lightning as L
    import torch

    class StepTimer(L.Callback):
        def __init__(self) -> None:
            self.step = 0
            self.lines = 0
            self.step_s = 0.0
            self.fetch_s = 0.0
            self.t_first: float | None = None
            self.t_last = 0.0
            self._end: float | None = None
            self._start = 0.0
            self.gpu: _GpuSampler | None = None
            # validation between two steps is not the loader's time, nor training time
            self.val_s = 0.0
            self._gap_val = 0.0
            self._val_start = 0.0

        def on_validation_start(self, trainer, pl_module) -> None:
            self._val_start = time.perf_counter()

        def on_validation_end(self, trainer, pl_module) -> None:
            spent = time.perf_counter() - self._val_start
            self._gap_val += spent
            if self.t_first is not None:
                self.val_s += spent

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
            now = time.perf_counter()
            if self.step >= warmup:
                if self.t_first is None:
                    self.t_first = self._end if self._end is not None else now
                    if device.startswith("cuda"):
                        torch.cuda.reset_peak_memory_stats()
                        self.gpu = _GpuSampler(torch.cuda.current_device())
                        self.gpu.start()
                if self._end is not None:
                    self.fetch_s += now - self._end - self._gap_val
            self._gap_val = 0.0
            self._start = now

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
            now = time.perf_counter()
            if self.step >= warmup:
                self.step_s += now - self._start
                self.lines += 0 if batch is None else len(batch["seq_lens"])
                self.t_last = now
            self._end = now
            self.step += 1
            if self.step >= warmup + steps:
                trainer.should_stop = True
                if self.gpu is not None:
                    self.gpu.stop()

    return StepTimer()


def measure(args: argparse.Namespace, batch: int, precision: str, workers: int) -> dict[str, Any]:
    """One configuration in this process: the figures as a dict."""
    import torch

    import scriba.trainer.datamodule as datamodule
    from scriba.config import GlobalConfig, TrainConfig
    from scriba.jobs.train.job import train

    datamodule.SORTED_FIRST_EPOCHS = 0
    n_train = min(args.max_lines, max(batch * (args.warmup_steps + args.steps) + batch, 64))
    out = Path(tempfile.mkdtemp(prefix="scriba-gpu-bench-"))
    timer = _timer(args.warmup_steps, args.steps, args.device)
    cfg = TrainConfig(
        training_data=froc_lines("train", n_train),
        evaluation_data=froc_lines("val", args.val_lines),
        format_type="path",
        normalization="NFD",
        spec=args.spec,
        batch_size=batch,
        quit="fixed",
        epochs=1000,
        checkpoint_path=str(out),
    )
    g = GlobalConfig(device=args.device, precision=precision, num_workers=workers, num_threads=args.threads)
    t0 = time.perf_counter()
    try:
        train(cfg, g, callbacks=[timer], progress=False)
    finally:
        shutil.rmtree(out, ignore_errors=True)
    wall = timer.t_last - timer.t_first - timer.val_s if timer.t_first is not None else 0.0
    row: dict[str, Any] = {
        "batch": batch,
        "precision": precision,
        "workers": workers,
        "train_lines": n_train,
        "timed_steps": max(0, timer.step - args.warmup_steps),
        "lines_per_s": timer.lines / wall if wall > 0 else None,
        "loader_share": timer.fetch_s / (timer.fetch_s + timer.step_s) if timer.step_s > 0 else None,
        "run_s": time.perf_counter() - t0,
    }
    if args.device.startswith("cuda") and torch.cuda.is_available():
        row["max_allocated_gib"] = torch.cuda.max_memory_allocated() / 1024**3
        row["max_reserved_gib"] = torch.cuda.max_memory_reserved() / 1024**3
        row["gpu"] = torch.cuda.get_device_name()
    if timer.gpu is not None and timer.gpu.values:
        row["util_mean"] = statistics.fmean(timer.gpu.values)
        row["util_min"] = min(timer.gpu.values)
    return row


def _one_in_subprocess(args: argparse.Namespace, batch: int, precision: str, workers: int) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--one", f"{batch},{precision},{workers}", *_passthrough(args)]
    try:
        run = subprocess.run(cmd, capture_output=True, text=True, timeout=args.run_timeout)
    except subprocess.TimeoutExpired:
        return {"batch": batch, "precision": precision, "workers": workers, "error": "timed out"}
    lines = [x for x in run.stdout.splitlines() if x.startswith("{")]
    if run.returncode != 0 or not lines:
        tail = (run.stderr.strip().splitlines() or ["no output"])[-1]
        return {"batch": batch, "precision": precision, "workers": workers, "error": tail[:300]}
    return dict(json.loads(lines[-1]))


def _passthrough(args: argparse.Namespace) -> list[str]:
    return ["-d", args.device, "--steps", str(args.steps), "--warmup-steps", str(args.warmup_steps),
            "--threads", str(args.threads), "--spec", args.spec, "--val-lines", str(args.val_lines),
            "--max-lines", str(args.max_lines)]


def _fmt(x: Any, nd: int = 1, pct: bool = False) -> str:
    if x is None:
        return "—"
    return f"{100 * x:.{nd}f} %" if pct else f"{x:.{nd}f}"


def table(rows: list[dict[str, Any]], args: argparse.Namespace, command: str) -> str:
    gpu = next((r["gpu"] for r in rows if r.get("gpu")), args.device)
    out = [
        f"## GPU training ({gpu})",
        "",
        f"Command: `{command}`. spec `{args.spec}`, froc_mss train lines, `-u NFD`; "
        f"{args.warmup_steps} warm-up steps, then {args.steps} timed steps; "
        + ("smoke mode: in one process, not a measurement." if args.smoke else "each row in its own process."),
        "",
        "| -B | precision | workers | lines/s | loader share of step time | GPU memory allocated / reserved GiB "
        "| GPU utilisation mean / min |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if r.get("error"):
            out.append(f"| {r['batch']} | {r['precision']} | {r['workers']} | failed: {r['error']} | | | |")
            continue
        mem = (f"{_fmt(r.get('max_allocated_gib'), 2)} / {_fmt(r.get('max_reserved_gib'), 2)}"
               if "max_allocated_gib" in r else "—")
        util = f"{_fmt(r.get('util_mean'), 0)} / {_fmt(r.get('util_min'), 0)} %" if "util_mean" in r else "—"
        out.append(f"| {r['batch']} | {r['precision']} | {r['workers']} | {_fmt(r['lines_per_s'])} "
                   f"| {_fmt(r['loader_share'], 1, pct=True)} | {mem} | {util} |")
    good = [r for r in rows if r.get("lines_per_s")]
    if good:
        best = max(good, key=lambda r: r["lines_per_s"])
        out += ["", f"Best: {best['lines_per_s']:.0f} lines/s at -B {best['batch']} {best['precision']} "
                    f"--workers {best['workers']} (aim: >= 2000 lines/s on an H100/H200-class GPU)."]
    return "\n".join(out) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-d", "--device", default="cuda:0")
    ap.add_argument("--smoke", action="store_true", help="a few lines, tiny spec, two configurations, in process")
    ap.add_argument("--batches", default="16,64,256")
    ap.add_argument("--precisions", default="32-true,bf16-mixed")
    ap.add_argument("--workers", type=int, default=4)
    ap.add_argument("--more-workers", type=int, default=8, help="the best configuration again with this many")
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--warmup-steps", type=int, default=5)
    ap.add_argument("--threads", type=int, default=4)
    ap.add_argument("--spec", default=None)
    ap.add_argument("--val-lines", type=int, default=8)
    ap.add_argument("--max-lines", type=int, default=2950)
    ap.add_argument("--run-timeout", type=float, default=150.0)
    ap.add_argument("--out", type=Path, default=BENCH / "work" / "gpu.md")
    ap.add_argument("--one", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.spec is None:
        from scriba.config import DEFAULT_SPEC

        args.spec = TINY_SPEC if args.smoke else DEFAULT_SPEC
    if args.one:
        b, p, w = args.one.split(",")
        print(json.dumps(measure(args, int(b), p, int(w))))
        return
    command = "python bench/gpu.py " + " ".join(sys.argv[1:])
    if args.smoke:
        args.steps, args.warmup_steps, args.val_lines, args.threads = 2, 1, 4, 1
        plan = [(2, "32-true", 0), (4, "bf16-mixed", 0)]
        rows = [measure(args, b, p, w) for b, p, w in plan]
    else:
        plan = [(int(b), p, args.workers) for p in args.precisions.split(",") for b in args.batches.split(",")]
        rows = []
        for b, p, w in plan:
            rows.append(_one_in_subprocess(args, b, p, w))
            print(json.dumps(rows[-1]), flush=True)
        good = [r for r in rows if r.get("lines_per_s")]
        if good and args.more_workers > args.workers:
            best = max(good, key=lambda r: r["lines_per_s"])
            rows.append(_one_in_subprocess(args, best["batch"], best["precision"], args.more_workers))
            print(json.dumps(rows[-1]), flush=True)
    text = table(rows, args, command)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text, encoding="utf-8")
    args.out.with_suffix(".json").write_text(json.dumps(rows, indent=1), encoding="utf-8")
    print(text)


if __name__ == "__main__":
    main()

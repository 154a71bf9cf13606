"""Running one measured command: its wall time, the peak memory of its process tree, the checkpoints it writes.

Memory is polled from /proc (no psutil), so the harness needs nothing beyond the standard library.
"""

from __future__ import annotations

import dataclasses
import os
import re
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from bench.settings import BENCH, ROOT

CKPT_RE = re.compile(r"checkpoint_(\d+)-(\d+(?:\.\d+)?)\.ckpt$")


@dataclass
class Measured:
    """One command's record; sections add their figures to its dict (``as_record``) before it is stored."""

    name: str
    cmd: str
    cwd: str
    log: str
    rc: int | None = None
    wall_s: float = 0.0
    status: str = ""
    ok: bool = False
    peak_rss_gib: float | None = None
    peak_pss_gib: float | None = None
    files_seen: dict[str, float] = field(default_factory=dict)  # file name -> seconds after the start
    tail: str = ""

    def as_record(self) -> dict:
        return dataclasses.asdict(self)


def setup_kraken() -> str | None:
    """Builds kraken's venv with bench/setup_kraken.sh (a no-op when it is ready); the error text on failure."""
    cp = subprocess.run(["bash", str(BENCH / "setup_kraken.sh")], capture_output=True, text=True)
    return None if cp.returncode == 0 else cp.stderr[-3000:]


def _children_map() -> dict[int, list[int]]:
    kids: dict[int, list[int]] = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat", "rb") as fh:
                st = fh.read().decode("latin-1")
            ppid = int(st[st.rindex(")") + 2:].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        kids.setdefault(ppid, []).append(int(d))
    return kids


def _tree(pid: int) -> list[int]:
    kids = _children_map()
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(kids.get(p, []))
    return out


def _mem(pids: list[int]) -> tuple[int, int]:
    rss = pss = 0
    for p in pids:
        try:
            with open(f"/proc/{p}/smaps_rollup") as fh:
                for line in fh:
                    if line.startswith("Rss:"):
                        rss += int(line.split()[1]) * 1024
                    elif line.startswith("Pss:"):
                        pss += int(line.split()[1]) * 1024
        except OSError:
            try:
                with open(f"/proc/{p}/status") as fh:
                    for line in fh:
                        if line.startswith("VmRSS:"):
                            rss += int(line.split()[1]) * 1024
            except OSError:
                pass
    return rss, pss


def _weights(f: Path) -> bool:
    return f.suffix in (".ckpt", ".safetensors", ".mlmodel")


def run_measured(name: str, cmd: list, cwd: Path, timeout: float, logs: Path, env: dict | None = None,
                 watch: Path | None = None, stop_at_score: float | None = None) -> Measured:
    """Run `cmd`, polling memory of its process tree and (optionally) new files in `watch`."""
    logs.mkdir(parents=True, exist_ok=True)
    log = logs / f"{name}.log"
    # relative to the repository (RESULTS.md shows it), unless the logs lie elsewhere
    shown = log.relative_to(ROOT) if log.resolve().is_relative_to(ROOT) else log
    rec = Measured(name=name, cmd=" ".join(map(str, cmd)), cwd=str(cwd), log=str(shown))
    seen = rec.files_seen
    peak_rss = peak_pss = 0
    status = None
    t0 = time.time()
    try:
        with open(log, "w") as lf:
            lf.write(f"$ (cd {cwd} && {rec.cmd})\n")
            lf.flush()
            p = subprocess.Popen([str(c) for c in cmd], cwd=cwd, env=env, stdout=lf, stderr=subprocess.STDOUT,
                                 stdin=subprocess.DEVNULL, start_new_session=True)
            while True:
                rc = p.poll()
                pids = _tree(p.pid) if rc is None else []
                if pids:
                    rss, pss = _mem(pids)
                    peak_rss, peak_pss = max(peak_rss, rss), max(peak_pss, pss)
                if watch is not None and watch.exists():
                    for f in watch.iterdir():
                        if f.name not in seen and _weights(f):
                            try:
                                seen[f.name] = f.stat().st_mtime - t0
                            except OSError:
                                continue
                            m = CKPT_RE.search(f.name)
                            if stop_at_score is not None and m and float(m[2]) >= stop_at_score and rc is None:
                                status = "target reached"
                if rc is not None:
                    break
                if status == "target reached":
                    _stop(p)
                    p.wait()
                    break
                if time.time() - t0 > timeout:
                    status = "timeout"
                    _stop(p)
                    p.wait()
                    break
                time.sleep(0.2)
        rec.rc = p.returncode
        if watch is not None and watch.exists():  # files written while shutting down
            for f in watch.iterdir():
                if f.name not in seen and _weights(f):
                    seen[f.name] = f.stat().st_mtime - t0
    except Exception as e:  # never crash the benchmark
        rec.rc = None
        status = f"harness error: {type(e).__name__}: {e}"
    rec.wall_s = time.time() - t0
    rec.status = status or ("ok" if rec.rc == 0 else f"exit {rec.rc}")
    rec.ok = rec.rc == 0 or status == "target reached"
    rec.peak_rss_gib = peak_rss / 2**30
    rec.peak_pss_gib = peak_pss / 2**30
    try:
        rec.tail = log.read_text(errors="replace")[-2500:]
    except OSError:
        rec.tail = ""
    return rec


def _stop(p: subprocess.Popen) -> None:
    """SIGINT, then SIGTERM, then SIGKILL the process group we started."""
    for sig, wait in ((signal.SIGINT, 20), (signal.SIGTERM, 15), (signal.SIGKILL, 5)):
        try:
            os.killpg(p.pid, sig)
        except ProcessLookupError:
            return
        try:
            p.wait(wait)
            return
        except subprocess.TimeoutExpired:
            continue

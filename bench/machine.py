"""The machine the benchmark runs on: CPU, memory, load, and waiting for a quiet moment."""

from __future__ import annotations

import os
import time
from pathlib import Path


def machine_info() -> dict:
    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    flags = ""
    try:
        fl = next(x for x in Path("/proc/cpuinfo").read_text().splitlines() if x.startswith("flags"))
        flags = " ".join(f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16") if f" {f}" in fl)
    except (OSError, StopIteration):
        pass
    mem = ""
    try:
        kb = next(x for x in Path("/proc/meminfo").read_text().splitlines() if x.startswith("MemTotal")).split()[1]
        mem = f"{int(kb) / 2**20:.1f} GiB"
    except (OSError, StopIteration):
        pass
    return {"utc": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()), "cpu": cpu, "cpu_flags": flags,
            "ncpu": os.cpu_count(), "loadavg": [round(x, 2) for x in os.getloadavg()], "mem_total": mem}


def recorded_flags(records: list[dict]) -> str:
    """The CPU flags of the run that made ``records`` (this machine's when none is recorded)."""
    rec = next((r for r in records if r.get("name") == "machine_before"), None)
    return rec.get("cpu_flags", "") if rec else machine_info()["cpu_flags"]


def native_bf16(flags: str | None = None) -> bool:
    """Whether the CPU computes bf16 natively (AVX-512 BF16 or AMX), from /proc/cpuinfo's flags by default."""
    if flags is None:
        flags = machine_info()["cpu_flags"]
    return any(f in flags.split() for f in ("avx512_bf16", "amx_bf16"))


def runnable_others(samples: int = 10) -> float:
    """Mean number of runnable tasks besides this process (field 4 of /proc/loadavg), over ~2 s."""
    xs = []
    for _ in range(samples):
        try:
            xs.append(int(Path("/proc/loadavg").read_text().split()[3].split("/")[0]) - 1)
        except (OSError, ValueError, IndexError):
            return 0.0
        time.sleep(0.2)
    return sum(xs) / len(xs)


def wait_for_quiet(threshold: float, max_wait: float = 120) -> float:
    """Before a section: wait (at most max_wait s) while other processes keep about `threshold` cores busy."""
    if threshold <= 0:
        return 0.0
    t0 = time.time()
    while time.time() - t0 < max_wait and runnable_others() >= threshold:
        time.sleep(8)
    return time.time() - t0

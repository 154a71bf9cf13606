"""Several training processes on this node: scriba starts them, watches them and hands back rank 0's result.

:func:`run_processes` (the launcher) is not a rank itself: it writes the job and its configurations to a
file, starts ``python -m scriba.trainer.launch FILE`` once per rank with the environment of Lightning's
``LightningEnvironment`` (``MASTER_ADDR``, ``MASTER_PORT``, ``WORLD_SIZE``, ``RANK``, ``LOCAL_RANK``), and
waits. Doing the supervision outside the ranks is what keeps one failure from hanging the others:

- a rank that fails (an exception, a kill) leaves its peers blocked in a collective operation; once one
  rank has exited with an error the others get ``FAIL_GRACE`` seconds to fail on their own, then SIGTERM,
  then SIGKILL, and the launcher raises a :class:`ScribaError` naming the rank;
- Ctrl-C and SIGTERM reach only the launcher (the ranks run in their own session) and are passed on once
  to every rank: rank 0 decides where all of them stop (see ``RunState``), a third Ctrl-C kills them;
- the ranks die with the launcher (``PR_SET_PDEATHSIG``), so that none is left behind.

The job is named by its import path (``scriba.jobs.train.job:train``) so that this layer imports no job.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

from scriba.errors import ScribaError
from scriba.trainer.cluster import CHILD_ENV, Layout

logger = logging.getLogger(__name__)

FAIL_GRACE = 10.0  # seconds the other ranks get to notice a failed peer before they are stopped
KILL_GRACE = 5.0  # seconds between SIGTERM and SIGKILL
RESULT_ENV = "SCRIBA_DDP_RESULT"


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    try:
        import ctypes

        ctypes.CDLL(None).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _describe(rc: int) -> str:
    if rc < 0:
        try:
            return f"killed by {signal.Signals(-rc).name}"
        except ValueError:
            return f"killed by signal {-rc}"
    return f"exit status {rc}"


def run_processes(job: str, cfg: Any, g: Any, layout: Layout, *, progress: bool | None = None) -> dict[str, Any]:
    """Runs ``job(cfg, g, progress=...)`` in ``layout.processes`` DDP processes; rank 0's result as a dict."""
    n = layout.processes
    tmp = Path(tempfile.mkdtemp(prefix="scriba-ddp-"))
    payload = tmp / "job.json"
    result = tmp / "result.json"
    payload.write_text(
        json.dumps(
            {
                "job": job,
                "config": f"{type(cfg).__module__}:{type(cfg).__qualname__}",
                "global": f"{type(g).__module__}:{type(g).__qualname__}",
                "cfg": dataclasses.asdict(cfg),
                "g": dataclasses.asdict(g),
                "progress": progress,
            }
        ),
        encoding="utf-8",
    )
    base = dict(os.environ)
    for key in ("TORCHELASTIC_RUN_ID", "GROUP_RANK", "ROLE_RANK"):
        base.pop(key, None)
    base.update(
        {
            CHILD_ENV: "1",
            RESULT_ENV: str(result),
            "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": str(_free_port()),
            "WORLD_SIZE": str(n),
            "LOCAL_WORLD_SIZE": str(n),
            "NODE_RANK": "0",
        }
    )
    procs: list[subprocess.Popen] = []
    signals_seen = 0

    def forward(signum: int, frame: Any) -> None:
        nonlocal signals_seen
        signals_seen += 1
        for p in procs:
            if p.poll() is None:
                try:
                    p.send_signal(signal.SIGKILL if signals_seen >= 3 else signum)
                except ProcessLookupError:
                    pass

    old = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        for s in old:
            signal.signal(s, forward)
    except ValueError:  # not the main thread: signals stay as they are
        old = {}
    failed: tuple[int, int] | None = None
    try:
        for rank in range(n):
            env = dict(base, RANK=str(rank), LOCAL_RANK=str(rank))
            procs.append(
                subprocess.Popen(
                    [sys.executable, "-m", "scriba.trainer.launch", str(payload)],
                    env=env,
                    start_new_session=True,
                    preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None,
                )
            )
        failed = _supervise(procs)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        for s, h in old.items():
            signal.signal(s, h)
    try:
        if failed is not None:
            rank, rc = failed
            raise ScribaError(
                f"training process {rank} of {n} failed ({_describe(rc)}); the others were stopped"
                + ("" if rc < 0 else " (its message is above)")
            )
        if not result.is_file():
            raise ScribaError("the training processes ended without a result from rank 0")
        return dict(json.loads(result.read_text(encoding="utf-8")))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _supervise(procs: list[subprocess.Popen]) -> tuple[int, int] | None:
    """Waits for every rank; after a failure stops the rest. The first failed rank and its status, or None."""
    failed: tuple[int, int] | None = None
    failed_at = 0.0
    stage = 0
    while True:
        codes = [p.poll() for p in procs]
        if all(c is not None for c in codes):
            return failed
        for rank, c in enumerate(codes):
            if failed is None and c is not None and c != 0:
                failed, failed_at = (rank, c), time.monotonic()
        if failed is not None:
            waited = time.monotonic() - failed_at
            if stage == 0 and waited > FAIL_GRACE:
                stage = 1
                for p in procs:
                    if p.poll() is None:
                        p.terminate()
            elif stage == 1 and waited > FAIL_GRACE + KILL_GRACE:
                stage = 2
                for p in procs:
                    if p.poll() is None:
                        p.kill()
        time.sleep(0.05)


# -- the rank's side -------------------------------------------------------------------------------------------


def _resolve(name: str) -> Any:
    module, _, attr = name.partition(":")
    return getattr(importlib.import_module(module), attr)


def _setup_logging(verbose: int, rank: int) -> None:
    import lightning  # noqa: F401 - it sets its loggers' levels on import; ours must come after

    from scriba.console import setup_logging

    # the other ranks would repeat every warning of rank 0 (the same data, the same options)
    setup_logging(verbose, prefix="" if rank == 0 else f"[rank {rank}] ", level=None if rank == 0 else logging.ERROR)


def main(argv: list[str]) -> int:
    """A rank: runs the job of the payload file ``argv[0]``; rank 0 writes the result for the launcher."""
    spec = json.loads(Path(argv[0]).read_text(encoding="utf-8"))
    rank = int(os.environ.get("RANK", "0"))
    verbose = int(spec["g"].get("verbose", 0))
    _setup_logging(verbose, rank)
    prefix = "" if rank == 0 else f"[rank {rank}] "
    try:
        from scriba.config import build

        cfg = build(_resolve(spec["config"]), spec["cfg"])
        g = build(_resolve(spec["global"]), spec["g"])
        out = _resolve(spec["job"])(cfg, g, progress=spec["progress"] if rank == 0 else False)
    except ScribaError as e:
        if verbose:
            traceback.print_exc()
        print(f"{prefix}error: {' '.join(str(e).split())}", file=sys.stderr, flush=True)
        return e.exit_code
    except KeyboardInterrupt:
        return 130
    except Exception as e:  # noqa: BLE001 - one line per failed rank unless -v
        if verbose:
            traceback.print_exc()
        print(f"{prefix}error: {type(e).__name__}: {' '.join(str(e).split())}", file=sys.stderr, flush=True)
        return 1
    if rank == 0 and os.environ.get(RESULT_ENV):
        target = Path(os.environ[RESULT_ENV])
        tmp = target.with_name(target.name + ".part")
        tmp.write_text(json.dumps(dataclasses.asdict(out)), encoding="utf-8")
        os.replace(tmp, target)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

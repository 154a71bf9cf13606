"""Paths and the in-process ``ketos`` runner shared by the test modules.

A module of its own (not ``conftest``): tests/train has a conftest too, and ``from conftest import`` would
pick whichever of the two was imported first.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("SCRIBA_SHARED_DATA", ROOT.parent / "shared" / "data")).resolve()
EXAMPLE_DATA = ROOT / "examples" / "froc_sample"


def run_ketos(args: list[str], capsys) -> tuple[int, str, str]:
    """``ketos ARGS`` in this process: (exit status, stdout, stderr)."""
    from scriba.cli.main import main

    with pytest.raises(SystemExit) as exc:
        main(args)
        raise SystemExit(0)
    out = capsys.readouterr()
    return int(exc.value.code or 0), out.out, out.err


def kraken_froc_errors() -> int:
    """kraken 7.1.1's error count for model_froc.mlmodel on froc's published test split (13426 characters).

    It depends on the CPU's instruction set: oneDNN's AVX2 kernels round differently from its AVX-512 ones,
    and two lines' predictions change (kraken itself counts 1075 errors on an AVX2-only CPU).
    """
    from scriba.machine import cpu_features

    return 1075 if cpu_features().avx2_only else 1077

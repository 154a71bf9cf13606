"""Shared fixtures. Tests that need ../shared/data skip with a clear reason when it is absent."""

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


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real test data folder (``../shared/data``); skips the test when it is missing."""
    if not (SHARED_DATA / "README.md").exists():
        pytest.skip(f"real data not found at {SHARED_DATA} (set SCRIBA_SHARED_DATA to its location)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def kraken_data(shared_data: Path) -> Path:
    return shared_data / "kraken"

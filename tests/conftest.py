"""Shared fixtures. Tests that need ../shared/data skip with a clear reason when it is absent."""

from __future__ import annotations

from pathlib import Path

import pytest

from shared_paths import SHARED_DATA


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real test data folder (``../shared/data``); skips the test when it is missing."""
    if not (SHARED_DATA / "README.md").exists():
        pytest.skip(f"real data not found at {SHARED_DATA} (set SCRIBA_SHARED_DATA to its location)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def kraken_data(shared_data: Path) -> Path:
    return shared_data / "kraken"

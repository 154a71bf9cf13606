"""Fixtures for the training tests (helpers live in ``train_helpers``)."""

from __future__ import annotations

import glob
import logging
from pathlib import Path

import pytest
import torch

from train_helpers import make_lines

FROC = "froc_mss/digby23"


@pytest.fixture(scope="session")
def synth(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[str]]:
    """32 training and 8 validation lines."""
    root = tmp_path_factory.mktemp("synth")
    return {"train": make_lines(root / "train", 32, 1, "t"), "val": make_lines(root / "val", 8, 2, "v")}


@pytest.fixture(scope="session")
def froc_lines(shared_data: Path) -> list[str]:
    files = sorted(glob.glob(str(shared_data / FROC / "*" / "*.png")))
    if len(files) < 60:
        pytest.skip("froc_mss lines not found")
    return files[:60]


@pytest.fixture(autouse=True)
def _threads():
    torch.set_num_threads(1)
    logging.getLogger("scriba").setLevel(logging.INFO)
    yield

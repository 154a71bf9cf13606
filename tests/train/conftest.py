"""Fixtures for the training tests: tiny data, tiny networks, fast runs."""

from __future__ import annotations

import glob
import logging
from pathlib import Path

import pytest
import torch

from scriba.vgsl import layers as _layers

TINY_SPEC = "[1,32,0,1 Cr3,3,16 Mp2,2 S1(1x0)1,3 Lbx32]"
FROC = "froc_mss/digby23"


def _patch_reshape() -> None:
    # vgsl.layers.Reshape once overrode nn.Module._apply (used by .cpu()/.to()); keep the tests independent of it
    if "_apply" in vars(_layers.Reshape) and "fn" not in _layers.Reshape._apply.__code__.co_varnames[:2]:
        reshape = _layers.Reshape._apply
        _layers.Reshape._reshape = reshape
        del _layers.Reshape._apply

        def forward(self, x, seq_lens=None):
            w = x.shape[3]
            o = self._reshape(x)
            if seq_lens is not None and o.shape[3] != w:
                seq_lens = (seq_lens.float() * (o.shape[3] / w)).long()
            return o, seq_lens

        def out_shape(self, c, h):
            o = self._reshape(torch.zeros(1, c, h or 1, 8))
            return o.shape[1], (o.shape[2] if h else 0)

        _layers.Reshape.forward = forward
        _layers.Reshape.out_shape = out_shape


_patch_reshape()


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

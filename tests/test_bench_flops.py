"""The benchmark's FLOP count (bench/flops.py) agrees with torch's own operator counter.

The FLOP/s figure of bench/RESULTS.md is only as good as this count, so it is checked against
``torch.utils.flop_counter`` on the default network: convolutions exactly, and a training step as 3x the
forward pass (the first convolution has no input gradient, so the estimate may be a few % high).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from scriba.vgsl import build_model

_FLOPS = Path(__file__).resolve().parents[1] / "bench" / "flops.py"


@pytest.fixture(scope="module")
def flops():
    spec = importlib.util.spec_from_file_location("bench_flops", _FLOPS)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_conv_flops_match_torch_counter(flops):
    width, classes = 400, 50
    est = flops.forward_flops(flops.DEFAULT_SPEC, width, classes)
    conv_est = sum(f for blk, f, _ in est["layers"] if blk.startswith("C"))
    lstm_est = sum(f for blk, f, _ in est["layers"] if blk.startswith("L"))
    assert lstm_est > 0

    net = build_model(flops.DEFAULT_SPEC.rstrip("]") + f" O1c{classes}]")
    x = torch.rand(1, 1, 120, width)
    counter = FlopCounterMode(display=False)
    with counter:
        out, _ = net(x)
        out.sum().backward()
    counts = {str(k): v for k, v in counter.get_flop_counts()["Global"].items()}
    assert counts["aten.convolution"] == conv_est
    # backward = 2x forward, less the input gradient the first convolution does not need
    first = est["layers"][0][1]
    assert counts["aten.convolution_backward"] == 2 * conv_est - first
    train_est = 3 * est["total"]
    counted = counts["aten.convolution"] + counts["aten.convolution_backward"] + 3 * (lstm_est + est["layers"][-1][1])
    assert counted <= train_est <= counted * 1.05

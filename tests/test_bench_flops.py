"""The benchmark's FLOP count (bench/flops.py, from ``RecognitionModel.flops``) agrees with torch's own operator
counter and with the counts the benchmark's figures were made with.

The FLOP/s figure of bench/RESULTS.md is only as good as this count, so it is checked against
``torch.utils.flop_counter`` on the default network: convolutions exactly, and a training step as 3x the
forward pass (the first convolution has no input gradient, so the estimate may be a few % high).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from scriba.errors import SpecError
from scriba.vgsl import build_model

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import bench.flops as flops  # noqa: E402

SMALL = "[1,48,0,1 Cr3,3,32 Mp2,2 Cr3,3,64 Mp2,2 S1(1x0)1,3 Lbx128 Do0.2,2 Lbx128]"


def test_conv_flops_match_torch_counter():
    width, classes = 160, 50
    est = flops.forward_flops(flops.KRAKEN_SPEC, width, classes)
    conv_est = sum(f for name, f, _ in est["layers"] if name.startswith("C"))
    lstm_est = sum(f for name, f, _ in est["layers"] if name.startswith("L"))
    assert lstm_est > 0

    net = build_model(flops.KRAKEN_SPEC.rstrip("]") + f" O1c{classes}]", init=False)  # shapes only
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


# forward FLOPs of the regex count bench/flops.py made before it counted on the model (471117d): the benchmark's
# FLOP/s figures were made with these
@pytest.mark.parametrize("spec, width, classes, expected", [
    (flops.KRAKEN_SPEC, 400, 50, 1955536000),
    (flops.KRAKEN_SPEC, 1232, 100, 6029210880),
    (flops.KRAKEN_SPEC, 97, 12, 469263360),
    (SMALL, 1232, 100, 1402232832),
    (SMALL.rstrip("]") + " O1c57]", 400, 50, 453068800),
    ("[1,64,0,1 Ct5,5,16,2,2 Mp2,2 Cl3,3,32,1,1,2,2 S1(1x0)1,3 Gbx64 Lfx32 O1c20]", 1232, 100, 210445312),
    ("[1,32,0,1 Cr3,3,16 Mp2,2 Lfys32 Lrx48 O1c30]", 400, 50, 49728000),
    ("[1,48,0,1 Cr3,3,32 Gn8 Mp2,2 S1(1x0)1,3 Lbx64 Do O1c40]", 97, 12, 44067840),
])
def test_counts_are_the_benchmarks_earlier_ones(spec, width, classes, expected):
    assert flops.forward_flops(spec, width, classes)["total"] == expected


def test_layers_report_their_output_shapes():
    layers = build_model(SMALL.rstrip("]") + " O1c57]", init=False).flops(100)
    assert [name for name, _, _ in layers] == ["C_0", "Mp_1", "C_2", "Mp_3", "S_4", "L_5", "Do_6", "L_7", "O_8"]
    shapes = dict((name, shape) for name, _, shape in layers)
    assert shapes["Mp_3"] == (64, 12, 25) and shapes["S_4"] == (768, 1, 25) and shapes["O_8"] == (57, 1, 25)
    assert all(f == 0 for name, f, _ in layers if name[:2] in ("Mp", "S_", "Do"))


def test_a_free_height_has_no_count():
    with pytest.raises(SpecError, match="height"):
        build_model("[1,0,0,1 Cr3,3,8 O1c5]", init=False).flops(100)


def test_epoch_flops_of_a_manifest(tmp_path, monkeypatch, capsys):
    # two 240x60 lines scale to 480 px at height 120, plus 16 px padding on each side
    png = b"\x89PNG\r\n\x1a\n" + b"\0\0\0\rIHDR" + (240).to_bytes(4, "big") + (60).to_bytes(4, "big")
    lines = []
    for i, text in enumerate(("ab", "bc")):
        (tmp_path / f"l{i}.png").write_bytes(png)
        (tmp_path / f"l{i}.gt.txt").write_text(text, encoding="utf-8")
        lines.append(str(tmp_path / f"l{i}.png"))
    man = tmp_path / "lines.lst"
    man.write_text("\n".join(lines) + "\n")
    # the harness's call: bench/flops.py SPEC --manifest FILE, with scriba's python
    monkeypatch.setattr(sys, "argv", ["flops.py", flops.KRAKEN_SPEC, "--manifest", str(man)])
    flops.main()
    got = json.loads(capsys.readouterr().out)
    # three characters plus the blank
    assert got == {"train_flops": 2 * 3.0 * flops.forward_flops(flops.KRAKEN_SPEC, 512, 4)["total"], "lines": 2}

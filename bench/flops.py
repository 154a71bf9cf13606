"""Count the FLOPs of a VGSL recognition network per text line (stdlib only).

Counts multiply-adds as 2 FLOPs for convolutions, LSTMs/GRUs and linear layers, which dominate; pooling,
normalisation, dropout, activations and the CTC loss are ignored (a few % at most). A training step is
counted as 3x the forward pass (backward = 2x forward: gradients w.r.t. activations and weights).

    python bench/flops.py "[1,120,0,1 Cr3,13,32 ...]" --width 1200 --classes 100
"""
from __future__ import annotations

import argparse
import math
import re
import struct
from pathlib import Path

DEFAULT_SPEC = ("[1,120,0,1 Cr3,13,32 Do0.1,2 Mp2,2 Cr3,13,32 Do0.1,2 Mp2,2 Cr3,9,64 Do0.1,2 Mp2,2 "
                "Cr3,9,64 Do0.1,2 S1(1x0)1,3 Lbx200 Do0.1,2 Lbx200 Do0.1,2 Lbx200 Do]")

_NAME = r"(?:\{[^}]*\})?"
_CONV = re.compile(r"^C(T)?(?:s|t|r|lr|l|m)" + _NAME + r"(\d+),(\d+),(\d+)(?:,(\d+),(\d+))?(?:,(\d+),(\d+))?$")
_RNN = re.compile(r"^(L|G)(f|r|b)(x|y)(s)?(c|o)?" + _NAME + r"(\d+)$")
_POOL = re.compile(r"^Mp" + _NAME + r"(\d+),(\d+)(?:,(\d+),(\d+))?$")
_RESHAPE = re.compile(r"^S" + _NAME + r"(\d+)\((\d+)x(\d+)\)(\d+),(\d+)$")
_OUT = re.compile(r"^O" + _NAME + r"(\d)(l|s|c)(a)?(\d+)$")


def split_spec(spec: str) -> tuple[tuple[int, int, int, int], list[str]]:
    s = spec.strip()
    if s.startswith("["):
        s = s[1:]
    if s.endswith("]"):
        s = s[:-1]
    blocks = s.split()
    b, h, w, c = (int(x) for x in blocks[0].split(","))
    return (b, h, w, c), blocks[1:]


def forward_flops(spec: str, width: int, n_classes: int | None = None) -> dict:
    """FLOPs of one forward pass for one line of input width `width` (after scaling and padding).

    If the spec has no output layer, a CTC output layer `O1c<n_classes>` is appended as `ketos train` does.
    Returns {"total": ..., "layers": [(block, flops, out_shape)]}.
    """
    (_, h, _, c), blocks = split_spec(spec)
    if n_classes and not any(b.startswith("O") for b in blocks[-1:]):
        blocks = blocks + [f"O1c{n_classes}"]
    C, H, W = c, h, width
    total = 0
    layers = []
    for blk in blocks:
        f = 0
        if m := _CONV.match(blk):
            kh, kw, out = int(m[2]), int(m[3]), int(m[4])
            sy, sx = int(m[5] or 1), int(m[6] or 1)
            dy, dx = int(m[7] or 1), int(m[8] or 1)
            ph, pw = dy * (kh - 1) // 2, dx * (kw - 1) // 2
            H2 = (H + 2 * ph - dy * (kh - 1) - 1) // sy + 1
            W2 = (W + 2 * pw - dx * (kw - 1) - 1) // sx + 1
            f = 2 * kh * kw * C * out * H2 * W2
            C, H, W = out, H2, W2
        elif m := _POOL.match(blk):
            ky, kx = int(m[1]), int(m[2])
            sy, sx = int(m[3] or ky), int(m[4] or kx)
            H, W = (H - ky) // sy + 1, (W - kx) // sx + 1
        elif m := _RESHAPE.match(blk):
            # only the common "fold height into channels" S1(1x0)1,3 (and its variants) is modelled
            C, H = C * H, 1
        elif m := _RNN.match(blk):
            cell, direction, axis, summarize, n = m[1], m[2], m[3], m[4], int(m[6])
            dirs = 2 if direction == "b" else 1
            gates = 4 if cell == "L" else 3
            if axis == "x":
                steps, seqs = W, H
            else:
                steps, seqs = H, W
            d = C
            f = dirs * seqs * steps * 2 * gates * n * (d + n)
            C = dirs * n
            if summarize:
                if axis == "x":
                    W = 1
                else:
                    H = 1
        elif m := _OUT.match(blk):
            n = int(m[4])
            f = 2 * C * n * H * W
            C = n
        elif blk.startswith(("Do", "Gn", "I", "A")):
            pass
        else:
            raise ValueError(f"FLOP counter: unsupported VGSL block {blk!r}")
        total += f
        layers.append((blk, f, (C, H, W)))
    return {"total": total, "layers": layers}


def scaled_width(w: int, h: int, spec_height: int, pad: int = 16) -> int:
    """Width of a line image scaled to the network's input height (aspect kept) plus left/right padding."""
    if spec_height <= 0 or h <= 0:
        return w + 2 * pad
    return max(1, int(round(w * spec_height / h))) + 2 * pad


def png_size(data: bytes) -> tuple[int, int]:
    """(width, height) from a PNG header."""
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        raise ValueError("not a PNG")
    return struct.unpack(">II", data[16:24])


def image_size(path: Path) -> tuple[int, int]:
    """(width, height) of a PNG/JPEG file without decoding it (stdlib only)."""
    with open(path, "rb") as fh:
        head = fh.read(32)
        if head[:8] == b"\x89PNG\r\n\x1a\n":
            return png_size(head)
        if head[:2] == b"\xff\xd8":
            fh.seek(2)
            while True:
                marker = fh.read(2)
                if len(marker) < 2:
                    break
                (seglen,) = struct.unpack(">H", fh.read(2))
                if marker[1] in (0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF):
                    hh, ww = struct.unpack(">xHH", fh.read(5))
                    return ww, hh
                fh.seek(seglen - 2, 1)
    raise ValueError(f"cannot read image size of {path}")


def train_flops_for_sizes(spec: str, sizes: list[tuple[int, int]], n_classes: int, pad: int = 16) -> float:
    """Training FLOPs (3x forward) for one pass over lines of the given (width, height)."""
    (_, h, _, _), _ = split_spec(spec)
    cache: dict[int, int] = {}
    total = 0
    for w, hh in sizes:
        sw = scaled_width(w, hh, h, pad)
        if sw not in cache:
            cache[sw] = forward_flops(spec, sw, n_classes)["total"]
        total += cache[sw]
    return 3.0 * total


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("spec", nargs="?", default=DEFAULT_SPEC)
    ap.add_argument("--width", type=int, default=1000, help="input width after scaling and padding")
    ap.add_argument("--classes", type=int, default=100, help="output classes incl. blank if no O layer")
    a = ap.parse_args()
    r = forward_flops(a.spec, a.width, a.classes)
    for blk, f, shape in r["layers"]:
        print(f"{blk:28s} {f / 1e6:12.1f} MFLOP  -> C,H,W={shape}")
    print(f"forward {r['total'] / 1e9:.3f} GFLOP, training step {3 * r['total'] / 1e9:.3f} GFLOP per line "
          f"(width {a.width})")
    _ = math


if __name__ == "__main__":
    main()

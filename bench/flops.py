"""The FLOPs of a VGSL recognition network per text line, counted on scriba's own network.

Multiply-adds count 2 FLOPs in convolutions, LSTMs/GRUs and linear layers, which dominate; pooling,
normalisation, dropout, activations and the CTC loss are ignored (a few % at most). A training step is
counted as 3x the forward pass (backward = 2x forward: gradients w.r.t. activations and weights). The count
comes from ``RecognitionModel.flops`` (the built layers' shapes), so this needs scriba's venv; the harness
itself imports only the standard-library parts (``KRAKEN_SPEC``, ``image_size``).

    .venv/bin/python bench/flops.py "[1,120,0,1 Cr3,13,32 ...]" --width 1200 --classes 100
    .venv/bin/python bench/flops.py SPEC --manifest lines.lst   # JSON: one epoch's training FLOPs
"""
from __future__ import annotations

import argparse
import json
import struct
from pathlib import Path

KRAKEN_SPEC = ("[1,120,0,1 Cr3,13,32 Do0.1,2 Mp2,2 Cr3,13,32 Do0.1,2 Mp2,2 Cr3,9,64 Do0.1,2 Mp2,2 "
                "Cr3,9,64 Do0.1,2 S1(1x0)1,3 Lbx200 Do0.1,2 Lbx200 Do0.1,2 Lbx200 Do]")


def _network(spec: str, n_classes: int | None):
    from scriba.vgsl import build_model

    # kraken's initialisation (seconds of QR decompositions) does not change a shape
    net = build_model(spec, init=False)
    if n_classes and net.blocks[-1].kind != "output":
        net.append_output(n_classes)  # what `ketos train` does to a spec without an output layer
    return net


def forward_flops(spec: str, width: int, n_classes: int | None = None) -> dict:
    """FLOPs of one forward pass for one line of input width `width` (after scaling and padding).

    If the spec has no output layer, a CTC output layer `O1c<n_classes>` is appended as `ketos train` does.
    Returns {"total": ..., "layers": [(layer name, flops, (C, H, W) out)]}.
    """
    layers = _network(spec, n_classes).flops(width)
    return {"total": sum(f for _, f, _ in layers), "layers": layers}


def spec_height(spec: str) -> int:
    return int(spec.strip().lstrip("[").split()[0].split(",")[1])


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
    h = spec_height(spec)
    net = _network(spec, n_classes)
    cache: dict[int, int] = {}
    total = 0
    for w, hh in sizes:
        sw = scaled_width(w, hh, h, pad)
        if sw not in cache:
            cache[sw] = sum(f for _, f, _ in net.flops(sw))
        total += cache[sw]
    return 3.0 * total


def manifest_train_flops(spec: str, manifest: Path) -> tuple[float, int]:
    """Training FLOPs of one epoch over a path-format manifest (line sizes from the image headers; the classes
    are the characters of the lines' .gt.txt files plus the blank)."""
    paths = manifest.read_text().split()
    alphabet: set[str] = set()
    for p in paths:
        try:
            alphabet |= set(Path(p.split(".")[0] + ".gt.txt").read_text(encoding="utf-8").strip())
        except OSError:
            pass
    sizes = [image_size(Path(p)) for p in paths]
    return train_flops_for_sizes(spec, sizes, len(alphabet) + 1), len(sizes)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("spec", nargs="?", default=KRAKEN_SPEC)
    ap.add_argument("--width", type=int, default=1000, help="input width after scaling and padding")
    ap.add_argument("--classes", type=int, default=100, help="output classes incl. blank if no O layer")
    ap.add_argument("--manifest", type=Path, default=None,
                    help="print the training FLOPs of one epoch over these line images as JSON")
    a = ap.parse_args()
    if a.manifest is not None:
        fl, n = manifest_train_flops(a.spec, a.manifest)
        print(json.dumps({"train_flops": fl, "lines": n}))
        return
    r = forward_flops(a.spec, a.width, a.classes)
    for name, f, shape in r["layers"]:
        print(f"{name:28s} {f / 1e6:12.1f} MFLOP  -> C,H,W={shape}")
    print(f"forward {r['total'] / 1e9:.3f} GFLOP, training step {3 * r['total'] / 1e9:.3f} GFLOP per line "
          f"(width {a.width})")


if __name__ == "__main__":
    main()

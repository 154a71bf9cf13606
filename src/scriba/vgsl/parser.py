"""VGSL specification strings to a tree of block descriptions (kraken's grammar and naming).

A spec is ``[B,H,W,C block block ...]``. Unnamed blocks get kraken's automatic names ``<type>_<index>``,
the index counting every block in the order it is parsed; :func:`named_spec` writes the spec back with the
names inserted after the block's leading letters (``Cr{C_0}3,3,32``), the form stored in weights files.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from scriba.errors import SpecError

_NAME = r"(?:\{(?P<name>[^{}]+)\})?"
_F = r"\d+(?:\.\d*)?|\.\d+"

PATTERNS: list[tuple[str, re.Pattern[str]]] = [
    ("addition", re.compile(rf"^(?P<type>A){_NAME}(?P<dim>\d+),(?P<chunk>\d+)$")),
    ("identity", re.compile(rf"^(?P<type>I){_NAME}$")),
    (
        "rnn",
        re.compile(rf"^(?P<type>L|G)(?P<dir>f|r|b)(?P<dim>x|y)(?P<sum>s)?(?P<legacy>c|o)?{_NAME}(?P<out>\d+)$"),
    ),
    ("dropout", re.compile(rf"^(?P<type>Do){_NAME}(?P<p>{_F})?(?:,(?P<dim>\d+))?$")),
    ("maxpool", re.compile(rf"^(?P<type>Mp){_NAME}(?P<ky>\d+),(?P<kx>\d+)(?:,(?P<sy>\d+),(?P<sx>\d+))?$")),
    (
        "conv",
        re.compile(
            rf"^(?P<type>C)(?P<transposed>T)?(?P<nl>lr|s|t|r|l|m){_NAME}(?P<kh>\d+),(?P<kw>\d+),(?P<out>\d+)"
            r"(?:,(?P<sy>\d+),(?P<sx>\d+))?(?:,(?P<dy>\d+),(?P<dx>\d+))?$"
        ),
    ),
    ("output", re.compile(rf"^(?P<type>O){_NAME}(?P<dim>[012])(?P<kind>l|s|c)(?P<aug>a)?(?P<out>\d+)$")),
    (
        "reshape",
        re.compile(rf"^(?P<type>S){_NAME}(?P<d>\d)\((?P<a>\d+)x(?P<b>\d+)\)(?P<e>\d),(?P<f>\d)$"),
    ),
    ("groupnorm", re.compile(rf"^(?P<type>Gn){_NAME}(?P<groups>\d+)$")),
]

# the name prefix kraken uses for each block kind
_PREFIX = {
    "addition": "A",
    "identity": "I",
    "dropout": "Do",
    "maxpool": "Mp",
    "conv": "C",
    "output": "O",
    "reshape": "S",
    "groupnorm": "Gn",
}


@dataclass
class Block:
    """One parsed block: ``kind``, its ``name``, its numeric ``params`` and, for series/parallel, ``children``."""

    kind: str
    name: str
    params: dict[str, Any] = field(default_factory=dict)
    children: list[Block] = field(default_factory=list)
    text: str = ""
    source: str = ""

    def named(self) -> str:
        if self.kind == "series":
            return "[" + " ".join(c.named() for c in self.children) + "]"
        if self.kind == "parallel":
            return "(" + " ".join(c.named() for c in self.children) + ")"
        return self.text


def split_blocks(body: str, spec: str) -> list[str]:
    """Splits on single spaces outside brackets and parentheses."""
    blocks: list[str] = []
    depth = 0
    cur = ""
    for ch in body:
        if ch in "[(":
            depth += 1
        elif ch in "])":
            depth -= 1
            if depth < 0:
                raise SpecError(f"unbalanced brackets in VGSL spec {spec!r}")
        if ch == " " and depth == 0:
            if cur == "":
                raise SpecError(f"empty block (double space) in VGSL spec {spec!r}")
            blocks.append(cur)
            cur = ""
        else:
            cur += ch
    if depth != 0:
        raise SpecError(f"unbalanced brackets in VGSL spec {spec!r}")
    if cur:
        blocks.append(cur)
    return blocks


class _Counter:
    def __init__(self) -> None:
        self.idx = 0

    def next(self) -> int:
        i = self.idx
        self.idx += 1
        return i


def _insert_name(text: str, m: re.Match[str], name: str) -> str:
    if m.group("name") is not None:
        return text
    # kraken puts the name right after the block's leading letters (``Lbx{L_3}200``, ``O{O_5}1c13``)
    pos = len(re.match(r"[A-Za-z]*", text).group(0))  # type: ignore[union-attr]
    return text[:pos] + "{" + name + "}" + text[pos:]


def _parse_block(text: str, counter: _Counter) -> Block:
    if text.startswith("[") or (text.startswith("(") and text.endswith(")")):
        if not text.endswith("]" if text.startswith("[") else ")"):
            raise SpecError(f"invalid VGSL block {text!r}: unbalanced brackets")
        kind = "series" if text.startswith("[") else "parallel"
        inner = split_blocks(text[1:-1], text)
        if not inner:
            raise SpecError(f"invalid VGSL block {text!r}: empty {kind} block")
        children = [_parse_block(t, counter) for t in inner]
        return Block(kind, " ".join(c.name for c in children), {}, children, text, text)
    for kind, pat in PATTERNS:
        m = pat.match(text)
        if m is None:
            continue
        idx = counter.next()
        prefix = m.group("type") if kind == "rnn" else _PREFIX[kind]
        name = m.group("name") or f"{prefix}_{idx}"
        params = {k: v for k, v in m.groupdict().items() if k not in ("name",)}
        return Block(kind, name, params, [], _insert_name(text, m, name), text)
    if text.startswith("W"):
        raise SpecError(f"invalid VGSL block {text!r}: wav2vec2 blocks are not supported in recognition models")
    raise SpecError(f"invalid VGSL block {text!r}")


def parse_spec(spec: str) -> tuple[tuple[int, int, int, int], list[Block]]:
    """Parses a spec into its input ``(B, C, H, W)`` and its blocks (names assigned)."""
    spec = spec.strip()
    if not (spec.startswith("[") and spec.endswith("]")):
        raise SpecError(f"VGSL spec must be enclosed in [ ] (non-sequential models not supported): {spec!r}")
    blocks = split_blocks(spec[1:-1], spec)
    if not blocks:
        raise SpecError(f"empty VGSL spec {spec!r}")
    m = re.fullmatch(r"(\d+),(\d+),(\d+),(\d+)", blocks[0])
    if m is None:
        raise SpecError(f"invalid VGSL input block {blocks[0]!r}: expected B,H,W,C")
    b, h, w, c = (int(x) for x in m.groups())
    counter = _Counter()
    parsed = [_parse_block(t, counter) for t in blocks[1:]]
    return (b, c, h, w), parsed


def named_spec(input_shape: tuple[int, int, int, int], blocks: list[Block]) -> str:
    b, c, h, w = input_shape
    return "[" + " ".join([f"{b},{h},{w},{c}", *(blk.named() for blk in blocks)]) + "]"

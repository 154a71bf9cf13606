"""Hostile and malformed inputs shared by the bad-input tests and the fuzzers: files a user might have, built
small and on the spot."""

from __future__ import annotations

import io
import json
import re
import struct
import zlib
from pathlib import Path

# An exception's class name in a user-facing message means a failure nobody described in words.
EXCEPTION_NAME = re.compile(r"\b[A-Z]\w*(?:Error|Exception)\b|Traceback")


def assert_clean(text: str) -> None:
    """No traceback and no exception type name in what the user sees."""
    found = EXCEPTION_NAME.search(text)
    assert found is None, f"{found.group(0)!r} in the output:\n{text}"
    assert "<_io." not in text, text


def png_bomb(path: Path, width: int = 40000, height: int = 40000) -> Path:
    """A valid PNG header announcing ``width`` x ``height`` pixels with no pixel data (a few dozen bytes)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")
    )
    return path


def png_bytes(width: int = 40, height: int = 16) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("L", (width, height), 255).save(buf, format="png")
    return buf.getvalue()


ALTO_LINE = (
    '<TextLine ID="{id}" HPOS="{hpos}" VPOS="{vpos}" WIDTH="300" HEIGHT="45" BASELINE="{baseline}">'
    '<Shape><Polygon POINTS="{points}"/></Shape><String CONTENT="{text}"/></TextLine>'
)
ALTO_PAGE = """<?xml version="1.0" encoding="UTF-8"?>
<alto xmlns="http://www.loc.gov/standards/alto/ns-v4#"><Description><MeasurementUnit>pixel</MeasurementUnit>
<sourceImageInformation><fileName>page.png</fileName></sourceImageInformation></Description>
<Layout><Page ID="p" WIDTH="600" HEIGHT="200"><PrintSpace><TextBlock ID="b">{lines}</TextBlock></PrintSpace>
</Page></Layout></alto>"""


def good_alto_line(n: int) -> dict[str, str]:
    """Line ``n`` (0 or 1) of the page :func:`alto_page` draws: text inside its polygon."""
    y = 5 + 100 * n
    return {
        "id": f"good{n}",
        "hpos": "10",
        "vpos": str(y),
        "baseline": f"10 {y + 35} 310 {y + 35}",
        "points": f"10 {y} 310 {y} 310 {y + 45} 10 {y + 45}",
        "text": ["abc dab", "bead cafe"][n],
    }


def alto_page(folder: Path, name: str, bad: dict[str, str] | None = None) -> Path:
    """An ALTO page with two good lines and, between them, ``bad`` (a line's attributes); its image beside it."""
    from PIL import Image, ImageDraw, ImageFont

    image = folder / "page.png"
    if not image.exists():
        im = Image.new("L", (600, 200), 255)
        draw = ImageDraw.Draw(im)
        font = ImageFont.load_default(size=30)
        draw.text((20, 10), "abc dab", font=font, fill=0)
        draw.text((20, 110), "bead cafe", font=font, fill=0)
        im.save(image)
    lines = [good_alto_line(0)] + ([{**good_alto_line(0), "id": "bad", "text": "bad", **bad}] if bad else [])
    lines.append(good_alto_line(1))
    xml = folder / name
    xml.write_text(ALTO_PAGE.format(lines="".join(ALTO_LINE.format(**line) for line in lines)), encoding="utf-8")
    return xml


def arrow_file(path: Path, lines, metadata, **columns) -> Path:
    """An Arrow IPC file with a ``lines`` column (any Arrow array), extra columns and a ``lines`` metadata value."""
    import pyarrow as pa

    table = pa.table({"lines": lines, **columns})
    table = table.replace_schema_metadata({"lines": metadata if isinstance(metadata, str) else json.dumps(metadata)})
    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
        writer.write_table(table)
    return path


DATASET_META = {"type": "kraken_recognition_baseline", "alphabet": {}, "im_mode": "L"}

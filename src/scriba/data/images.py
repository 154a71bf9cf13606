"""Image files as every reader opens them: one pixel limit, and one-line reasons for files that do not open.

Pillow refuses images over twice ``Image.MAX_IMAGE_PIXELS`` (decompression bombs). Its default limit is set
here once, for every module that opens images, so that a large page gets the same answer in ``ketos
compile``, ``train`` and ``test`` whichever module happened to open it first.
"""

from __future__ import annotations

import io
import re

from PIL import Image, UnidentifiedImageError

# 20000x20000 pixels warns, twice that is refused (Pillow's rule); large scanned folios stay below.
Image.MAX_IMAGE_PIXELS = 20000**2

# Pillow names in-memory files by their repr, which helps nobody (the caller names the file).
_REPR = re.compile(r"\s*<_io\.\w+ object at 0x[0-9a-fA-F]+>")


def image_error(exc: BaseException) -> str:
    """Why an image could not be opened, in words and without the file's name (the caller gives it once)."""
    if isinstance(exc, Image.DecompressionBombError):
        pixels = re.search(r"\((\d+) pixels\)", str(exc))
        size = f"{int(pixels.group(1)):,} pixels" if pixels else "too many pixels"
        return f"image of {size} exceeds the limit of {2 * (Image.MAX_IMAGE_PIXELS or 0):,} (decompression bomb guard)"
    if isinstance(exc, UnidentifiedImageError):
        return "not an image file Pillow can read (unknown format or corrupt header)"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror.lower() if exc.strerror[:1].isupper() else exc.strerror
    text = _REPR.sub("", str(exc)).strip()
    return text or "image cannot be decoded"


def header_size(source: str | bytes) -> tuple[int, int] | None:
    """Width and height read from an image file's header (no pixels decoded); None when it does not open.

    Estimates only: whoever decodes the image later reports why it could not be read.
    """
    try:
        with Image.open(io.BytesIO(source) if isinstance(source, bytes) else source) as im:
            return im.size
    except Exception:  # noqa: BLE001 - any unreadable file; see above
        return None

"""ALTO (v2-v4) and PageXML (2013, 2019) pages to :class:`LineRecord` lists.

Parsing is namespace-agnostic (``{*}`` wildcards), so every schema version and the http/https variants of
the PAGE namespace read the same. The image is not opened here unless ALTO coordinates are not in pixels
(then its size is needed to convert them) or the page gives no usable dimensions.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable

from lxml import etree

from scriba.data.records import LineRecord, SkippedItem, polygon_area
from scriba.errors import InputError, UsageError

FILETYPES = ("xml", "alto", "page")
LINETYPES = ("baselines", "bbox")
MIN_BASELINE_LENGTH = 5.0
# Pages are at most Pillow's 20000x20000 pixels (see scriba.data.extract); coordinates a thousand times
# beyond that are garbage, and left unchecked they overflow integer conversions and size estimates.
MAX_COORDINATE = 1e7
# pixels per unit of an mm10/inch1200 page; far beyond any scan's resolution
MAX_SCALE = 1e4
MIN_POLYGON_AREA = 1.0

# fmt: off
# PageXML names languages in English (its LanguageSimpleType); lines carry ISO 639-3 codes like kraken's.
_LANGUAGE_NAMES = {
    "arabic": "ara", "armenian": "hye", "bengali": "ben", "bulgarian": "bul", "catalan": "cat", "chinese": "zho",
    "coptic": "cop", "croatian": "hrv", "czech": "ces", "danish": "dan", "dutch": "nld", "english": "eng",
    "estonian": "est", "finnish": "fin", "french": "fra", "georgian": "kat", "german": "deu", "greek": "ell",
    "hebrew": "heb", "hindi": "hin", "hungarian": "hun", "icelandic": "isl", "irish": "gle", "italian": "ita",
    "japanese": "jpn", "korean": "kor", "latin": "lat", "latvian": "lav", "lithuanian": "lit", "norwegian": "nor",
    "persian": "fas", "polish": "pol", "portuguese": "por", "romanian": "ron", "russian": "rus", "sanskrit": "san",
    "serbian": "srp", "slovak": "slk", "slovenian": "slv", "spanish": "spa", "swedish": "swe", "syriac": "syr",
    "turkish": "tur", "ukrainian": "ukr", "urdu": "urd", "welsh": "cym", "yiddish": "yid",
}
# ISO 639-1 two-letter codes (xml:lang style values in ALTO LANG) to ISO 639-3.
_LANGUAGE_CODES = {
    "ar": "ara", "ca": "cat", "cs": "ces", "da": "dan", "de": "deu", "el": "ell", "en": "eng", "es": "spa",
    "et": "est", "fa": "fas", "fi": "fin", "fr": "fra", "he": "heb", "hu": "hun", "it": "ita", "ja": "jpn",
    "la": "lat", "lt": "lit", "lv": "lav", "nl": "nld", "no": "nor", "pl": "pol", "pt": "por", "ro": "ron",
    "ru": "rus", "sk": "slk", "sl": "slv", "sv": "swe", "syr": "syr", "tr": "tur", "uk": "ukr", "zh": "zho",
}
# fmt: on
_PAGE_DIRECTIONS = {"left-to-right": "ltr", "right-to-left": "rtl", "top-to-bottom": "ttb", "bottom-to-top": "btt"}
_CUSTOM_LANGUAGE = re.compile(r"language\s*\{[^}]*?type\s*:\s*([^;}\s]+)")
_CUSTOM_STRUCTURE = re.compile(r"structure\s*\{[^}]*?type\s*:\s*([^;}]+)")


def _local(el: etree._Element) -> str:
    return etree.QName(el).localname


_Info = tuple[list[str], str | None, dict[str, str]]


def _inherited_info(
    line: etree._Element, own_info: Callable[[etree._Element], _Info], applies: Callable[[str], bool]
) -> _Info:
    """A line's languages, direction and tags; values of enclosing blocks/regions and the page fill the gaps.

    The nearest enclosing element wins; nothing above the page counts.
    """
    langs, direction, tags = own_info(line)
    for anc in line.iterancestors():
        name = _local(anc)
        if not applies(name):
            continue
        a_langs, a_dir, a_tags = own_info(anc)
        langs = langs or a_langs
        direction = direction or a_dir
        for k, v in a_tags.items():
            tags.setdefault(k, v)
        if name == "Page":
            break
    return langs, direction, tags


def _language(value: str) -> str | None:
    value = value.strip()
    if not value:
        return None
    low = value.lower().split("-")[0].split("_")[0]
    if low in _LANGUAGE_NAMES:
        return _LANGUAGE_NAMES[low]
    if len(low) == 2:
        return _LANGUAGE_CODES.get(low)
    if len(low) == 3 and low.isalpha():
        return low
    return None


def _add_languages(out: list[str], values: list[str]) -> None:
    for v in values:
        code = _language(v)
        if code and code not in out:
            out.append(code)


class _BadLine(Exception):
    """A line whose own coordinates are unusable: it is skipped (and counted), the rest of the page is kept."""


def _number(value: str) -> float:
    """A coordinate: finite and within :data:`MAX_COORDINATE` (``ValueError`` otherwise)."""
    v = float(value)
    if not math.isfinite(v) or abs(v) > MAX_COORDINATE:
        raise ValueError(value)
    return v


def _points(value: str | None) -> list[tuple[float, float]]:
    """``x,y x,y`` (PAGE) or ``x y x y`` (ALTO) to a list of points; :class:`_BadLine` when unusable."""
    if value is None:
        return []
    shown = value[:60] + ("..." if len(value) > 60 else "")
    try:
        nums = [_number(v) for v in value.replace(",", " ").split()]
    except ValueError:
        raise _BadLine(
            f"coordinates are not finite numbers within +-{MAX_COORDINATE:.0e}: {shown!r}"
        ) from None
    if len(nums) % 2:
        raise _BadLine(f"odd number of coordinates: {shown!r}")
    return list(zip(nums[::2], nums[1::2]))


def _bbox(points: list[tuple[float, float]]) -> tuple[int, int, int, int]:
    xs = [p[0] for p in points]
    ys = [p[1] for p in points]
    return int(min(xs)), int(min(ys)), int(math.ceil(max(xs))), int(math.ceil(max(ys)))


def _length(points: list[tuple[float, float]]) -> float:
    return sum(math.dist(a, b) for a, b in zip(points, points[1:]))


def _read_tree(path: str) -> etree._Element:
    try:
        parser = etree.XMLParser(resolve_entities=False, no_network=True, huge_tree=True)
        return etree.parse(path, parser).getroot()
    except etree.XMLSyntaxError as e:
        # lxml appends "(file, line N)" to its message; the file is named once, by the InputError
        msg = re.sub(r", line \d+, column \d+$", "", e.msg or "").strip() or "syntax error"
        raise InputError(f"XML does not parse: {msg}", path=path, element=f"line {e.lineno}") from None
    except OSError as e:
        reason = str(e).rsplit(": ", 1)[-1] if ": " in str(e) else "cannot be read"
        raise InputError(f"cannot be read: {reason}", path=path) from None


def detect_filetype(root: etree._Element, path: str) -> str:
    name = _local(root).lower()
    if name == "alto":
        return "alto"
    if name == "pcgts":
        return "page"
    raise InputError(f"neither ALTO nor PageXML (root element <{_local(root)}>)", path=path)


def _image_path(name: str | None, path: str) -> str:
    if name is None or not name.strip():
        raise InputError("no page image is named", path=path)
    name = name.strip()
    if name.startswith("file://"):
        name = name[len("file://") :]
    if re.match(r"^[a-z][a-z0-9+.-]*://", name, re.I):
        raise InputError(f"page image {name!r} is a URL; only local files are supported", path=path)
    return os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(path)), name))


def _image_size(image: str, path: str) -> tuple[tuple[int, int], tuple[float, float] | None]:
    from PIL import Image

    try:
        with Image.open(image) as im:
            dpi = im.info.get("dpi")
            size = im.size
            # Orientation tags swap the sides of the page the coordinates refer to.
            if im.getexif().get(0x0112, 1) in (5, 6, 7, 8):
                size = (size[1], size[0])
            return size, (float(dpi[0]), float(dpi[1])) if dpi else None
    except Exception as e:  # noqa: BLE001 - decoders of damaged files raise all kinds of errors
        from scriba.data.images import image_error

        raise InputError(f"page image {image} cannot be read: {image_error(e)}", path=path) from None


def _dimension(value: str | None, what: str, path: str) -> float:
    if value is None:
        return 0.0
    try:
        v = float(value)
    except ValueError:
        raise InputError(f"invalid page {what} {value!r}", path=path) from None
    if not math.isfinite(v) or v < 0:
        raise InputError(f"invalid page {what} {value!r}", path=path)
    return v


def parse_page(
    path: str | os.PathLike,
    filetype: str = "xml",
    linetype: str = "baselines",
    on_skip: Callable[[SkippedItem], None] | None = None,
) -> tuple[str, list[LineRecord]]:
    """Parse one ALTO/PageXML file into ``(image_path, lines)`` in document order.

    Raises :class:`InputError` for a file that cannot be used at all (does not parse, names no image, bad
    dimensions or measurement unit). Single unusable lines (no baseline, baseline shorter than 5px, no
    coordinates, coordinates that are not finite numbers, a polygon without area) go to ``on_skip`` and are
    left out; the rest of the page is kept, and so are lines with empty text.
    """
    path = os.fspath(path)
    if filetype not in FILETYPES:
        raise UsageError(f"invalid XML format {filetype!r} (expected one of {FILETYPES})")
    if linetype not in LINETYPES:
        raise UsageError(f"invalid line type {linetype!r} (expected one of {LINETYPES})")
    root = _read_tree(path)
    kind = detect_filetype(root, path)
    if filetype != "xml" and kind != filetype:
        raise InputError(f"is {kind.upper() if kind == 'alto' else 'PageXML'}, not {filetype}", path=path)
    if kind == "alto":
        image, candidates = _parse_alto(root, path, linetype)
    else:
        image, candidates = _parse_page_xml(root, path, linetype)
    lines: list[LineRecord] = []
    for rec in candidates:
        if isinstance(rec, SkippedItem):
            if on_skip is not None:
                on_skip(rec)
            continue
        problem = _check_line(rec, linetype)
        if problem is None:
            lines.append(rec)
        elif on_skip is not None:
            on_skip(SkippedItem(path, rec.id, problem))
    return image, lines


def _check_line(rec: LineRecord, linetype: str) -> str | None:
    if linetype == "bbox":
        if rec.bbox is None:
            return "no coordinates for a bounding box"
        x0, y0, x1, y1 = rec.bbox
        return "empty bounding box" if x1 <= x0 or y1 <= y0 else None
    if not rec.baseline:
        return "no baseline"
    if len(rec.baseline) < 2:
        return "baseline has fewer than 2 points"
    if _length(rec.baseline) < MIN_BASELINE_LENGTH:
        return "baseline shorter than 5px"
    if not rec.boundary or len(rec.boundary) < 3:
        return "no boundary polygon"
    if polygon_area(rec.boundary) < MIN_POLYGON_AREA:
        return "boundary polygon has no area"
    return None


def _alto_scale(root: etree._Element, page_el: etree._Element | None, image: str, path: str) -> tuple[float, float]:
    unit_el = root.find("./{*}Description/{*}MeasurementUnit")
    unit = (unit_el.text or "").strip().lower() if unit_el is not None else "pixel"
    if unit in ("pixel", ""):
        return 1.0, 1.0
    if unit not in ("mm10", "inch1200"):
        raise InputError(f"invalid MeasurementUnit {unit!r} (expected pixel, mm10 or inch1200)", path=path)
    (w, h), dpi = _image_size(image, path)
    pw = _dimension(page_el.get("WIDTH"), "WIDTH", path) if page_el is not None else 0.0
    ph = _dimension(page_el.get("HEIGHT"), "HEIGHT", path) if page_el is not None else 0.0
    # The page element's size is in the same unit as everything else, which gives the exact scale; the
    # image resolution is only the fallback.
    if pw > 0 and ph > 0:
        scale = w / pw, h / ph
    elif dpi is None:
        raise InputError(f"coordinates in {unit} but neither page size nor image resolution is known", path=path)
    else:
        per_inch = 254.0 if unit == "mm10" else 1200.0
        scale = dpi[0] / per_inch, dpi[1] / per_inch
    if not all(math.isfinite(v) and 0 < v < MAX_SCALE for v in scale):
        raise InputError(f"page size in {unit} does not fit its {w}x{h} pixel image", path=path)
    return scale


_Candidates = list[LineRecord | SkippedItem]


def _parse_alto(root: etree._Element, path: str, linetype: str) -> tuple[str, _Candidates]:
    image = _image_path(root.findtext("./{*}Description/{*}sourceImageInformation/{*}fileName"), path)
    pages = root.findall("./{*}Layout/{*}Page")
    for page_el in pages:
        pw = _dimension(page_el.get("WIDTH"), "WIDTH", path)
        ph = _dimension(page_el.get("HEIGHT"), "HEIGHT", path)
        if (pw == 0 or ph == 0) and not os.path.isfile(image):
            raise InputError(f"page has no dimensions and its image {image} is missing", path=path)
    sx, sy = _alto_scale(root, pages[0] if pages else None, image, path)

    tags: dict[str, tuple[str, str]] = {}
    for tag in root.iterfind("./{*}Tags/*"):
        if tag.get("ID"):
            tags[tag.get("ID")] = ((tag.get("TYPE") or "").lower(), tag.get("LABEL") or "")

    def own_info(el: etree._Element) -> tuple[list[str], str | None, dict[str, str]]:
        langs: list[str] = []
        el_tags: dict[str, str] = {}
        for ref in (el.get("TAGREFS") or "").split():
            ttype, label = tags.get(ref, ("", ""))
            if ttype == "language":
                _add_languages(langs, [label])
            elif ttype and label:
                el_tags[ttype] = label
        _add_languages(langs, [el.get("LANG") or ""])
        return langs, (el.get("BASEDIRECTION") or "").lower() or None, el_tags

    records: _Candidates = []
    for idx, line in enumerate(root.iterfind("./{*}Layout//{*}TextLine")):
        line_id = line.get("ID") or f"line_{idx}"
        langs, direction, line_tags = _inherited_info(
            line, own_info, lambda name: name in ("TextBlock", "Page", "ComposedBlock")
        )
        text = "".join(
            # kraken reads a String without CONTENT as a space, like SP; its lines are then whitespace, not empty.
            (el.get("CONTENT") or " ") if _local(el) == "String" else " "
            for el in line.iter("{*}String", "{*}SP")
        )
        try:
            baseline, boundary, bbox = _alto_geometry(line, sx, sy)
        except _BadLine as e:
            records.append(SkippedItem(path, line_id, str(e)))
            continue
        records.append(
            _record(line_id, path, text, image, linetype, baseline, boundary, bbox, langs, direction, line_tags)
        )
    return image, records


def _alto_geometry(line: etree._Element, sx: float, sy: float) -> tuple[list, list, tuple[int, int, int, int] | None]:
    """A TextLine's baseline, boundary and bounding box, in pixels."""

    def scaled(pts: list[tuple[float, float]]) -> list[tuple[float, float]]:
        return pts if sx == sy == 1.0 else [(x * sx, y * sy) for x, y in pts]

    poly_el = line.find("./{*}Shape/{*}Polygon")
    boundary = scaled(_points(poly_el.get("POINTS") if poly_el is not None else None))
    bbox = None
    try:
        hpos, vpos = _number(line.get("HPOS")), _number(line.get("VPOS"))
        width, height = _number(line.get("WIDTH")), _number(line.get("HEIGHT"))
        bbox = (
            int(hpos * sx),
            int(vpos * sy),
            int(math.ceil((hpos + width) * sx)),
            int(math.ceil((vpos + height) * sy)),
        )
    except (TypeError, ValueError):
        # missing or unusable box attributes: the polygon, when there is one, gives the box
        if boundary:
            bbox = _bbox(boundary)
    if not boundary and bbox is not None:
        x0, y0, x1, y1 = bbox
        boundary = [(x0, y0), (x1, y0), (x1, y1), (x0, y1)]
    baseline: list[tuple[float, float]] = []
    bl_value = line.get("BASELINE")
    if bl_value is not None:
        nums = bl_value.replace(",", " ").split()
        if len(nums) == 1 and bbox is not None:
            # ALTO < 4.2: BASELINE is the baseline's vertical position only.
            y = _points(f"0 {nums[0]}")[0][1] * sy
            baseline = [(bbox[0], y), (bbox[2], y)]
        else:
            baseline = scaled(_points(bl_value))
    return baseline, boundary, bbox


def _parse_page_xml(root: etree._Element, path: str, linetype: str) -> tuple[str, _Candidates]:
    page_el = root.find("./{*}Page")
    if page_el is None:
        raise InputError("PageXML without a <Page> element", path=path)
    image = _image_path(page_el.get("imageFilename"), path)
    w = _dimension(page_el.get("imageWidth"), "imageWidth", path)
    h = _dimension(page_el.get("imageHeight"), "imageHeight", path)
    if (w == 0 or h == 0) and not os.path.isfile(image):
        raise InputError(f"page has no dimensions and its image {image} is missing", path=path)

    def own_info(el: etree._Element) -> tuple[list[str], str | None, dict[str, str]]:
        langs: list[str] = []
        custom = el.get("custom") or ""
        _add_languages(langs, [el.get("primaryLanguage") or "", el.get("secondaryLanguage") or ""])
        _add_languages(langs, _CUSTOM_LANGUAGE.findall(custom))
        el_tags = {}
        structure = _CUSTOM_STRUCTURE.search(custom)
        if structure:
            el_tags["type"] = structure.group(1).strip().replace("\\u0020", " ")
        return langs, _PAGE_DIRECTIONS.get((el.get("readingDirection") or "").lower()), el_tags

    records: _Candidates = []
    for idx, line in enumerate(page_el.iter("{*}TextLine")):
        line_id = line.get("id") or f"line_{idx}"
        langs, direction, line_tags = _inherited_info(
            line, own_info, lambda name: name.endswith("Region") or name == "Page"
        )
        equiv = line.find("./{*}TextEquiv")
        scope = equiv if equiv is not None else line
        text = "".join(u.text or "" for u in scope.iter("{*}Unicode"))
        coords = line.find("./{*}Coords")
        bl_el = line.find("./{*}Baseline")
        try:
            boundary = _points(coords.get("points") if coords is not None else None)
            baseline = _points(bl_el.get("points") if bl_el is not None else None)
        except _BadLine as e:
            records.append(SkippedItem(path, line_id, str(e)))
            continue
        bbox = _bbox(boundary) if boundary else None
        records.append(
            _record(line_id, path, text, image, linetype, baseline, boundary, bbox, langs, direction, line_tags)
        )
    return image, records


def _record(
    line_id: str,
    path: str,
    text: str,
    image: str,
    linetype: str,
    baseline: list[tuple[float, float]],
    boundary: list[tuple[float, float]],
    bbox: tuple[int, int, int, int] | None,
    langs: list[str],
    direction: str | None,
    tags: dict[str, str],
) -> LineRecord:
    split = tags.get("split")
    if split is not None:
        split = {"val": "validation", "eval": "validation"}.get(split.lower(), split.lower())
    return LineRecord(
        id=line_id,
        source=path,
        text=text,
        image=image,
        kind=linetype,
        baseline=baseline or None,
        boundary=boundary or None,
        bbox=bbox,
        language=langs or None,
        base_dir={"ltr": "L", "rtl": "R"}.get(direction or ""),
        vertical=direction in ("ttb", "btt"),
        split=split if split in ("train", "validation", "test") else None,
        tags=tags,
    )


def image_of(path: str | os.PathLike) -> str:
    """The page image an XML file names (resolved against the XML file's folder)."""
    path = os.fspath(path)
    root = _read_tree(path)
    if detect_filetype(root, path) == "alto":
        return _image_path(root.findtext("./{*}Description/{*}sourceImageInformation/{*}fileName"), path)
    page_el = root.find("./{*}Page")
    return _image_path(page_el.get("imageFilename") if page_el is not None else None, path)


__all__ = ["parse_page", "detect_filetype", "image_of", "FILETYPES", "LINETYPES"]

"""Property-based tests of every reader of user files (issue 14): whatever the input, the reader returns a valid
result or raises a :class:`~scriba.errors.ScribaError` with a message, never another exception.

The example budget is fixed and the examples derandomized, so CI runs the same few hundred inputs every time
in well under 30 seconds. ``SCRIBA_FUZZ_EXAMPLES=N`` multiplies the budgets for a longer local search.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import tempfile
from pathlib import Path
from unittest import mock
from xml.sax.saxutils import escape, quoteattr

import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from bad_input import DATASET_META, arrow_file, assert_clean, png_bytes  # noqa: E402
from scriba.errors import ScribaError  # noqa: E402

SCALE = max(1, int(os.environ.get("SCRIBA_FUZZ_EXAMPLES", "1")))


def budget(n: int):
    return settings(
        max_examples=n * SCALE,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )


@pytest.fixture(scope="module")
def folder() -> Path:
    with tempfile.TemporaryDirectory(prefix="scriba-fuzz-") as d:
        from PIL import Image

        Image.new("L", (600, 200), 255).save(Path(d) / "page.png")
        yield Path(d)


def _write(folder: Path, name: str, data: str | bytes) -> Path:
    path = folder / name
    path.write_bytes(data.encode("utf-8") if isinstance(data, str) else data)
    return path


# -- ALTO and PageXML -------------------------------------------------------------------------------------------

_text = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=12)
# what XML can carry at all (no control characters, no U+FFFE/U+FFFF): the readers see past the parser
_xml_text = st.text(alphabet=st.characters(blacklist_categories=("Cs", "Cc"), max_codepoint=0xFFFD), max_size=12)
_special = st.sampled_from(["inf", "-inf", "nan", "1e400", "-1e400", "1e308", "10000001", "", "x"])
_number = st.one_of(
    st.sampled_from(["inf", "-inf", "nan", "1e400", "-1e400", "1e308", "1e7", "10000001", "0", "-0", "-5", "", " "]),
    st.integers(-1000, 1000).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    _xml_text,
)
# mostly plausible values, so that the generated pages get past the page-level checks to their lines
_coordinate = st.one_of(st.integers(0, 700).map(str), _number)
_coords = st.lists(st.integers(-50, 700), max_size=12)
_points_alto = st.one_of(_coords.map(lambda v: " ".join(map(str, v))), st.lists(_number, max_size=8).map(" ".join))
_points_page = st.one_of(
    _coords.map(lambda v: " ".join(f"{a},{b}" for a, b in zip(v[::2], v[1::2]))),
    st.lists(_number, max_size=8).map(",".join),
)
_maybe = lambda s: st.one_of(st.none(), s)  # noqa: E731


def _attrs(**values: str | None) -> str:
    return "".join(f" {k}={quoteattr(v)}" for k, v in values.items() if v is not None)


@st.composite
def alto_pages(draw, page_level: bool) -> str:
    """ALTO pages; ``page_level`` fuzzes the page's unit, size and image, else only its lines (on a good page)."""
    unit, page, image = "pixel", ' WIDTH="600" HEIGHT="200"', "page.png"
    if page_level:
        unit = draw(st.sampled_from(["pixel", "mm10", "inch1200", "", "furlong"]))
        page = _attrs(WIDTH=draw(_maybe(_coordinate)), HEIGHT=draw(_maybe(_coordinate)))
        image = draw(st.sampled_from(["page.png", "missing.png", "", "http://example.org/p.png", "../x.png"]))
    lines = []
    for _ in range(draw(st.integers(0, 4))):
        # a plausible line, then up to two of its attributes replaced by anything
        x, y = draw(st.integers(0, 590)), draw(st.integers(0, 190))
        w, h = draw(st.integers(0, 620 - x)), draw(st.integers(0, 210 - y))
        poly = draw(
            st.one_of(
                st.just(f"{x} {y} {x + w} {y} {x + w} {y + h} {x} {y + h}"),
                st.lists(st.tuples(st.integers(0, 600), st.integers(0, 200)), min_size=3, max_size=6).map(
                    lambda v: " ".join(f"{a} {b}" for a, b in v)
                ),
            )
        )
        values = {
            "ID": draw(_xml_text),
            "HPOS": str(x),
            "VPOS": str(y),
            "WIDTH": str(w),
            "HEIGHT": str(h),
            "BASELINE": f"{x} {y + h * 3 // 4} {x + w} {y + h // 2}",
            "POINTS": poly,
            "LANG": draw(_maybe(st.sampled_from(["fr", "la", "ara", "xx-YY"]))),
            "BASEDIRECTION": draw(_maybe(st.sampled_from(["ltr", "rtl", "ttb", "btt", "x"]))),
            "TAGREFS": draw(_maybe(st.sampled_from(["t1", "t1 t2", "missing"]))),
        }
        fuzz = st.one_of(st.none(), _special, _coordinate, _points_alto, _number)
        values.update(draw(st.dictionaries(st.sampled_from(sorted(values)), fuzz, max_size=2)))
        points = values.pop("POINTS")
        attrs = _attrs(**values)
        shape = "" if points is None else f"<Shape><Polygon POINTS={quoteattr(points)}/></Shape>"
        strings = "".join(
            f"<String{_attrs(CONTENT=draw(_maybe(_xml_text)))}/>" if draw(st.booleans()) else "<SP/>"
            for _ in range(draw(st.integers(0, 3)))
        )
        lines.append(f"<TextLine{attrs}>{shape}{strings}</TextLine>")
    return (
        '<?xml version="1.0" encoding="UTF-8"?><alto xmlns="http://www.loc.gov/standards/alto/ns-v4#">'
        f"<Description><MeasurementUnit>{unit}</MeasurementUnit><sourceImageInformation><fileName>{image}"
        '</fileName></sourceImageInformation></Description><Tags><OtherTag ID="t1" TYPE="language" LABEL="fr"/>'
        f'<OtherTag ID="t2" TYPE="split" LABEL="train"/></Tags><Layout><Page ID="p"{page}><PrintSpace>'
        f'<TextBlock ID="b">{"".join(lines)}</TextBlock></PrintSpace></Page></Layout></alto>'
    )


@st.composite
def page_pages(draw, page_level: bool) -> str:
    lines = []
    for _ in range(draw(st.integers(0, 4))):
        x, y = draw(st.integers(0, 590)), draw(st.integers(0, 190))
        w, h = draw(st.integers(0, 620 - x)), draw(st.integers(0, 210 - y))
        coords = f"{x},{y} {x + w},{y} {x + w},{y + h} {x},{y + h}"
        baseline = f"{x},{y + h * 3 // 4} {x + w},{y + h // 2}"
        fuzz = st.one_of(st.none(), _special, _points_page, _number)
        coords = draw(st.one_of(st.just(coords), fuzz))
        baseline = draw(st.one_of(st.just(baseline), fuzz))
        text = draw(_xml_text)
        lines.append(
            f"<TextLine{_attrs(id=draw(_maybe(_xml_text)), custom=draw(_maybe(_xml_text)))}>"
            + ("" if coords is None else f"<Coords points={quoteattr(coords)}/>")
            + ("" if baseline is None else f"<Baseline points={quoteattr(baseline)}/>")
            + f"<TextEquiv><Unicode>{escape(text)}</Unicode></TextEquiv></TextLine>"
        )
    page = ' imageFilename="page.png" imageWidth="600" imageHeight="200"'
    if page_level:
        page = _attrs(
            imageFilename=draw(st.sampled_from(["page.png", "missing.png", "", "file://page.png"])),
            imageWidth=draw(_maybe(_coordinate)),
            imageHeight=draw(_maybe(_coordinate)),
            primaryLanguage=draw(_maybe(_xml_text)),
        )
    return (
        '<?xml version="1.0" encoding="UTF-8"?>'
        '<PcGts xmlns="http://schema.primaresearch.org/PAGE/gts/pagecontent/2019-07-15">'
        f'<Page{page}><TextRegion id="r"{_attrs(readingDirection=draw(_maybe(_xml_text)))}>{"".join(lines)}'
        "</TextRegion></Page></PcGts>"
    )


def _parse_and_extract(path: Path, linetype: str) -> None:
    """Parse the page; every line it returns must cut from the page image or fail with a message."""
    from scriba.data.extract import extract_line, open_page
    from scriba.data.xml import parse_page

    skipped = []
    try:
        image, lines = parse_page(path, "xml", linetype, on_skip=skipped.append)
    except ScribaError as e:
        assert str(e)
        return
    assert all(s.reason for s in skipped)
    if not lines or not os.path.isfile(image):
        return
    page = open_page(image)
    for rec in lines:
        for legacy in (False, True):
            try:
                im = extract_line(page, rec, legacy_polygons=legacy)
            except ScribaError as e:
                assert str(e)
            else:
                assert im.width >= 1 and im.height >= 1


@budget(100)
@given(alto_pages(page_level=False), st.sampled_from(["baselines", "bbox"]))
def test_fuzz_alto_lines(folder, xml, linetype):
    _parse_and_extract(_write(folder, "fuzz_alto.xml", xml), linetype)


@budget(40)
@given(alto_pages(page_level=True))
def test_fuzz_alto_pages(folder, xml):
    _parse_and_extract(_write(folder, "fuzz_alto.xml", xml), "baselines")


@budget(60)
@given(page_pages(page_level=False), st.sampled_from(["baselines", "bbox"]))
def test_fuzz_pagexml_lines(folder, xml, linetype):
    _parse_and_extract(_write(folder, "fuzz_page.xml", xml), linetype)


@budget(30)
@given(page_pages(page_level=True))
def test_fuzz_pagexml_pages(folder, xml):
    _parse_and_extract(_write(folder, "fuzz_page.xml", xml), "baselines")


_SEED_PAGE = (
    b'<?xml version="1.0"?><alto><Description><sourceImageInformation><fileName>page.png</fileName>'
    b'</sourceImageInformation></Description><Layout><Page WIDTH="600" HEIGHT="200"><TextLine ID="a" HPOS="1" '
    b'VPOS="1" WIDTH="90" HEIGHT="20" BASELINE="1 18 90 18"><String CONTENT="ab"/></TextLine></Page></Layout></alto>'
)


@budget(60)
@given(st.lists(st.tuples(st.integers(0, len(_SEED_PAGE)), st.binary(max_size=4)), min_size=1, max_size=4))
def test_fuzz_xml_bytes(folder, edits):
    data = bytearray(_SEED_PAGE)
    for pos, new in edits:
        data[pos : pos + len(new)] = new
    _parse_and_extract(_write(folder, "fuzz_bytes.xml", bytes(data)), "baselines")


# -- Arrow datasets ---------------------------------------------------------------------------------------------


@st.composite
def arrow_tables(draw):
    import pyarrow as pa

    png = png_bytes()
    kinds = {
        "text": st.sampled_from([pa.string(), pa.large_string(), pa.int64(), pa.binary()]),
        "im": st.sampled_from([pa.binary(), pa.large_binary(), pa.string()]),
        "language": st.sampled_from([pa.list_(pa.string()), pa.string(), pa.list_(pa.int64())]),
    }
    names = draw(st.lists(st.sampled_from(["text", "im", "language", "other"]), unique=True, max_size=4))
    fields = [(n, draw(kinds[n]) if n in kinds else pa.int64()) for n in names]
    values = {
        pa.string(): st.one_of(st.none(), _text),
        pa.large_string(): st.one_of(st.none(), _text),
        pa.int64(): st.one_of(st.none(), st.integers(-5, 5)),
        pa.binary(): st.one_of(st.none(), st.just(png), st.binary(max_size=8)),
        pa.large_binary(): st.one_of(st.none(), st.just(png)),
        pa.list_(pa.string()): st.one_of(st.none(), st.lists(_text, max_size=2)),
        pa.list_(pa.int64()): st.one_of(st.none(), st.lists(st.integers(0, 3), max_size=2)),
    }
    n = draw(st.integers(0, 3))
    rows = [{name: draw(values[kind]) for name, kind in fields} for _ in range(n)]
    if draw(st.booleans()) and fields:
        lines = pa.array(rows, pa.struct(fields))
    else:
        lines = pa.array([draw(_text) for _ in range(n)])
    meta = draw(
        st.one_of(
            st.just(DATASET_META),
            st.fixed_dictionaries({"type": st.sampled_from(["kraken_recognition_bbox", "x", 5]), "im_mode": _text}),
            st.lists(st.integers(), max_size=2),
            _text,
        ).map(json.dumps)
        | st.just("{not json")
    )
    splits = {}
    for name in draw(st.lists(st.sampled_from(["train", "validation", "test"]), unique=True, max_size=3)):
        if draw(st.booleans()):
            splits[name] = pa.array([draw(st.one_of(st.none(), st.booleans())) for _ in range(n)], pa.bool_())
        else:
            splits[name] = pa.array([draw(st.integers(0, 1)) for _ in range(n)], pa.int64())
    return lines, meta, splits


@budget(80)
@given(arrow_tables())
def test_fuzz_arrow(folder, table):
    from scriba.data.extract import load_line_image
    from scriba.data.sources import iter_records

    lines, meta, splits = table
    path = arrow_file(folder / "fuzz.arrow", lines, meta, **splits)
    skipped = []
    for rec in iter_records([str(path)], "binary", on_skip=skipped.append):
        assert isinstance(rec.text, str)
        try:
            load_line_image(rec)
        except ScribaError as e:
            assert str(e)
    assert all(s.reason for s in skipped)


@budget(40)
@given(st.binary(max_size=64))
def test_fuzz_arrow_bytes(folder, data):
    from scriba.data.arrow import ArrowDataset

    try:
        ArrowDataset(_write(folder, "fuzz_bytes.arrow", b"ARROW1\x00\x00" + data))
    except ScribaError as e:
        assert str(e)


# -- VGSL specs ---------------------------------------------------------------------------------------------------

_small = st.integers(0, 5).map(str)
_blocks = st.one_of(
    st.builds(
        lambda nl, a, b, c: f"C{nl}{a},{b},{c}",
        st.sampled_from(["r", "l", "s", "t", "m", "lr"]),
        _small,
        _small,
        _small,
    ),
    st.builds(lambda a, b, c, d: f"Mp{a},{b},{c},{d}", _small, _small, _small, _small),
    st.builds(lambda a, b: f"Mp{a},{b}", _small, _small),
    st.builds(lambda d, x, n: f"L{d}{x}{n}", st.sampled_from("frb"), st.sampled_from(["x", "y", "xs", "ys"]), _small),
    st.builds(lambda p, d: f"Do{p},{d}", st.sampled_from(["0.1", "0.5", "1.5", ".3", "0"]), _small),
    st.builds(lambda d, a, b, e, f: f"S{d}({a}x{b}){e},{f}", _small, _small, _small, _small, _small),
    st.builds(lambda d, k, n: f"O{d}{k}{n}", st.sampled_from("012"), st.sampled_from(["c", "l", "s", "ca"]), _small),
    st.builds(lambda g: f"Gn{g}", _small),
    st.builds(lambda d, c: f"A{d},{c}", _small, _small),
    st.sampled_from(
        [
            "I",
            "S1(1x0)1,3",
            "Lbx4",
            "Cr3,3,4",
            "Mp2,2",
            "Wxyz",
            "[Cr3,3,2 Mp2,2]",
            "(I I)",
            "(Cr3,3,2 Cr3,3,2)",
            "Cr3,3,99999999",
        ]
    ),
)


@budget(60)
@given(
    st.sampled_from(["1,16,0,1", "1,0,0,1", "1,1,0,8", "1,8,32,1", "1,16,0,3", "0,16,0,1", "1,16,0,0"]),
    st.lists(_blocks, max_size=6),
)
def test_fuzz_vgsl(shape, blocks):
    from scriba.vgsl.model import check_trainable

    spec = f"[{' '.join([shape, *blocks])}]"
    try:
        check_trainable(spec)
    except ScribaError as e:
        assert str(e)


@budget(60)
@given(st.text(alphabet="[](){}, 0123456789CrlMpLfbxyDoSOcaGnAIW.", max_size=30))
def test_fuzz_vgsl_text(spec):
    from scriba.vgsl.parser import parse_spec

    try:
        parse_spec(spec)
    except ScribaError as e:
        assert str(e)


# -- codecs -------------------------------------------------------------------------------------------------------

_json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-3, 2_000_000), st.floats(allow_nan=False), _text),
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(_text, inner, max_size=3)),
    max_leaves=6,
)
_labels = st.one_of(st.integers(-1, 12), st.lists(st.integers(-1, 12), max_size=3), _json_values)


@budget(100)
@given(st.dictionaries(st.one_of(_text, st.integers(0, 3)), _labels, max_size=5), _text)
def test_fuzz_codec(mapping, text):
    from scriba.codec import Codec

    try:
        codec = Codec.from_spec(mapping)
    except ScribaError as e:
        assert str(e)
        return
    labels = codec.encode(text)
    assert all(1 <= lab <= codec.max_label for lab in labels)
    assert isinstance(codec.decode_text(labels), str)
    # one label per character: the codec gives back the characters it knows, in order
    if all(len(k) == 1 and len(v) == 1 for k, v in codec.c2l.items()):
        assert codec.decode_text(labels) == "".join(c for c in text if c in codec.c2l)


@budget(40)
@given(st.one_of(st.binary(max_size=40), _json_values.map(lambda v: json.dumps(v).encode())))
def test_fuzz_codec_file(folder, data):
    from scriba.codec import Codec, load_codec_file

    try:
        Codec(load_codec_file(str(_write(folder, "fuzz_codec.json", data))))
    except ScribaError as e:
        assert str(e) and "fuzz_codec.json" in str(e)


# -- experiment files -------------------------------------------------------------------------------------------

_option_names = st.sampled_from(
    ["epochs", "lrate", "batch_size", "augment", "quit", "checkpoint_path", "training_data", "codec", "spec",
     "freq", "padding", "normalization", "min_delta", "warmup", "precision", "unknown_key"]
)  # fmt: skip
_yaml_scalars = st.one_of(
    st.sampled_from(["1.5", "true", "no", ".nan", ".inf", "-1", "0", "3", "1e-3", "0.001", "null", "~", "[1, 2]",
                     "{a: [1]}", "NFD", "fixed", "'x.lst'", "&a [*a]", "!!binary aGk=", "!!python/object:os.system x"]),
    _text.map(json.dumps),
)  # fmt: skip


@budget(60)
@given(
    st.dictionaries(
        st.sampled_from(["precision", "seed", "deterministic", "threads", "device", "bogus"]), _yaml_scalars, max_size=3
    ),
    st.dictionaries(_option_names, _yaml_scalars, max_size=4),
)
def test_fuzz_experiment_file(folder, top, section):
    import scriba.jobs.train.job as job
    from scriba.cli.main import main

    text = (
        "".join(f"{k}: {v}\n" for k, v in top.items())
        + "train:\n"
        + "".join(f"  {k}: {v}\n" for k, v in section.items())
    )
    path = _write(folder, "fuzz.yml", text)
    out, err = io.StringIO(), io.StringIO()
    fake = mock.Mock(return_value=job.TrainResult(output_dir="m"))
    code = 0
    with mock.patch.object(job, "train", fake), contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            main(["--config", str(path), "train", "-f", "path", str(folder / "page.png")])
        except SystemExit as e:
            code = e.code or 0
    assert code in (0, 1, 2), err.getvalue()
    assert_clean(out.getvalue() + err.getvalue())
    if code == 0:
        cfg = fake.call_args.args[0]
        assert isinstance(cfg.epochs, int) and not isinstance(cfg.epochs, bool)
        assert math.isfinite(cfg.lrate) and isinstance(cfg.augment, bool)


@budget(40)
@given(st.binary(max_size=60))
def test_fuzz_yaml_and_manifest_bytes(folder, data):
    from scriba.cli.config_file import load_yaml
    from scriba.data.sources import read_manifest

    path = str(_write(folder, "fuzz_bytes.yml", data))
    for reader in (load_yaml, read_manifest):
        try:
            reader(path)
        except ScribaError as e:
            assert str(e) and "fuzz_bytes.yml" in str(e)

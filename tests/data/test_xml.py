"""ALTO and PageXML parsing on kraken's sample pages, broken inputs and synthetic edge cases."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from scriba.data.records import SkippedItem
from scriba.data.xml import parse_page
from scriba.errors import InputError, UsageError

LITE_TEXTS = [
    "$pag:39",
    "",
    "y salvedades alli expressadas; Y fue acetada;",
    "y assi mismo el dho$.dicho $ofi:Patron $ant:Miguel $ant:Carreras,",
    "y el $ofi:Rndo$.Reverendo $ant:Miguel $ant:Carreras $ofi:pbro$.presbítero residente en la",
]


def test_pagexml_lite(kraken_data: Path) -> None:
    image, lines = parse_page(kraken_data / "170025120000003,0074-lite.xml")
    assert image == str(kraken_data / "170025120000003,0074.jpg")
    assert [line.text for line in lines] == LITE_TEXTS
    first = lines[0]
    assert first.id == "line_1469098625593_463"
    assert first.baseline == [(2337, 226), (2421, 239)]
    assert first.boundary == [(2344, 182), (2428, 195), (2420, 244), (2336, 231)]
    assert first.bbox == (2336, 182, 2428, 244)
    assert first.kind == "baselines" and first.language is None and first.base_dir is None
    assert first.tags == {"type": "$pag"}
    assert all(line.image == image and line.source.endswith("-lite.xml") for line in lines)


def test_pagexml_full_page(kraken_data: Path) -> None:
    _, lines = parse_page(kraken_data / "170025120000003,0074.xml", "page")
    assert len(lines) == 44
    assert lines[2].text == "y salvedades alli expressadas; Y fue acetada;"


def test_alto_merge_page(kraken_data: Path) -> None:
    image, lines = parse_page(kraken_data / "merge_tests" / "0014.xml", "alto")
    assert image == str(kraken_data / "merge_tests" / "0014.jpg")
    assert [line.text for line in lines] == ["Ꝙesãsͥ", "a9"]
    assert lines[0].baseline == [(5, 44), (224, 50)]
    assert lines[0].bbox == (4, 41, 223, 51)
    assert len(lines[0].boundary) == 89 and lines[0].boundary[0] == (4, 43)


def test_alto_languages_directions_and_missing_baseline(kraken_data: Path) -> None:
    skipped: list[SkippedItem] = []
    _, lines = parse_page(kraken_data / "alto" / "bsb00084914_00007.xml", on_skip=skipped.append)
    by_id = {line.id: line for line in lines}
    assert len(lines) == 30
    assert [(s.element, s.reason) for s in skipped] == [("eSc_line_192879", "no baseline")]
    first = by_id["eSc_line_192895"]
    assert first.language == ["iai"] and first.base_dir == "L" and not first.vertical
    assert first.text == "בשאול וגו' ˙ אם יחבאו בראש הכרמל וגו' אם ילכו בשבי וגו' אין חשך ואין [צל']"
    # No own LANG: the block's tag reference (deu) and LANG (heb) apply; BASEDIRECTION ttb = vertical.
    second = by_id["eSc_line_192874"]
    assert second.language == ["deu", "heb"] and second.vertical
    # Strings without SP elements between them are joined as they are (kraken does the same).
    assert second.text.startswith("צלמותוגו'")


def test_pagexml_languages_and_directions(kraken_data: Path) -> None:
    _, lines = parse_page(kraken_data / "page" / "cPAS-2000.xml", "page")
    assert len(lines) == 97
    assert lines[0].language == ["hbo"] and lines[0].vertical
    assert lines[1].language == ["eng", "heb", "deu"] and lines[1].base_dir == "L"
    assert lines[0].tags["type"] == "Machine Printed text"


@pytest.mark.parametrize(
    "name, message",
    [
        ("alto/invalid/dims.xml", "invalid page WIDTH"),
        ("alto/invalid/image.xml", "no page image"),
        ("alto/invalid/mu.xml", "MeasurementUnit"),
        ("alto/invalid/zero_dims_missing_image.xml", "missing"),
        ("page/invalid/dims.xml", "invalid page imageWidth"),
        ("page/invalid/image.xml", "no page image"),
        ("page/invalid/zero_dims_missing_image.xml", "missing"),
    ],
)
def test_invalid_files_raise_input_error_naming_the_file(kraken_data: Path, name: str, message: str) -> None:
    with pytest.raises(InputError, match=message) as err:
        parse_page(kraken_data / name)
    assert err.value.path == str(kraken_data / name)


@pytest.mark.parametrize("name", ["alto/zero_dims.xml", "page/zero_dims.xml"])
def test_zero_dimensions_with_image_present(kraken_data: Path, name: str) -> None:
    image, lines = parse_page(kraken_data / name)
    assert lines == [] and image.endswith("zero_dims.png")


def test_format_mismatch_and_garbage(kraken_data: Path, tmp_path: Path) -> None:
    with pytest.raises(InputError, match="not page"):
        parse_page(kraken_data / "merge_tests" / "0014.xml", "page")
    bad = tmp_path / "bad.xml"
    bad.write_text("<alto><Layout>")
    with pytest.raises(InputError, match="does not parse"):
        parse_page(bad)
    other = tmp_path / "other.xml"
    other.write_text("<html/>")
    with pytest.raises(InputError, match="neither ALTO nor PageXML"):
        parse_page(other)
    with pytest.raises(UsageError):
        parse_page(other, "hocr")


ALTO_TEMPLATE = """<?xml version="1.0" encoding="UTF-8"?>
<alto xmlns="http://www.loc.gov/standards/alto/ns-v2#">
  <Description><MeasurementUnit>{unit}</MeasurementUnit>
    <sourceImageInformation><fileName>{image}</fileName></sourceImageInformation></Description>
  <Layout><Page ID="p" {dims}><PrintSpace>
    <TextBlock ID="b"><TextLine ID="l1" HPOS="100" VPOS="200" WIDTH="1000" HEIGHT="300" BASELINE="{baseline}">
      <String CONTENT="ab"/><SP/><String CONTENT="cd"/><HYP CONTENT="-"/>
    </TextLine></TextBlock></PrintSpace></Page></Layout>
</alto>"""


def _alto(tmp_path: Path, unit: str, dims: str, baseline: str = "100 500 1100 500", dpi: int | None = None) -> Path:
    img = tmp_path / "page.png"
    page = Image.new("L", (600, 400), 255)
    if dpi:
        page.save(img, dpi=(dpi, dpi))
    else:
        page.save(img)
    sub = tmp_path / "xml"
    sub.mkdir(exist_ok=True)
    xml = sub / f"{unit}.xml"
    xml.write_text(ALTO_TEMPLATE.format(unit=unit, image="../page.png", dims=dims, baseline=baseline))
    return xml


def test_alto_mm10_scaled_by_page_size(tmp_path: Path) -> None:
    # Page of 1200x800 mm10 shown on a 600x400 px image: 0.5 px per unit.
    image, lines = parse_page(_alto(tmp_path, "mm10", 'WIDTH="1200" HEIGHT="800"'))
    assert image == str(tmp_path / "page.png")
    (line,) = lines
    assert line.text == "ab cd"
    assert line.baseline == [(50, 250), (550, 250)]
    assert line.bbox == (50, 100, 550, 250)
    assert line.boundary == [(50, 100), (550, 100), (550, 250), (50, 250)]


def test_alto_inch1200_scaled_by_resolution(tmp_path: Path) -> None:
    # No page size: 300 dpi means 1200 units = 300 px.
    _, (line,) = parse_page(_alto(tmp_path, "inch1200", "", dpi=300))
    # PNG stores pixels per metre, so the resolution comes back a little off 300.
    assert [c for p in line.baseline for c in p] == pytest.approx([25, 125, 275, 125], abs=0.01)


def test_alto_v2_single_value_baseline(tmp_path: Path) -> None:
    _, (line,) = parse_page(_alto(tmp_path, "pixel", 'WIDTH="600" HEIGHT="400"', baseline="480"))
    assert line.baseline == [(100, 480), (1100, 480)]


PAGE_2019 = """<?xml version="1.0" encoding="UTF-8"?>
<PcGts xmlns="http://schema.primaresearch.org/PAGE/gts/pagecontent/2019-07-15">
  <Page imageFilename="img/p.jpg" imageWidth="100" imageHeight="50" primaryLanguage="French">
    <TableRegion id="t"><TextRegion id="r" readingDirection="right-to-left">
      <TextLine id="a"><Coords points="1,1 90,1 90,20 1,20"/><Baseline points="1,18 90,18"/>
        <TextEquiv index="1"><Unicode>first</Unicode></TextEquiv>
        <TextEquiv index="2"><Unicode>second</Unicode></TextEquiv>
        <Word id="w"><TextEquiv><Unicode>word</Unicode></TextEquiv></Word>
      </TextLine>
      <TextLine id="b"><Coords points="1,25 90,25 90,45 1,45"/>
        <Word id="w1"><TextEquiv><Unicode>only</Unicode></TextEquiv></Word>
      </TextLine>
      <TextLine id="c"><Coords points="1,25 90,25 90,45 1,45"/><Baseline points="1,40 3,40"/></TextLine>
    </TextRegion></TableRegion>
  </Page>
</PcGts>"""


def test_pagexml_2019_nested_regions_and_text_rules(tmp_path: Path) -> None:
    xml = tmp_path / "p.xml"
    xml.write_text(PAGE_2019)
    skipped: list[SkippedItem] = []
    image, lines = parse_page(xml, on_skip=skipped.append)
    assert image == str(tmp_path / "img" / "p.jpg")
    assert [line.id for line in lines] == ["a"]
    assert lines[0].text == "first"
    assert lines[0].language == ["fra"] and lines[0].base_dir == "R"
    assert {(s.element, s.reason) for s in skipped} == {("b", "no baseline"), ("c", "baseline shorter than 5px")}
    # As bbox lines, all three are usable; without a line-level TextEquiv the words' text is used.
    _, boxes = parse_page(xml, linetype="bbox")
    assert [(b.id, b.text, b.bbox, b.kind) for b in boxes] == [
        ("a", "first", (1, 1, 90, 20), "bbox"),
        ("b", "only", (1, 25, 90, 45), "bbox"),
        ("c", "", (1, 25, 90, 45), "bbox"),
    ]

"""The HTML report: structure, escaping, and what a real browser (headless Chromium) shows."""

from __future__ import annotations

import re
import shutil
import subprocess
import unicodedata
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from scriba.data.records import LineRecord
from scriba.jobs.evaluate.report_html import diff_html, render_html, write_html
from scriba.jobs.evaluate.result import EvaluationResult
from scriba.metrics import Tally

# A colour no part of the page's style uses: where it shows up in a screenshot, a line image was drawn.
MARK = (255, 0, 255)

LINES = [
    ("l0", "la dame est venue", "la dame est venue"),
    ("l1", "ço dist li reis", "co dist li rois"),
    ("l2", "<b>&amp; escape me</b>", "<b>& escape</b>"),
    ("l3", "cheualiers de la table", "cheualers dela table"),
    ("l4", "abc", "xyz"),
]


def _line_image(index: int) -> Image.Image:
    im = Image.new("RGB", (600, 60), "white")
    draw = ImageDraw.Draw(im)
    draw.rectangle((20, 15, 580, 45), fill=MARK)
    draw.text((30, 22), f"line {index}", fill="black")
    return im


def _result() -> EvaluationResult:
    t = Tally()
    for i, (lid, ref, pred) in enumerate(LINES):
        t.add(ref, pred, id=lid, source=f"page/{lid}.png", index=i)
    return EvaluationResult(
        model="/m/model_froc.mlmodel", name="model_froc.mlmodel", tally=t, seconds=1.0, image_loader=_line_image
    )


def test_diff_marks_changes() -> None:
    ref, pred = diff_html("abcd", "abxd")
    assert ref == "ab<del>c</del>d" and pred == "ab<ins>x</ins>d"
    ref, pred = diff_html("a<b", "a")
    assert ref == "a<del>&lt;b</del>" and 'class="gap"' in pred
    ref, pred = diff_html("a b", "ab")
    assert "<del>\u2423</del>" in ref  # a missed space stays visible


class _Collect(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.imgs: list[dict[str, str | None]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "img":
            self.imgs.append(dict(attrs))

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def test_page_is_self_contained_and_escaped(tmp_path: Path) -> None:
    out = tmp_path / "r.html"
    write_html(_result(), out)
    page = out.read_text(encoding="utf-8")
    p = _Collect()
    p.feed(page)
    assert len(p.imgs) == 4  # the four lines with errors, each with its image
    assert all((i.get("src") or "").startswith("data:image/png;base64,") for i in p.imgs)
    assert not re.search(r"""(src|href)=["']?(https?:|//|file:)""", page)  # nothing fetched from outside
    assert "<b>&amp;" not in page.replace("&lt;b&gt;&amp;amp;", "")  # data text never becomes markup
    assert "&lt;b&gt;" in page
    text = "".join(p.text)
    assert "Worst lines" in text and "Most frequent confusions" in text and "model_froc.mlmodel" in text
    assert [x.name for x in tmp_path.iterdir()] == ["r.html"]


def test_worst_lines_first() -> None:
    page = render_html(_result())
    pos = [page.find(f'id="line-{i}"') for i in (4, 3, 2, 1)]
    assert all(p > 0 for p in pos)
    assert 'id="line-0"' not in page  # a perfect line is not listed
    # l2 has the most errors, then l4 (3 errors, CER 1.0); l1 and l3 have 2 each, l1 the higher CER
    order = sorted((page.find(f'id="line-{i}"'), i) for i in (1, 2, 3, 4))
    assert [i for _, i in order] == [2, 4, 1, 3]


def test_unreadable_image_does_not_break_the_report() -> None:
    r = _result()

    def broken(i: int) -> Image.Image:
        raise OSError("cannot identify image file")

    r.image_loader = broken
    page = render_html(r)
    assert page.count("image unavailable: cannot identify image file") == 4


def _chromium() -> str:
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        pytest.skip("headless Chromium not installed (Debian package 'chromium'; .ci/run installs it)")
    return exe


def _browser(exe: str, tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    cmd = [
        exe,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-dev-shm-usage",
        "--hide-scrollbars",
        "--no-first-run",
        f"--user-data-dir={tmp_path / 'profile'}",
        *args,
    ]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=180, check=False)


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    exe = _chromium()
    tmp = tmp_path_factory.mktemp("chromium")
    page = tmp / "report.html"
    write_html(_result(), page)
    shot = tmp / "shot.png"
    run = _browser(exe, tmp, f"--screenshot={shot}", "--window-size=1280,1400", page.as_uri())
    assert shot.exists(), f"chromium wrote no screenshot: {run.stderr[-2000:]}"
    dom = _browser(exe, tmp, "--dump-dom", page.as_uri())
    assert dom.returncode == 0, dom.stderr[-2000:]
    return shot, dom.stdout


def test_browser_shows_line_images(rendered: tuple[Path, str]) -> None:
    shot, _ = rendered
    arr = np.asarray(Image.open(shot).convert("RGB")).astype(int)
    assert arr.std() > 10, "the screenshot is blank"
    mark = np.abs(arr - np.array(MARK)).sum(axis=2) < 60
    rows = mark.any(axis=1)
    # separate vertical runs of marked rows = separate line images drawn by the browser
    runs = int(np.count_nonzero(rows[1:] & ~rows[:-1]) + rows[0])
    assert runs >= 2, f"expected several line images in the screenshot, found {runs}"
    assert mark.sum() > 2 * 400 * 20  # each image drawn at (about) full size, not a broken-image icon


def test_browser_dom_has_worst_lines(rendered: tuple[Path, str]) -> None:
    _, dom = rendered
    assert dom.count('class="lineimg"') == 4
    for lid in ("l1", "l2", "l3", "l4"):
        assert f'<span class="lid">{lid}</span>' in dom
    assert "<del>" in dom and "<ins>" in dom
    assert "Most frequent confusions" in dom


# -- right-to-left lines and rare characters ---------------------------------------------------------------

ARABIC = "ذكر غزوة بني قريظة"  # logical order (first letter ذ, last ة)


def _rtl_result(settings: dict | None = None) -> EvaluationResult:
    """Display-order texts, as ``ketos test`` scores them: an Arabic line (one letter misread) and a MUFI line."""
    from scriba.text import get_display

    t = Tally()
    ref = get_display(ARABIC)
    t.add(ref, get_display(ARABIC.replace("بني", "بتي")), id="ar", source="ar.png", index=0)
    t.add("me\ue476 bon \uf6c5", "me bon \uf6c5", id="mufi", source="mufi.png", index=1)
    return EvaluationResult(
        model="m", name="m", tally=t, settings=settings or {"bidi_reordering": True, "base_dir": "auto"},
        image_loader=_line_image,
    )


def _txt_divs(page: str) -> dict[str, tuple[str, str]]:
    """Per line id: the direction and the plain text of its reference."""
    out = {}
    for lid, body in re.findall(r'<span class="lid">([^<]+)</span>(.*?)(?=<div class="line"|</section>)', page, re.S):
        m = re.search(r'<div class="txt ref" dir="(\w+)">.*?<span class="t">(.*?)</span></div>', body, re.S)
        assert m, lid
        out[lid] = (m.group(1), re.sub(r"<[^>]+>", "", m.group(2)))
    return out


def test_rtl_lines_are_in_logical_order_with_their_direction() -> None:
    divs = _txt_divs(render_html(_rtl_result()))
    assert divs["ar"] == ("rtl", ARABIC)
    assert divs["mufi"][0] == "ltr"
    # Texts that were not reordered (--no-reorder) are shown as they are.
    t = Tally()
    t.add(ARABIC, ARABIC[:-1], id="ar", index=0)
    plain = EvaluationResult(model="m", name="m", tally=t, settings={"bidi_reordering": False, "base_dir": "auto"})
    assert _txt_divs(render_html(plain))["ar"] == ("rtl", ARABIC)


def test_logical_line_undoes_the_reordering_with_the_direction_it_used() -> None:
    from scriba.jobs.evaluate.report_html import logical_line
    from scriba.text import get_display

    for logical in ("abc " + ARABIC + " d", ARABIC + " abc", "(1) " + ARABIC + " [2]", ARABIC + " 12, 13"):
        display = get_display(logical)
        ref, pred, direction = logical_line(display, display, True, None)
        assert ref == pred == logical, logical
        assert direction == ("ltr" if logical.startswith("abc") else "rtl")
    # "abc ARABIC" and "ARABIC abc" have the same display order: most strong characters decide, unless the
    # direction is known (from the record's logical text, see below).
    display = get_display("abc " + ARABIC)
    assert logical_line(display, "", True, None)[0] == ARABIC + " abc"
    assert logical_line(display, "", True, "L")[0] == "abc " + ARABIC
    # A forced base direction is undone with that direction.
    display = get_display(ARABIC + " abc", "L")
    assert logical_line(display, "", True, "L")[::2] == (ARABIC + " abc", "ltr")
    assert logical_line(display, "", True, "R")[0] != ARABIC + " abc"


def test_openiti_lines_come_back_in_logical_order(shared_data: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from scriba.data.sources import read_manifest, read_path_record
    from scriba.jobs.evaluate.report_html import logical_line
    from scriba.text import TextTransform, normalize_whitespace

    manifest = shared_data / "openiti_arabic" / "splits" / "val.lst"
    if not manifest.exists():
        pytest.skip("no openiti_arabic data")
    transform = TextTransform()
    monkeypatch.chdir(manifest.parent.parent)  # the manifests list paths relative to the dataset's folder
    texts = [read_path_record(p).text for p in read_manifest(manifest)[:150]]
    assert len(texts) == 150
    for text in texts:
        ref, _, direction = logical_line(transform(text), "", True, None)
        assert ref == normalize_whitespace(text)
        # a line of digits only (a page number) has no strong direction of its own
        assert direction == ("rtl" if any(unicodedata.bidirectional(c) in ("R", "AL") for c in text) else "ltr")


def test_direction_comes_from_the_records_logical_text() -> None:
    from scriba.text import get_display

    logical = "abc " + ARABIC
    t = Tally()
    t.add(get_display(logical), get_display(logical), id="mixed", index=0)
    t.add(get_display(logical), "x", id="mixed2", index=1)
    recs = [LineRecord(id=f"r{i}", source="s", text=logical) for i in range(2)]
    res = EvaluationResult(model="m", name="m", tally=t, records=recs, settings={"bidi_reordering": True})
    assert _txt_divs(render_html(res))["mixed2"] == ("ltr", logical)
    recs[1].base_dir = "R"
    assert _txt_divs(render_html(res))["mixed2"] == ("rtl", get_display(get_display(logical), "R"))


def test_private_use_characters_are_marked_with_their_code_point() -> None:
    page = render_html(_rtl_result())
    assert '<span class="cp" data-cp="E476" title="U+E476">\ue476</span>' in page
    assert 'data-cp="F6C5"' in page
    # In the confusion table too, instead of a bare "0xe476".
    assert '<td class="txt"><span class="cp" data-cp="E476"' in page and "0xe476" not in page


@pytest.fixture(scope="module")
def rtl_measured(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The RTL report in Chromium, with a script that measures where the Arabic reference's letters land."""
    import html
    import json

    exe = _chromium()
    tmp = tmp_path_factory.mktemp("chromium_rtl")
    probe = """<script>(function(){
var el=document.querySelector('#line-0 .ref .t'),txt=el.textContent,out={};
function box(node,i){var r=document.createRange();r.setStart(node,i);r.setEnd(node,i+1);return r.getBoundingClientRect();}
var walker=document.createTreeWalker(el,NodeFilter.SHOW_TEXT),nodes=[],n;while((n=walker.nextNode()))nodes.push(n);
function at(ch){for(var k=0;k<nodes.length;k++){var i=nodes[k].data.indexOf(ch);if(i>=0)return box(nodes[k],i).left;}return null;}
out.first=at('\u0630');out.last=at('\u0638');out.width=el.getBoundingClientRect().width;
function width(s){var sp=document.createElement('span');sp.dir='rtl';sp.className='t';sp.textContent=s;
el.parentNode.appendChild(sp);var w=sp.getBoundingClientRect().width;sp.remove();return w;}
out.plain=width(txt);out.unjoined=width(txt.split('').join('\\u200c'));
out.nofont=Array.prototype.map.call(document.querySelectorAll('.cp.nofont'),function(e){return e.textContent;});
out.cps=Array.prototype.map.call(document.querySelectorAll('.cp'),function(e){return e.getAttribute('data-cp');});
var pre=document.createElement('pre');pre.id='measure';pre.textContent=JSON.stringify(out);document.body.appendChild(pre);
})();</script>"""
    page = tmp / "rtl.html"
    page.write_text(render_html(_rtl_result()).replace("</body>", probe + "</body>"), encoding="utf-8")
    dom = _browser(exe, tmp, "--dump-dom", page.as_uri())
    m = re.search(r'<pre id="measure">(.*?)</pre>', dom.stdout, re.S)
    assert m, dom.stderr[-2000:]
    return json.loads(html.unescape(m.group(1)))


def test_browser_lays_arabic_out_right_to_left_and_joined(rtl_measured: dict) -> None:
    m = rtl_measured
    # The first word's first letter (dhal) is drawn right of the last word's zah: read right to left, the
    # words come in their logical order (display-order text in the page would be turned around again).
    assert m["first"] > m["last"] + 100
    # The marked-up reference is shaped like the same text without markup (the marks do not break the
    # joining), and joined letters are narrower than the same letters kept apart.
    assert abs(m["width"] - m["plain"]) < 1.5
    assert m["unjoined"] > m["plain"] * 1.1


def test_browser_shows_code_points_for_characters_no_font_has(rtl_measured: dict) -> None:
    m = rtl_measured
    assert "U+E476" in m["nofont"]  # MUFI: no font here has it
    has_f6c5 = shutil.which("fc-list") and subprocess.run(
        ["fc-list", ":charset=f6c5"], capture_output=True, text=True, check=False
    ).stdout.strip()
    if has_f6c5:
        assert "U+F6C5" not in m["nofont"] and "F6C5" in m["cps"]  # a private-use glyph a font does have

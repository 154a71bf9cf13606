"""The HTML report: structure, escaping, and what a real browser (headless Chromium) shows."""

from __future__ import annotations

import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

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

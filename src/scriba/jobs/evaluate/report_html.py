"""``--output-html``: a self-contained page for the people who fix transcriptions and train models.

One file, no network: inline CSS, line images embedded as base64 PNG. It shows the summary, the per-script
table, the worst lines (image, reference and prediction with the differing characters marked) and the most
frequent confusions. Built with f-strings and ``html.escape``; every piece of text from the data is escaped.

Texts are scored in display order (references are bidi-reordered like training targets, and networks emit
display order), but a browser lays text out itself: display-order Arabic would be reversed a second time.
So each line is put back into logical order with its paragraph direction (the one the reordering used) and
shown with ``dir="rtl"``/``"ltr"``. Private-use and unassigned characters (MUFI's, U+E000-F8FF) are marked;
a small inline script replaces the ones that no installed font can draw by their code point.
"""

from __future__ import annotations

import base64
import html
import os
import unicodedata
from io import BytesIO
from typing import TYPE_CHECKING

from rapidfuzz.distance import Levenshtein

from scriba.jobs.evaluate.report import printable, write_text_atomic
from scriba.jobs.evaluate.result import EvaluationResult
from scriba.text import get_display

if TYPE_CHECKING:
    from scriba.metrics import LineResult

__all__ = ["diff_html", "logical_line", "render_html", "write_html"]

WORST_LINES = 30
CONFUSIONS = 60
# Line images are shrunk to fit this box: big enough to read the script, small enough to keep the file light.
MAX_IMAGE_SIZE = (1600, 96)

_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;margin:0;background:#f4f4f1;color:#1d1d1b}
header{background:#26344a;color:#fff;padding:18px 28px}
header h1{margin:0;font-size:22px;font-weight:600}
header p{margin:4px 0 0;opacity:.8;font-size:13px}
main{padding:18px 28px;max-width:1700px}
section{background:#fff;border:1px solid #ddd;border-radius:6px;padding:14px 18px;margin-bottom:18px}
h2{font-size:17px;margin:0 0 10px}
.cards{display:flex;flex-wrap:wrap;gap:12px}
.card{border:1px solid #e1e1dc;border-radius:5px;padding:8px 14px;min-width:120px;background:#fafaf7}
.card b{display:block;font-size:22px}
.card span{font-size:12px;color:#555}
table{border-collapse:collapse;font-size:14px}
th,td{border-bottom:1px solid #e6e6e1;padding:3px 10px;text-align:left}
td.n{text-align:right;font-variant-numeric:tabular-nums}
.line{border-top:1px solid #e6e6e1;padding:10px 0}
.line:first-of-type{border-top:none}
.meta{font-size:12px;color:#555;margin-bottom:4px}
.meta b{color:#a3171b}
.line img{display:block;max-width:100%;height:auto;border:1px solid #ccc;background:#fff;margin:4px 0}
.noimg{font-size:12px;color:#a3171b;margin:4px 0}
.txt{font-family:"DejaVu Sans Mono",monospace;font-size:17px;white-space:pre-wrap;margin:2px 0}
.txt .lbl{display:inline-block;width:5.5em;font-family:system-ui,sans-serif;font-size:12px;color:#555}
.txt[dir=rtl]{font-family:"Noto Naskh Arabic","Amiri","Scheherazade New","Noto Sans Arabic","DejaVu Sans",sans-serif;
font-size:20px}
.txt[dir=rtl] .lbl{text-align:right}
.cp{font-family:"Junicode","Palemonas MUFI","Andron Scriptor Web","Noto Sans",sans-serif}
.cp.nofont{font-family:system-ui,sans-serif;font-size:11px;border:1px solid #999;border-radius:2px;padding:0 1px;
color:#333;unicode-bidi:isolate}
del{background:#f8c9c4;color:#7a0c0c;text-decoration:none;border-bottom:2px solid #c0392b}
ins{background:#c9efcf;color:#0b5a1c;text-decoration:none;border-bottom:2px solid #27ae60}
.gap{background:#f8c9c4;padding:0 3px;border-bottom:2px dotted #c0392b}
.notes li{margin:3px 0}
"""


# Replaces each marked character that every font lacks (drawn exactly like a surely unassigned code point,
# U+10FFFD) by its code point; runs once the page is loaded, in the browser only.
_SCRIPT = """
(function(){var c=document.createElement('canvas');c.width=48;c.height=48;var x=c.getContext('2d');
if(!x)return;function draw(ch,font){x.clearRect(0,0,48,48);x.font=font;x.fillText(ch,4,36);
return Array.prototype.join.call(x.getImageData(0,0,48,48).data,'');}var seen={};
document.querySelectorAll('.cp').forEach(function(el){var st=getComputedStyle(el);
var font=st.fontSize+' '+st.fontFamily,ch=el.textContent,key=font+ch;
if(!(key in seen))seen[key]=draw(ch,font)===draw('\\u{10FFFD}',font);
if(seen[key]){el.textContent='U+'+el.getAttribute('data-cp');el.classList.add('nofont');}});})();
"""

# Bidi classes of strong right-to-left characters, and of the explicit controls that start RTL text.
_RTL = frozenset({"R", "AL", "RLE", "RLO", "RLI"})


def _esc(text: str) -> str:
    """Escaped text; private-use and unassigned characters wrapped to be shown by code point if need be."""
    out = []
    for ch in text:
        if unicodedata.category(ch) in ("Co", "Cn"):
            cp = f"{ord(ch):04X}"
            out.append(f'<span class="cp" data-cp="{cp}" title="U+{cp}">{html.escape(ch)}</span>')
        else:
            out.append(html.escape(ch, quote=True))
    return "".join(out)


def _show(text: str) -> str:
    """Escaped text where spaces stay visible when they are part of an error."""
    return _esc(text).replace(" ", "\u2423") if text.strip() == "" else _esc(text)


def _confusion(text: str) -> str:
    """A confused string as a reader can see it; private-use characters as glyphs where a font has them."""
    if len(text) == 1:
        return _esc(text) if unicodedata.category(text) in ("Co", "Cn") else _esc(printable(text))
    out = []
    for c in text:
        cat = unicodedata.category(c)
        out.append(_esc(printable(c)) if cat[0] == "C" and cat not in ("Co", "Cn") else _esc(c))
    return "".join(out)


def _first_strong(text: str) -> str | None:
    for ch in text:
        cls = unicodedata.bidirectional(ch)
        if cls == "L":
            return "L"
        if cls in ("R", "AL"):
            return "R"
    return None


def _display_direction(display: str) -> str:
    """The paragraph direction that turned some logical text into ``display`` with an automatic base.

    A direction fits when undoing the reordering with it gives text whose own first strong character picks
    it and reorders back to ``display``; when both fit (``abc ARABIC`` and ``ARABIC abc`` look the same),
    the direction of most strong characters wins.
    """
    fits = []
    for d in ("R", "L"):
        logical = get_display(display, d)
        if (_first_strong(logical) or "L") == d and get_display(logical, None) == display:
            fits.append(d)
    if len(fits) == 1:
        return fits[0]
    rtl = sum(unicodedata.bidirectional(c) in ("R", "AL") for c in display)
    ltr = sum(unicodedata.bidirectional(c) == "L" for c in display)
    return "R" if rtl > ltr else "L"


def logical_line(reference: str, prediction: str, reordered: bool, base_dir: str | None) -> tuple[str, str, str]:
    """Reference and prediction in logical order, and their direction ``'rtl'`` or ``'ltr'``.

    ``reordered``: the texts are in display order (``ketos test`` reorders references like training
    targets; the network emits that order). ``base_dir``: the direction used for it, None when automatic.
    """
    if not reordered:
        d = base_dir or _first_strong(reference) or _first_strong(prediction) or "L"
        return reference, prediction, "rtl" if d == "R" else "ltr"
    if base_dir is None and not any(unicodedata.bidirectional(c) in _RTL for c in reference + prediction):
        return reference, prediction, "ltr"
    d = base_dir or _display_direction(reference or prediction)
    return get_display(reference, d), get_display(prediction, d), "rtl" if d == "R" else "ltr"


def _line_direction(result: EvaluationResult, line: LineResult) -> tuple[bool, str | None]:
    """Whether the line's texts are in display order, and the base direction their reordering used."""
    settings = result.settings or {}
    reorder = settings.get("bidi_reordering", True)
    if reorder in ("L", "R"):
        return True, str(reorder)
    base = settings.get("base_dir")
    if base in ("L", "R"):
        return bool(reorder), str(base)
    records = result.records
    if line.index is not None and 0 <= line.index < len(records):
        rec = records[line.index]
        if rec.base_dir in ("L", "R"):
            return bool(reorder), rec.base_dir
        if bool(reorder):
            # The reordering picked the direction from the logical text's first strong character.
            return True, _first_strong(rec.text) or "L"
    return bool(reorder), None


def diff_html(reference: str, prediction: str) -> tuple[str, str]:
    """Reference and prediction as HTML, with what the model missed (``del``) and added (``ins``) marked."""
    ref_out: list[str] = []
    pred_out: list[str] = []
    for op in Levenshtein.opcodes(reference, prediction):
        tag = op.tag
        r, p = reference[op.src_start : op.src_end], prediction[op.dest_start : op.dest_end]
        if tag == "equal":
            ref_out.append(_esc(r))
            pred_out.append(_esc(p))
        elif tag == "replace":
            ref_out.append(f"<del>{_show(r)}</del>")
            pred_out.append(f"<ins>{_show(p)}</ins>")
        elif tag == "delete":
            ref_out.append(f"<del>{_show(r)}</del>")
            pred_out.append('<span class="gap" title="missing"></span>')
        else:
            pred_out.append(f"<ins>{_show(p)}</ins>")
    return "".join(ref_out), "".join(pred_out)


def _image_tag(result: EvaluationResult, line: LineResult) -> str:
    if line.index is None:
        return '<div class="noimg">no image</div>'
    try:
        im = result.line_image(line.index)
        if im.mode not in ("L", "RGB"):
            im = im.convert("RGB" if im.mode in ("RGBA", "P", "CMYK") else "L")
        im = im.copy()
        im.thumbnail(MAX_IMAGE_SIZE)
        buf = BytesIO()
        im.save(buf, format="PNG", optimize=True)
    except Exception as exc:  # a report must not fail for one unreadable image
        return f'<div class="noimg">image unavailable: {_esc(str(exc) or type(exc).__name__)}</div>'
    data = base64.b64encode(buf.getvalue()).decode("ascii")
    return (
        f'<img class="lineimg" alt="line {_esc(line.id)}" width="{im.width}" height="{im.height}" '
        f'src="data:image/png;base64,{data}">'
    )


def _card(value: str, label: str) -> str:
    return f'<div class="card"><b>{_esc(value)}</b><span>{_esc(label)}</span></div>'


def _pct(x: float) -> str:
    return f"{100.0 * x:.2f} %"


def render_html(result: EvaluationResult, worst: int = WORST_LINES, confusions: int = CONFUSIONS) -> str:
    """The whole page as a string."""
    t = result.tally
    title = f"Test report: {result.name or result.model or 'model'}"
    cards = "".join(
        [
            _card(_pct(t.cer), "character error rate (CER)"),
            _card(_pct(t.wer), "word error rate (WER)"),
            _card(_pct(t.char_accuracy), "character accuracy"),
            _card(_pct(t.case_insensitive_accuracy), "case-insensitive accuracy"),
            _card(_pct(t.word_accuracy), "word accuracy"),
            _card(str(t.lines_seen), "lines"),
            _card(str(t.chars), "characters"),
            _card(str(t.errors), "errors"),
            _card(str(t.insertions), "insertions"),
            _card(str(t.deletions), "deletions"),
            _card(str(t.substitutions), "substitutions"),
        ]
    )
    script_rows = "".join(
        f'<tr><td>{_esc(r.script)}</td><td class="n">{r.count}</td><td class="n">{r.errors}</td>'
        f'<td class="n">{_pct(r.accuracy)}</td></tr>'
        for r in t.scripts()
    )
    lines_html = []
    for ln in t.worst_lines(worst):
        ref_text, pred_text, direction = logical_line(ln.reference, ln.prediction, *_line_direction(result, ln))
        ref_html, pred_html = diff_html(ref_text, pred_text)
        where = f"{_esc(ln.source)} · " if ln.source and ln.source != ln.id else ""
        lines_html.append(
            f'<div class="line" id="line-{ln.index}">'
            f'<div class="meta">{where}<span class="lid">{_esc(ln.id)}</span> · '
            f"<b>{ln.distance} error{'s' if ln.distance != 1 else ''}</b> · CER {_pct(ln.cer)}</div>"
            f"{_image_tag(result, ln)}"
            f'<div class="txt ref" dir="{direction}"><span class="lbl" dir="ltr">reference</span>'
            f'<span class="t">{ref_html}</span></div>'
            f'<div class="txt pred" dir="{direction}"><span class="lbl" dir="ltr">prediction</span>'
            f'<span class="t">{pred_html}</span></div>'
            "</div>"
        )
    worst_section = "".join(lines_html) or "<p>No line has an error.</p>"
    conf_rows = "".join(
        f'<tr><td class="n">{n}</td><td class="txt">{_confusion(ref) or "<i>(nothing)</i>"}</td>'
        f'<td class="txt">{_confusion(pred) or "<i>(nothing)</i>"}</td></tr>'
        for (ref, pred), n in t.top_confusions(confusions)
    )
    notes = result.notes()
    notes_html = (
        '<section class="notes"><h2>Notes</h2><ul>' + "".join(f"<li>{_esc(n)}</li>" for n in notes) + "</ul></section>"
        if notes
        else ""
    )
    speed = f" · {result.lines_per_second:.1f} lines/s" if result.seconds else ""
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width,initial-scale=1">
<title>{_esc(title)}</title><style>{_CSS}</style></head>
<body>
<header><h1>{_esc(title)}</h1><p>{_esc(result.model)} · {t.lines_seen} lines{speed}</p></header>
<main>
<section id="summary"><h2>Summary</h2><div class="cards">{cards}</div></section>
{notes_html}
<section id="worst"><h2>Worst lines ({min(worst, sum(1 for r in t.lines if r.distance))} shown)</h2>
<p class="meta">In the reference, <del>red</del> marks what the model missed or misread; in the prediction,
<ins>green</ins> marks what it produced instead.</p>
{worst_section}</section>
<section id="scripts"><h2>Per script</h2><table><thead><tr><th>script</th><th>characters</th><th>missed</th>
<th>right</th></tr></thead><tbody>{script_rows}</tbody></table></section>
<section id="confusions"><h2>Most frequent confusions</h2><table><thead><tr><th>count</th><th>reference</th>
<th>prediction</th></tr></thead><tbody>{conf_rows}</tbody></table></section>
</main><script>{_SCRIPT}</script></body></html>
"""


def write_html(result: EvaluationResult, path: str | os.PathLike[str], worst: int = WORST_LINES) -> None:
    write_text_atomic(path, render_html(result, worst=worst))

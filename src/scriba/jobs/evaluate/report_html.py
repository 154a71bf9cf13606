"""``--output-html``: a self-contained page for the people who fix transcriptions and train models.

One file, no network: inline CSS, line images embedded as base64 PNG. It shows the summary, the per-script
table, the worst lines (image, reference and prediction with the differing characters marked) and the most
frequent confusions. Built with f-strings and ``html.escape``; every piece of text from the data is escaped.
"""

from __future__ import annotations

import base64
import html
import os
from io import BytesIO
from typing import TYPE_CHECKING

from rapidfuzz.distance import Levenshtein

from scriba.jobs.evaluate.report import printable, write_text_atomic
from scriba.jobs.evaluate.result import EvaluationResult

if TYPE_CHECKING:
    from scriba.metrics import LineResult

__all__ = ["diff_html", "render_html", "write_html"]

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
del{background:#f8c9c4;color:#7a0c0c;text-decoration:none;border-bottom:2px solid #c0392b}
ins{background:#c9efcf;color:#0b5a1c;text-decoration:none;border-bottom:2px solid #27ae60}
.gap{background:#f8c9c4;padding:0 3px;border-bottom:2px dotted #c0392b}
.notes li{margin:3px 0}
"""


def _esc(text: str) -> str:
    return html.escape(text, quote=True)


def _show(text: str) -> str:
    """Escaped text where spaces stay visible when they are part of an error."""
    return _esc(text).replace(" ", "\u2423") if text.strip() == "" else _esc(text)


def diff_html(reference: str, prediction: str) -> tuple[str, str]:
    """Reference and prediction as HTML, with what the model missed (``del``) and added (``ins``) marked."""
    ref_out: list[str] = []
    pred_out: list[str] = []
    for tag, i1, i2, j1, j2 in Levenshtein.opcodes(reference, prediction):
        r, p = reference[i1:i2], prediction[j1:j2]
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
        ref_html, pred_html = diff_html(ln.reference, ln.prediction)
        where = f"{_esc(ln.source)} · " if ln.source and ln.source != ln.id else ""
        lines_html.append(
            f'<div class="line" id="line-{ln.index}">'
            f'<div class="meta">{where}<span class="lid">{_esc(ln.id)}</span> · '
            f"<b>{ln.distance} error{'s' if ln.distance != 1 else ''}</b> · CER {_pct(ln.cer)}</div>"
            f"{_image_tag(result, ln)}"
            f'<div class="txt ref" dir="auto"><span class="lbl">reference</span>{ref_html}</div>'
            f'<div class="txt pred" dir="auto"><span class="lbl">prediction</span>{pred_html}</div>'
            "</div>"
        )
    worst_section = "".join(lines_html) or "<p>No line has an error.</p>"
    conf_rows = "".join(
        f'<tr><td class="n">{n}</td><td class="txt">{_esc(printable(ref)) or "<i>(nothing)</i>"}</td>'
        f'<td class="txt">{_esc(printable(pred)) or "<i>(nothing)</i>"}</td></tr>'
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
</main></body></html>
"""


def write_html(result: EvaluationResult, path: str | os.PathLike[str], worst: int = WORST_LINES) -> None:
    write_text_atomic(path, render_html(result, worst=worst))

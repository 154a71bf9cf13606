"""``ketos compile``: extract every line once and store it, with its raw text, in a kraken Arrow dataset.

Work is split by page (XML formats) or by groups of line images (``path``), done in ``num_workers``
processes, and written in input order. Each page is decoded once for all its lines. Text is stored raw
(``text_type: raw``) like kraken's: transforms are applied when a dataset is read, so that kraken and scriba
apply them exactly once.
"""

from __future__ import annotations

import io
import logging
import multiprocessing
import os
import re
import sys
import time
from collections import Counter
from dataclasses import dataclass, field

from PIL import Image

from scriba.config import COMPILE_FORMAT_TYPES, LINETYPES, CompileConfig
from scriba.data.arrow import DATASET_TYPES, FORCE_TYPES, ArrowWriter, build_metadata, max_mode
from scriba.data.extract import LineError, extract_line, open_page
from scriba.data.images import image_error
from scriba.data.records import SkippedItem
from scriba.data.sources import gt_path, read_manifest, resolve_inputs
from scriba.errors import InputError, NoDataError, UsageError

logger = logging.getLogger(__name__)

# Lower zlib levels cost little size on line images and make encoding several times faster than the
# default level 6 (which kraken uses); PNG readers do not care.
PNG_COMPRESS_LEVEL = 2
PATH_CHUNK = 32


@dataclass
class CompileSummary:
    """What a compile run did; ``str()`` gives the report the CLI prints."""

    output: str
    dataset_type: str
    pages: int = 0
    pages_failed: int = 0
    lines_written: int = 0
    skipped: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    im_mode: str | None = None
    page_errors: list[str] = field(default_factory=list)

    @property
    def lines_skipped(self) -> int:
        return sum(self.skipped.values())

    @property
    def lines_per_second(self) -> float:
        return self.lines_written / self.seconds if self.seconds > 0 else 0.0

    def __str__(self) -> str:
        rows = [
            f"{self.output}: {self.lines_written} lines written from {self.pages} "
            f"{'file' if self.pages == 1 else 'files'} in {self.seconds:.1f}s "
            f"({self.lines_per_second:.0f} lines/s), type {self.dataset_type}",
        ]
        if self.pages_failed:
            rows.append(f"  {self.pages_failed} pages/files could not be used")
        if self.skipped:
            rows.append(f"  {self.lines_skipped} lines skipped:")
            rows += [f"    {n:6d}  {reason}" for reason, n in sorted(self.skipped.items(), key=lambda kv: -kv[1])]
        return "\n".join(rows)


@dataclass
class _Task:
    paths: list[str]
    format_type: str
    linetype: str
    legacy_polygons: bool
    skip_empty_lines: bool


@dataclass
class _Result:
    lines: list[tuple[str, bytes, list[str] | None, str | None]] = field(default_factory=list)
    skipped: list[SkippedItem] = field(default_factory=list)
    skip_counts: Counter[str] = field(default_factory=Counter)
    mode: str | None = None
    pages: int = 0
    pages_failed: int = 0
    page_errors: list[str] = field(default_factory=list)

    def skip(self, source: str, element: str | None, reason: str, lines: int = 1, category: str | None = None) -> None:
        self.skipped.append(SkippedItem(source, element, reason))
        if lines:
            self.skip_counts[category or reason] += lines


def _png(im: Image.Image) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format="png", compress_level=PNG_COMPRESS_LEVEL)
    return buf.getvalue()


def _bare(err: InputError, path: str) -> str:
    msg = str(err)
    return msg[len(path) + 2 :] if msg.startswith(f"{path}: ") else msg


def _do_xml(task: _Task, path: str, res: _Result) -> None:
    from scriba.data.xml import parse_page

    res.pages += 1
    try:
        image, records = parse_page(
            path,
            task.format_type,
            task.linetype,
            # counted by the reason's head: "odd number of coordinates: '1 2 3'" counts as the first part
            on_skip=lambda it: res.skip(it.source, it.element, it.reason, category=it.reason.split(": ", 1)[0]),
        )
    except InputError as e:
        res.pages_failed += 1
        res.skip(path, None, _bare(e, path), lines=0)
        res.page_errors.append(str(res.skipped[-1]))
        return
    if task.skip_empty_lines:
        for rec in records:
            if not rec.text:
                res.skip(path, rec.id, "empty transcription")
        records = [r for r in records if r.text]
    if not records:
        return
    try:
        page = open_page(image)
    except InputError as e:
        res.pages_failed += 1
        res.skip(
            path,
            None,
            f"{_bare(e, image)} ({image}; {len(records)} lines)",
            lines=len(records),
            category="page image cannot be read",
        )
        res.page_errors.append(str(res.skipped[-1]))
        return
    res.mode = max_mode(res.mode, page.mode)
    for rec in records:
        try:
            line = extract_line(page, rec, task.legacy_polygons)
        except LineError as e:
            res.skip(path, rec.id, e.reason)
            continue
        except Exception as e:  # a geometry no code path expected must not stop the other lines
            res.skip(
                path, rec.id, f"line cannot be extracted: {type(e).__name__}: {e}", category="line cannot be extracted"
            )
            continue
        res.lines.append((rec.text, _png(line), rec.language, rec.split))


def _do_path(task: _Task, path: str, res: _Result) -> None:
    res.pages += 1
    if path.endswith(".gt.txt"):
        res.skip(path, None, "a transcription file, not a line image", category="not a line image")
        return
    txt = gt_path(path)
    try:
        with open(txt, encoding="utf-8") as fh:
            text = fh.read().strip("\n\r")
    except FileNotFoundError:
        res.skip(path, None, f"no transcription file {txt}", category="no transcription file")
        return
    except (OSError, UnicodeDecodeError) as e:
        res.skip(path, None, f"transcription {txt} cannot be read: {e}", category="transcription cannot be read")
        return
    if task.skip_empty_lines and not text:
        res.skip(path, None, "empty transcription")
        return
    try:
        with open(path, "rb") as fh:
            raw = fh.read()
        with Image.open(io.BytesIO(raw)) as probe:
            # A PNG that needs no conversion is stored as is: decoding is only needed to check bitonality.
            as_is = (
                probe.format == "PNG"
                and probe.mode in ("L", "RGB")
                and "transparency" not in probe.info
                and probe.getexif().get(0x0112, 1) == 1
            )
        im = open_page(path, data=raw)
    except (OSError, InputError, Image.DecompressionBombError) as e:
        msg = _bare(e, path) if isinstance(e, InputError) else image_error(e)
        res.skip(path, None, msg, category="image cannot be read")
        return
    res.mode = max_mode(res.mode, im.mode)
    res.lines.append((text, raw if as_is and im.mode != "1" else _png(im), None, None))


def _work(task: _Task) -> _Result:
    res = _Result()
    for path in task.paths:
        if task.format_type == "path":
            _do_path(task, path, res)
        else:
            _do_xml(task, path, res)
    return res


def collect_inputs(cfg: CompileConfig) -> list[str]:
    """Positional paths (files, globs and manifests) followed by the entries of every ``-F`` manifest."""
    paths = resolve_inputs(cfg.ground_truth)
    for manifest in cfg.files:
        paths.extend(read_manifest(manifest))
    return paths


def _pool(num_workers: int, n_tasks: int):
    if num_workers <= 1 or n_tasks <= 1:
        return None
    methods = multiprocessing.get_all_start_methods()
    ctx = multiprocessing.get_context("fork" if "fork" in methods else None)
    return ctx.Pool(min(num_workers, n_tasks))


def remove_stale_partials(output: str) -> list[str]:
    """Removes the ``<output>.partial-PID``/``.tmp-PID`` files of compilations that were killed (their PID is
    gone) and names each in a warning; those of a compilation still running are left alone."""
    from scriba.weights.atomic import remove_stale

    name = os.path.basename(output)
    folder = os.path.dirname(os.path.abspath(output))
    return remove_stale(folder, re.compile(re.escape(name) + r"\.(?:partial|tmp)-(?P<pid>\d+)$"))


def compile_dataset(cfg: CompileConfig, num_workers: int = 1, progress: bool = True) -> CompileSummary:
    """Compile ``cfg``'s inputs into ``cfg.output``; returns the summary (also for printing).

    Raises :class:`UsageError` for bad options or no inputs and :class:`NoDataError` when not a single line
    could be written (the message says why). Skipped items are logged as warnings and counted.

    >>> from scriba import compile_dataset
    >>> from scriba.config import CompileConfig
    >>> summary = compile_dataset(CompileConfig(ground_truth=["examples/froc_sample/test.lst"], format_type="path",
    ...                                         output="test.arrow"), progress=False)
    >>> summary.lines_written
    49
    """
    started = time.perf_counter()
    if cfg.format_type not in COMPILE_FORMAT_TYPES:
        raise UsageError(f"invalid format {cfg.format_type!r} for compile (expected one of {COMPILE_FORMAT_TYPES})")
    if cfg.linetype is not None and cfg.linetype not in LINETYPES:
        raise UsageError(f"invalid line type {cfg.linetype!r} (expected one of {LINETYPES})")
    if cfg.force_type is not None and cfg.force_type not in FORCE_TYPES:
        raise UsageError(f"invalid --force-type {cfg.force_type!r} (expected bbox or baseline)")
    paths = collect_inputs(cfg)
    if not paths:
        raise UsageError("No training data was provided to the compile command. Use the `ground_truth` argument.")

    linetype = "bbox" if cfg.format_type == "path" else (cfg.linetype or "baselines")
    dataset_type = DATASET_TYPES[linetype]
    if cfg.force_type is not None:
        dataset_type = FORCE_TYPES[cfg.force_type]
        logger.warning("Forcing dataset type to %s", dataset_type)
    chunk = PATH_CHUNK if cfg.format_type == "path" else 1
    tasks = [
        _Task(paths[i : i + chunk], cfg.format_type, linetype, cfg.legacy_polygons, cfg.skip_empty_lines)
        for i in range(0, len(paths), chunk)
    ]

    summary = CompileSummary(output=cfg.output, dataset_type=dataset_type)
    skipped: Counter[str] = Counter()
    alphabet: Counter[str] = Counter()
    languages: Counter[str] = Counter()
    im_mode: str | None = None
    unit = "images" if cfg.format_type == "path" else "pages"
    remove_stale_partials(cfg.output)
    writer = ArrowWriter(cfg.output, cfg.recordbatch_size)
    # Workers are forked before the progress bar starts its refresh thread.
    pool = _pool(num_workers, len(tasks))
    bar = _progress(progress)
    try:
        results = pool.imap(_work, tasks, chunksize=1) if pool is not None else map(_work, tasks)
        job = bar.add_task(f"compiling {unit}", total=len(paths)) if bar else None
        if bar:
            bar.start()
        for task, res in zip(tasks, results):
            for item in res.skipped:
                logger.warning("skipped %s", item)
            skipped.update(res.skip_counts)
            summary.pages += res.pages
            summary.pages_failed += res.pages_failed
            summary.page_errors += res.page_errors
            if res.mode is not None:
                im_mode = max_mode(im_mode, res.mode)
            for text, png, lang, split in res.lines:
                writer.add(text, png, lang, split)
                alphabet.update(text)
                languages.update(lang or ())
            if bar:
                bar.advance(job, len(task.paths))
        if bar:
            bar.stop()
        summary.skipped = dict(skipped)
        summary.lines_written = writer.count
        summary.im_mode = im_mode
        if writer.count == 0:
            raise NoDataError(_no_data_reason(summary, len(paths), unit))
        counts = {"all": writer.count, **{s: writer.split_counts.get(s, 0) for s in ("train", "validation", "test")}}
        meta = build_metadata(dataset_type, alphabet, im_mode or "1", cfg.legacy_polygons, languages, counts)
        writer.finish(meta)
    except BaseException:
        if bar:
            bar.stop()
        writer.abort()
        raise
    finally:
        if pool is not None:
            pool.terminate()
            pool.join()
    summary.seconds = time.perf_counter() - started
    return summary


def _no_data_reason(summary: CompileSummary, n_inputs: int, unit: str) -> str:
    why = [f"no lines could be compiled from {n_inputs} input {unit}"]
    if summary.pages_failed:
        shown = "; ".join(summary.page_errors[:3]) + ("; ..." if len(summary.page_errors) > 3 else "")
        why.append(f"{summary.pages_failed} of them could not be used ({shown})")
    if summary.skipped:
        why.append("skipped lines: " + ", ".join(f"{n} {r}" for r, n in summary.skipped.items()))
    elif not summary.pages_failed:
        why.append("the inputs contain no text lines")
    return "; ".join(why)


def _progress(enabled: bool):
    if not enabled or not sys.stderr.isatty() or os.environ.get("TERM") == "dumb":
        return None
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        transient=False,
    )

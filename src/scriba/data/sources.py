"""Where lines come from: manifests, globs, and the five input formats as :class:`LineRecord` streams.

Formats: ``path`` (a line image with its transcription in ``<stem>.gt.txt``, every suffix of the image name
stripped), ``xml`` (ALTO or PageXML, detected per file), ``alto``, ``page``, and ``binary`` (a compiled
``.arrow`` dataset). Items that cannot be used are handed to ``on_skip`` (by default: a logged warning).
"""

from __future__ import annotations

import glob
import logging
import os
from collections.abc import Callable, Iterable, Iterator

from scriba.data.records import LineRecord, SkippedItem
from scriba.errors import InputError, UsageError

logger = logging.getLogger(__name__)

FORMAT_TYPES = ("path", "xml", "alto", "page", "binary")

SkipHandler = Callable[[SkippedItem], None]
# missing manifest entries warned about one by one; beyond that, one line counts them
MISSING_SHOWN = 5


def warn_skip(item: SkippedItem) -> None:
    logger.warning("skipped %s", item)


def read_manifest(path: str | os.PathLike) -> list[str]:
    """The files a manifest lists, one per line (blank lines ignored).

    An entry that is relative and does not exist from the current directory is looked up relative to the
    manifest's folder. Entries that exist in neither place are left out with a warning naming the manifest
    (as kraken does); a manifest that is missing, not text, empty, or none of whose entries exist is a
    :class:`UsageError`.
    """
    path = os.fspath(path)
    try:
        with open(path, "rb") as fh:
            raw = fh.read()
    except OSError as e:
        raise UsageError(f"manifest cannot be read: {e.strerror or e}", path=path) from None
    if b"\0" in raw:
        raise UsageError("manifest is a binary file, not a list of paths (one per line)", path=path)
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise UsageError("manifest is not UTF-8 text (one path per line)", path=path) from None
    base = os.path.dirname(os.path.abspath(path))
    entries: list[str] = []
    missing: list[str] = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        entry = line.strip()
        if not entry:
            continue
        if os.path.isfile(entry):
            entries.append(entry)
            continue
        candidate = os.path.join(base, entry)
        if not os.path.isabs(entry) and os.path.isfile(candidate):
            entries.append(os.path.normpath(candidate))
            continue
        missing.append(entry)
        if len(missing) <= MISSING_SHOWN:
            logger.warning('Invalid entry "%s" in %s (line %d): no such file', entry, path, lineno)
    if not missing and not entries:
        raise UsageError("manifest lists no files (it is empty)", path=path)
    if missing and not entries:
        # every entry missing: a manifest written relative to another folder, not a few stray lines
        raise UsageError(
            f"none of its {len(missing)} entries exists (first: {missing[0]!r}; relative entries are looked up "
            f"from the current directory and from {base})",
            path=path,
        )
    if len(missing) > MISSING_SHOWN:
        logger.warning("%d of the %d entries in %s do not exist", len(missing), len(missing) + len(entries), path)
    return entries


def expand_paths(paths: Iterable[str | os.PathLike]) -> list[str]:
    """Glob-expand (``**`` recursive) ``paths``, keeping files only, in the order given."""
    out: list[str] = []
    for p in paths:
        p = os.fspath(p)
        if glob.has_magic(p):
            matches = sorted(m for m in glob.glob(p, recursive=True) if os.path.isfile(m))
            if not matches:
                logger.warning("%s matches no file", p)
            out.extend(matches)
        elif os.path.isfile(p):
            out.append(p)
        elif os.path.isdir(p):
            logger.warning("%s is a folder; give the files in it (e.g. %s)", p, os.path.join(p, "*"))
        else:
            logger.warning("%s: no such file", p)
    return out


# Files with these endings are manifests (one data file per line) wherever the library takes data files.
MANIFEST_SUFFIXES = (".lst", ".list", ".txt")


def is_manifest(path: str | os.PathLike) -> bool:
    """Whether ``path`` names a manifest (``.lst``, ``.list``, ``.txt``; a line's ``.gt.txt`` is not one)."""
    name = os.path.basename(os.fspath(path)).lower()
    return name.endswith(MANIFEST_SUFFIXES) and not name.endswith(".gt.txt")


def resolve_inputs(entries: Iterable[str | os.PathLike] | str | os.PathLike) -> list[str]:
    """The data files of what the library takes as data: files, globs (``**`` recursive) and manifests
    (:func:`is_manifest`, read with :func:`read_manifest`), in the order given. Data files pass unchanged,
    so resolving twice gives the same list."""
    if isinstance(entries, (str, os.PathLike)):
        entries = [entries]
    out: list[str] = []
    for path in expand_paths(entries):
        out.extend(read_manifest(path) if is_manifest(path) else [path])
    return out


def gt_path(image_path: str) -> str:
    """The transcription file of a line image: every suffix stripped, ``.gt.txt`` added (``a.b.png`` -> ``a.gt.txt``)."""
    folder, name = os.path.split(image_path)
    stem = name.split(".", 1)[0] if not name.startswith(".") else "." + name[1:].split(".", 1)[0]
    return os.path.join(folder, stem + ".gt.txt")


def read_path_record(image_path: str) -> LineRecord:
    """A ``path``-format line; raises :class:`InputError` when its transcription is missing or unreadable."""
    if image_path.endswith(".gt.txt"):
        raise InputError("is a transcription, not a line image (list the images)", path=image_path)
    txt = gt_path(image_path)
    try:
        with open(txt, encoding="utf-8") as fh:
            text = fh.read().strip("\n\r")
    except FileNotFoundError:
        raise InputError(f"no transcription file {txt}", path=image_path) from None
    except UnicodeDecodeError as e:
        raise InputError(f"transcription {txt} is not UTF-8 text (byte {e.start})", path=image_path) from None
    except OSError as e:
        raise InputError(f"transcription {txt} cannot be read: {e.strerror or e}", path=image_path) from None
    return LineRecord(id=image_path, source=image_path, text=text, image=image_path, kind="bbox")


def iter_records(
    paths: Iterable[str | os.PathLike],
    format_type: str,
    linetype: str | None = None,
    on_skip: SkipHandler | None = warn_skip,
) -> Iterator[LineRecord]:
    """Every line of ``paths`` (files, already expanded) in the given format, in input order.

    ``linetype`` ('baselines'/'bbox', default baselines) applies to XML formats; path lines are bbox lines
    (the whole image) and binary lines keep the dataset's type. Lines with empty text are yielded; callers
    decide whether to keep them.
    """
    if format_type not in FORMAT_TYPES:
        raise UsageError(f"invalid format {format_type!r} (expected one of {', '.join(FORMAT_TYPES)})")
    skip = on_skip or (lambda item: None)
    for p in paths:
        p = os.fspath(p)
        if format_type == "path":
            try:
                yield read_path_record(p)
            except InputError as e:
                skip(SkippedItem(p, None, _bare(e, p)))
        elif format_type == "binary":
            yield from _binary_records(p, skip)
        else:
            from scriba.data.xml import parse_page

            try:
                _, lines = parse_page(p, format_type, linetype or "baselines", on_skip=skip)
            except InputError as e:
                skip(SkippedItem(p, None, _bare(e, p)))
                continue
            yield from lines


def _binary_records(path: str, skip: SkipHandler) -> Iterator[LineRecord]:
    from scriba.data.arrow import ArrowDataset

    try:
        ds = ArrowDataset(path)
    except InputError as e:
        skip(SkippedItem(path, None, _bare(e, path)))
        return
    kind = ds.seg_type or "bbox"
    for i in range(len(ds)):
        try:
            image = ds.image_bytes(i)
        except InputError:  # a null image: the row is left out, the others are kept
            skip(SkippedItem(path, f"row {i}", "row has no image"))
            continue
        yield LineRecord(
            id=str(i),
            source=path,
            text=ds.text(i),
            kind=kind,
            language=ds.language(i),
            image_bytes=image,
            split=ds.split(i),
        )


def _bare(err: InputError, path: str) -> str:
    """An error's message without the leading ``path: `` (the skipped item names the file itself)."""
    msg = str(err)
    prefix = f"{path}: "
    return msg[len(prefix) :] if msg.startswith(prefix) else msg

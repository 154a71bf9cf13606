"""Compiled line datasets in kraken 7's Arrow IPC layout.

Schema (exactly kraken's): a struct column ``lines{text: string, im: binary (PNG), language: list<string>}``
and three bool columns ``train``/``validation``/``test``; the schema metadata key ``lines`` holds a JSON
record (dataset type, alphabet, image mode, legacy polygon flag, languages, counts). Old kraken files have
no ``language`` field and no ``legacy_polygons``/``languages`` metadata; the reader accepts them.
"""

from __future__ import annotations

import bisect
import json
import os
from collections import Counter
from collections.abc import Iterable
from typing import Any

import pyarrow as pa

from scriba.errors import InputError, UsageError

LINE_TYPE = pa.struct([("text", pa.string()), ("im", pa.binary()), ("language", pa.list_(pa.string()))])
SCHEMA = pa.schema([("lines", LINE_TYPE), ("train", pa.bool_()), ("validation", pa.bool_()), ("test", pa.bool_())])
SEG_TYPES = {"kraken_recognition_baseline": "baselines", "kraken_recognition_bbox": "bbox"}
DATASET_TYPES = {"baselines": "kraken_recognition_baseline", "bbox": "kraken_recognition_bbox"}
FORCE_TYPES = {
    "bbox": "kraken_recognition_bbox",
    "baseline": "kraken_recognition_baseline",
    "baselines": "kraken_recognition_baseline",
}
SPLITS = ("train", "validation", "test")


def max_mode(a: str | None, b: str) -> str:
    """kraken's image mode bookkeeping: the larger mode name wins ('1' < 'L' < 'RGB')."""
    return b if a is None or b > a else a


def build_metadata(
    dataset_type: str,
    alphabet: Counter[str] | dict[str, int],
    im_mode: str,
    legacy_polygons: bool,
    languages: Counter[str] | dict[str, int],
    counts: dict[str, int],
) -> dict[str, Any]:
    """The ``lines`` metadata record, keys in kraken's order."""
    return {
        "type": dataset_type,
        "alphabet": dict(alphabet),
        "text_type": "raw",
        "image_type": "raw",
        "splits": ["train", "eval", "test"],
        "im_mode": im_mode,
        "legacy_polygons": bool(legacy_polygons),
        "languages": dict(languages),
        "counts": counts,
    }


class ArrowWriter:
    """Streams lines into a dataset file; the file appears under its name only after :meth:`finish`.

    Record batches go to a temporary file as they fill up; :meth:`finish` rewrites that into a second
    temporary file carrying the final schema metadata (known only at the end) and renames it.
    """

    def __init__(self, path: str | os.PathLike, recordbatch_size: int = 100):
        if recordbatch_size < 1:
            raise UsageError(f"record batch size must be at least 1, not {recordbatch_size}")
        self.path = os.fspath(path)
        folder = os.path.dirname(os.path.abspath(self.path))
        if not os.path.isdir(folder):
            raise UsageError(f"output folder {folder} does not exist", path=self.path)
        self._partial = f"{self.path}.partial-{os.getpid()}"
        self._final_tmp = f"{self.path}.tmp-{os.getpid()}"
        self.recordbatch_size = recordbatch_size
        self._rows: list[tuple[str, bytes, list[str] | None, str | None]] = []
        self.count = 0
        self.split_counts: Counter[str] = Counter()
        try:
            self._sink = pa.OSFile(self._partial, "wb")
        except OSError as e:
            raise UsageError(f"cannot write the dataset: {e}", path=self.path) from None
        self._writer = pa.ipc.new_file(self._sink, SCHEMA)

    def add(self, text: str, png: bytes, language: list[str] | None = None, split: str | None = None) -> None:
        self._rows.append((text, png, language, split))
        self.count += 1
        if split in SPLITS:
            self.split_counts[split] += 1
        if len(self._rows) >= self.recordbatch_size:
            self._flush()

    def _flush(self) -> None:
        if not self._rows:
            return
        texts, ims, langs, splits = zip(*self._rows)
        lines = pa.StructArray.from_arrays(
            [pa.array(texts, pa.string()), pa.array(ims, pa.binary()), pa.array(langs, pa.list_(pa.string()))],
            fields=list(LINE_TYPE),
        )
        flags = [pa.array([s == name for s in splits], pa.bool_()) for name in SPLITS]
        self._writer.write_batch(pa.RecordBatch.from_arrays([lines, *flags], schema=SCHEMA))
        self._rows = []

    def finish(self, metadata: dict[str, Any]) -> str:
        self._flush()
        self._writer.close()
        self._sink.close()
        try:
            with pa.memory_map(self._partial) as source:
                table = pa.ipc.open_file(source).read_all()
                schema = SCHEMA.with_metadata({"lines": json.dumps(metadata)})
                with pa.OSFile(self._final_tmp, "wb") as sink, pa.ipc.new_file(sink, schema) as writer:
                    for batch in table.to_batches(max_chunksize=self.recordbatch_size):
                        writer.write_batch(batch)
            os.replace(self._final_tmp, self.path)
        finally:
            self._cleanup()
        return self.path

    def abort(self) -> None:
        try:
            self._writer.close()
            self._sink.close()
        except Exception:  # a writer already closed or broken is fine to drop
            pass
        self._cleanup()

    def _cleanup(self) -> None:
        for tmp in (self._partial, self._final_tmp):
            if os.path.exists(tmp):
                os.remove(tmp)

    def __enter__(self) -> ArrowWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self.abort()


def write_dataset(
    path: str | os.PathLike,
    lines: Iterable[tuple[str, bytes, list[str] | None]],
    *,
    seg_type: str = "baselines",
    im_mode: str = "L",
    legacy_polygons: bool = False,
    recordbatch_size: int = 100,
) -> str:
    """Write ``(text, png_bytes, language)`` rows as a kraken dataset; alphabet and counts are computed."""
    alphabet: Counter[str] = Counter()
    languages: Counter[str] = Counter()
    with ArrowWriter(path, recordbatch_size) as writer:
        for text, png, lang in lines:
            writer.add(text, png, lang)
            alphabet.update(text)
            languages.update(lang or ())
        counts = {"all": writer.count, "train": 0, "validation": 0, "test": 0}
        meta = build_metadata(
            DATASET_TYPES.get(seg_type, seg_type), alphabet, im_mode, legacy_polygons, languages, counts
        )
        return writer.finish(meta)


def _check_schema(schema: pa.Schema, path: str) -> None:
    """Refuses tables that are not laid out as kraken's line datasets, naming the column or field at fault."""
    for name in ("lines", *SPLITS):
        if len(schema.get_all_field_indices(name)) > 1:
            raise InputError(f"column '{name}' appears more than once", path=path)
    lines = schema.field("lines").type
    if not pa.types.is_struct(lines):
        raise InputError(f"column 'lines' holds {lines}, not a struct of text and im (not a kraken dataset)", path=path)
    fields = {lines.field(i).name: lines.field(i).type for i in range(lines.num_fields)}
    expected = {
        "text": (pa.types.is_string, pa.types.is_large_string, "string"),
        "im": (pa.types.is_binary, pa.types.is_large_binary, "binary"),
    }
    for name, (small, large, kind) in expected.items():
        if name not in fields:
            raise InputError(f"column 'lines' has no '{name}' field (not a kraken dataset)", path=path)
        if not (small(fields[name]) or large(fields[name])):
            raise InputError(f"field 'lines.{name}' holds {fields[name]}, not {kind}", path=path)
    lang = fields.get("language")
    if lang is not None and not (
        (pa.types.is_list(lang) or pa.types.is_large_list(lang))
        and (pa.types.is_string(lang.value_type) or pa.types.is_large_string(lang.value_type))
    ):
        raise InputError(f"field 'lines.language' holds {lang}, not a list of strings", path=path)
    for name in SPLITS:
        if name in schema.names and not pa.types.is_boolean(schema.field(name).type):
            raise InputError(f"column '{name}' holds {schema.field(name).type}, not bool", path=path)


class ArrowDataset:
    """Random access to a compiled dataset (memory-mapped; picklable for data loader workers)."""

    def __init__(self, path: str | os.PathLike):
        self.path = os.fspath(path)
        try:
            self._source = pa.memory_map(self.path)
            table = pa.ipc.open_file(self._source).read_all()
        except FileNotFoundError:
            raise InputError("dataset file not found", path=self.path) from None
        except (OSError, pa.ArrowInvalid) as e:
            raise InputError(f"not an Arrow IPC dataset: {e}", path=self.path) from None
        raw = (table.schema.metadata or {}).get(b"lines")
        if raw is None or "lines" not in table.column_names:
            raise InputError("does not contain a valid metadata record (not a compiled line dataset)", path=self.path)
        try:
            self.metadata: dict[str, Any] = json.loads(raw)
        except ValueError:
            raise InputError("metadata record is not valid JSON", path=self.path) from None
        if not isinstance(self.metadata, dict):
            kind = {list: "an array", str: "a string", bool: "a boolean"}.get(type(self.metadata), "a number")
            kind = "null" if self.metadata is None else kind
            raise InputError(f"metadata record is {kind}, not a JSON object (not a kraken dataset)", path=self.path)
        _check_schema(table.schema, self.path)
        dtype = self.metadata.get("type")
        if dtype not in SEG_TYPES:
            raise InputError(f"unknown dataset type {dtype!r}", path=self.path)
        self.seg_type: str = SEG_TYPES[dtype]
        # kraken treats files that predate the flag as extracted with the legacy polygon code.
        self.legacy_polygons: bool = bool(self.metadata.get("legacy_polygons", True))
        mode = self.metadata.get("im_mode")
        self.im_mode: str | None = mode if isinstance(mode, str) else None
        column = table.column("lines")
        self._chunks = [c for c in column.chunks if len(c)]
        self._starts = [0]
        for c in self._chunks:
            self._starts.append(self._starts[-1] + len(c))
        self._ims = [c.field("im") for c in self._chunks]
        self._texts: list[str] = [t or "" for c in self._chunks for t in c.field("text").to_pylist()]
        has_language = any(f.name == "language" for f in column.type)
        self._languages: list[list[str] | None] | None = (
            [v for c in self._chunks for v in c.field("language").to_pylist()] if has_language else None
        )
        self._splits: list[str | None] = [None] * len(self._texts)
        for name in SPLITS:
            if name in table.column_names:
                for i, flag in enumerate(table.column(name).to_pylist()):
                    if flag and self._splits[i] is None:
                        self._splits[i] = name

    def __len__(self) -> int:
        return len(self._texts)

    def _check(self, i: int) -> int:
        if not -len(self) <= i < len(self):
            raise IndexError(f"row {i} out of range for {self.path} ({len(self)} rows)")
        return i % len(self) if len(self) else i

    def text(self, i: int) -> str:
        return self._texts[self._check(i)]

    def texts(self) -> list[str]:
        return list(self._texts)

    def image_bytes(self, i: int) -> bytes:
        i = self._check(i)
        k = bisect.bisect_right(self._starts, i) - 1
        value = self._ims[k][i - self._starts[k]].as_py()
        if value is None:
            raise InputError("row has no image", path=self.path, element=f"row {i}")
        return value

    def language(self, i: int) -> list[str] | None:
        i = self._check(i)
        return None if self._languages is None else self._languages[i]

    def split(self, i: int) -> str | None:
        return self._splits[self._check(i)]

    @property
    def has_language(self) -> bool:
        return self._languages is not None

    def __getstate__(self) -> dict[str, str]:
        return {"path": self.path}

    def __setstate__(self, state: dict[str, str]) -> None:
        self.__init__(state["path"])  # type: ignore[misc]

    def __repr__(self) -> str:
        return f"ArrowDataset({self.path!r}, {len(self)} lines, {self.seg_type})"

"""Line records to sample tensors: the dataset shared by training, validation, ``ketos test`` and pretraining.

Text transforms run once, when the dataset is built (training needs every text up front for the codec and
for filtering). Images are extracted and scaled on demand, or once for the whole set with :meth:`preload`,
which keeps the scaled lines as zlib-compressed 8-bit arrays (about 1/50 of the float size) and runs the
extraction in DataLoader worker processes. The cached arrays go through the line transform itself (told not to scale or
pad again), so cached and uncached samples are bit-identical; :meth:`preload` checks that on one line.
"""

from __future__ import annotations

import copy
import logging
import zlib
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from scriba.data.records import LineRecord

logger = logging.getLogger(__name__)


class LineDataset(Dataset):
    """``ds[i] -> {"image": (C, H, W) float tensor, "text", "labels": LongTensor | None, "id", "source", "index"}``.

    ``ds[(i, seed)]`` does the same with augmentation drawn from a generator seeded with ``seed`` (what
    :class:`~scriba.data.sampler.LengthBucketSampler` yields with ``with_seeds``); plain ``ds[i]`` augments
    with a fresh random seed. ``augment`` may be True (the default degradations) or a callable
    ``(image, generator) -> image``.
    """

    def __init__(
        self,
        records: Sequence[LineRecord],
        line_transform: Any,
        text_transform: Callable[..., str] | None,
        codec: Any = None,
        legacy_polygons: bool = False,
        augment: bool | Callable[..., torch.Tensor] = False,
        *,
        texts: Sequence[str] | None = None,
    ) -> None:
        self.records = list(records)
        self.line_transform = line_transform
        self.text_transform = text_transform
        self.legacy_polygons = legacy_polygons
        if texts is None:
            texts = [self._transform_text(r) for r in self.records]
        self.texts = list(texts)
        self.codec = codec
        self.labels: list[torch.Tensor] | None = None
        if codec is not None:
            self.labels = [torch.tensor(codec.encode(t), dtype=torch.long) for t in self.texts]
        self.augmenter: Callable[..., torch.Tensor] | None = None
        self.set_augment(augment)
        self._cache: list[_Packed | None] | None = None
        self._pages: _PageCache | None = None
        self._passthrough: Any = None

    def _transform_text(self, rec: LineRecord) -> str:
        tt = self.text_transform
        if tt is None:
            return rec.text
        # a direction given in the input file wins only when the user left --base-dir on auto
        explicit = getattr(tt, "base_dir", None)
        return tt(rec.text, rec.base_dir if explicit is None else None)

    def set_augment(self, augment: bool | Callable[..., torch.Tensor]) -> None:
        if augment is True:
            from scriba.data.augment import Augmenter

            self.augmenter = Augmenter()
        elif callable(augment):
            self.augmenter = augment
        else:
            self.augmenter = None

    def __len__(self) -> int:
        return len(self.records)

    def __getstate__(self) -> dict[str, Any]:
        # decoded pages stay with the process that decoded them
        state = dict(self.__dict__)
        state["_pages"] = None
        return state

    # -- images ------------------------------------------------------------------------------------------------

    def line_image(self, i: int) -> Any:
        """The extracted line (PIL image) of record ``i``, before scaling."""
        from scriba.data.extract import load_line_image

        if getattr(self, "_pages", None) is None:
            self._pages = _PageCache()
        return load_line_image(self.records[i], legacy_polygons=self.legacy_polygons, page_cache=self._pages)

    def scaled_array(self, i: int) -> np.ndarray:
        """Record ``i`` scaled and padded, as an 8-bit array (what the cache holds, compressed)."""
        return np.asarray(self.line_transform.to_image(self.line_image(i)), dtype=np.uint8)

    def _tensor(self, arr: np.ndarray) -> torch.Tensor:
        # the line transform itself, told to neither scale nor pad: identical results by construction
        if getattr(self, "_passthrough", None) is None:
            p = copy.copy(self.line_transform)
            p.scale, p.padding, p.center_normalize = (0, 0), 0, False
            self._passthrough = p
        from PIL import Image

        return self._passthrough(Image.fromarray(arr))

    def image(self, i: int) -> torch.Tensor:
        """The un-augmented sample tensor of record ``i``."""
        packed = self._cache[i] if self._cache is not None else None
        if packed is not None:
            return self._tensor(packed.unpack())
        return self.line_transform(self.line_image(i))

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, Any]:
        seed: int | None = None
        if isinstance(key, tuple):
            i, seed = int(key[0]), int(key[1])
        else:
            i = int(key)
        img = self.image(i)
        if self.augmenter is not None:
            g = torch.Generator()
            g.manual_seed(seed if seed is not None else int(torch.randint(0, 2**62, (1,))))
            img = self.augmenter(img, g)
        rec = self.records[i]
        return {
            "image": img,
            "text": self.texts[i],
            "labels": None if self.labels is None else self.labels[i],
            "id": rec.id,
            "source": rec.source,
            "index": i,
        }

    # -- caching and sizes -------------------------------------------------------------------------------------

    @property
    def cached(self) -> bool:
        return self._cache is not None

    def estimated_widths(self) -> list[int]:
        """Sample widths guessed from image headers or geometry (no decoding); exact after :meth:`preload`."""
        if self._cache is not None:
            return [int(a.shape[1]) if a is not None else 0 for a in self._cache]
        return [self._estimate_width(r) for r in self.records]

    def _estimate_width(self, rec: LineRecord) -> int:
        lt = self.line_transform
        height = getattr(lt, "height", 0)
        pad = 2 * getattr(lt, "padding", 0)
        w, h = _line_size(rec)
        if height and h > 0:
            return int(w * height / h) + pad
        return int(w) + pad

    def estimated_bytes(self) -> int:
        """Roughly what :meth:`preload` would keep in memory (assuming a modest 4x compression)."""
        if self._cache is not None:
            return sum(p.nbytes for p in self._cache if p is not None)
        lt = self.line_transform
        h = getattr(lt, "height", 0) or 64
        c = 3 if getattr(lt, "channels", 1) == 3 else 1
        return sum(self.estimated_widths()) * h * c // 4

    def preload(self, num_workers: int = 0, on_error: Callable[[int, str], None] | None = None) -> list[int]:
        """Extracts and scales every line once and keeps it in memory; returns the indices that failed."""
        cache: list[_Packed | None] = [None] * len(self)
        failed: list[int] = []
        loader = DataLoader(
            _Scaler(self),
            batch_size=None,
            collate_fn=_as_is,
            num_workers=num_workers,
            generator=torch.Generator(),
            worker_init_fn=ignore_sigint,
        )
        for i, arr, err in loader:
            if err is not None:
                failed.append(i)
                if on_error is not None:
                    on_error(i, err)
            else:
                cache[i] = arr
        self._cache = cache
        ok = next((i for i, p in enumerate(cache) if p is not None), None)
        if ok is not None and not torch.equal(self.image(ok), self.line_transform(self.line_image(ok))):
            logger.warning("cached lines differ from freshly transformed ones: not caching")
            self._cache = None
        return failed

    def subset(self, indices: Sequence[int], augment: bool | Callable[..., torch.Tensor] | None = None) -> LineDataset:
        """A dataset over some records, sharing texts, labels and cached images."""
        ds = LineDataset.__new__(LineDataset)
        ds.records = [self.records[i] for i in indices]
        ds.line_transform = self.line_transform
        ds.text_transform = self.text_transform
        ds.legacy_polygons = self.legacy_polygons
        ds.texts = [self.texts[i] for i in indices]
        ds.codec = self.codec
        ds.labels = None if self.labels is None else [self.labels[i] for i in indices]
        ds.augmenter = self.augmenter
        if augment is not None:
            ds.set_augment(augment)
        ds._cache = None if self._cache is None else [self._cache[i] for i in indices]
        ds._pages = None
        ds._passthrough = None
        return ds

    def image_mode(self, sample: int = 64) -> str:
        """kraken's ``one_channel_mode`` of the data: '1' (bitonal), 'L' or 'RGB', the highest over lines."""
        from scriba.data.transforms import image_mode

        n = len(self)
        idx = range(n) if n <= sample else np.linspace(0, n - 1, sample).astype(int).tolist()
        best = "1"
        for i in idx:
            try:
                mode = image_mode(self.image(i))
            except Exception:  # noqa: BLE001 - unreadable lines are reported by whoever loads them
                continue
            if mode.encode() > best.encode():
                best = mode
        return best


class _Packed:
    """A scaled line, zlib-compressed: inverted lines are mostly zeros, so this is ~10x smaller than the array
    and decompresses in a fraction of a millisecond (small next to a training step)."""

    __slots__ = ("data", "dtype", "shape")

    def __init__(self, arr: np.ndarray) -> None:
        self.shape = tuple(arr.shape)
        self.dtype = arr.dtype.str
        self.data = zlib.compress(np.ascontiguousarray(arr).tobytes(), 1)

    def unpack(self) -> np.ndarray:
        return np.frombuffer(zlib.decompress(self.data), dtype=np.dtype(self.dtype)).reshape(self.shape)

    @property
    def nbytes(self) -> int:
        return len(self.data)


class _PageCache(OrderedDict):
    """The last few decoded pages: consecutive lines of an XML page are cut from one decoded image."""

    def __init__(self, size: int = 2) -> None:
        super().__init__()
        self.size = size

    def __setitem__(self, key: Any, value: Any) -> None:
        super().__setitem__(key, value)
        self.move_to_end(key)
        while len(self) > self.size:
            self.popitem(last=False)


class _Scaler(Dataset):
    def __init__(self, ds: LineDataset) -> None:
        self.ds = ds

    def __len__(self) -> int:
        return len(self.ds)

    def __getitem__(self, i: int) -> tuple[int, _Packed | None, str | None]:
        try:
            return i, _Packed(self.ds.scaled_array(i)), None
        except Exception as exc:  # noqa: BLE001 - reported by the caller with the line's name
            return i, None, str(exc) or type(exc).__name__


def _as_is(item: Any) -> Any:
    return item


def ignore_sigint(_worker_id: int = 0) -> None:
    """Worker processes leave Ctrl-C to the main process, which saves a checkpoint and stops them."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _line_size(rec: LineRecord) -> tuple[float, float]:
    from scriba.data.images import header_size

    size: tuple[float, float] | None
    if rec.image_bytes is not None:
        size = header_size(rec.image_bytes)
    elif rec.boundary:
        xs = [p[0] for p in rec.boundary]
        ys = [p[1] for p in rec.boundary]
        size = max(xs) - min(xs), max(ys) - min(ys)
    elif rec.bbox is not None:
        size = rec.bbox[2] - rec.bbox[0], rec.bbox[3] - rec.bbox[1]
    elif rec.image is not None:
        size = header_size(rec.image)
    else:
        size = None
    if size is None:
        return 0.0, 0.0
    w, h = size
    if rec.vertical:
        w, h = h, w
    return float(w), float(h)

"""Length-bucketed batches: lines of similar width go together, so little compute is spent on padding.

Each epoch the lines are shuffled, cut into pools of ``pool_batches`` batches, each pool is sorted by width
(randomly perturbed by up to ``jitter``, so that batches mix differently every epoch) and cut into batches,
and the batches are shuffled (in the first ``sorted_epochs`` epochs they run shortest first instead). Everything is drawn from a generator seeded with
``(seed, epoch)``, so an epoch's batches depend only on the seed and the epoch number: a resumed run sees
the same batches as an uninterrupted one. ``load_state_dict`` can also skip the batches of an epoch that
were consumed before an interruption.

Batches are lists of ``(index, augmentation_seed)`` pairs when ``with_seeds`` is set, so that random
augmentation is reproducible whichever worker process draws the sample.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch.utils.data import Sampler


class LengthBucketSampler(Sampler):
    """Batch sampler over ``len(widths)`` samples; use as a DataLoader's ``batch_sampler``."""

    def __init__(
        self,
        widths: Sequence[int],
        batch_size: int,
        shuffle: bool = True,
        seed: int = 0,
        pool_batches: int = 50,
        with_seeds: bool = False,
        jitter: float = 0.03,
        micro_batch: int | None = None,
        sorted_epochs: int = 0,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch size must be positive, got {batch_size}")
        self.widths = torch.as_tensor(list(widths), dtype=torch.long)
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = int(seed)
        self.pool = max(1, pool_batches) * batch_size
        self.with_seeds = with_seeds
        self.jitter = jitter
        self.sorted_epochs = sorted_epochs
        # each batch is handed out as chunks of this many lines (gradient accumulation does the rest)
        self.micro = micro_batch if micro_batch and micro_batch < batch_size else batch_size
        self.epoch = 0
        self._skip = 0
        # number of this epoch's batches that training has finished (set by the training loop)
        self.consumed = 0

    def __len__(self) -> int:
        n, b, m = len(self.widths), self.batch_size, self.micro
        return (n // b) * -(-b // m) + -(-(n % b) // m)

    def set_epoch(self, epoch: int) -> None:
        if epoch != self.epoch:
            self.epoch = epoch
            self._skip = 0
            self.consumed = 0

    def batches(self, epoch: int | None = None) -> list[list[int]]:
        """All batches (micro-batches, if set) of an epoch, in order (indices only)."""
        full = self._full_batches(self.epoch if epoch is None else epoch)
        if self.micro >= self.batch_size:
            return full
        return [b[i : i + self.micro] for b in full for i in range(0, len(b), self.micro)]

    def _full_batches(self, epoch: int) -> list[list[int]]:
        n = len(self.widths)
        if n == 0:
            return []
        if not self.shuffle:
            # widest first: the first batch shows at once whether memory suffices
            order = torch.argsort(self.widths, descending=True, stable=True)
            return [order[i : i + self.batch_size].tolist() for i in range(0, n, self.batch_size)]
        g = self._generator(epoch)
        perm = torch.randperm(n, generator=g)
        # sorting by a slightly noisy width changes which lines share a batch from epoch to epoch (even when
        # the whole set fits in one pool) at the cost of a little padding
        noise = torch.empty(n).uniform_(-self.jitter, self.jitter, generator=g).exp()
        keys = self.widths.float() * noise
        out: list[list[int]] = []
        for start in range(0, n, self.pool):
            chunk = perm[start : start + self.pool]
            chunk = chunk[torch.argsort(keys[chunk], descending=True, stable=True)]
            out.extend(chunk[i : i + self.batch_size].tolist() for i in range(0, len(chunk), self.batch_size))
        if epoch < self.sorted_epochs:
            # shortest batches first (SortaGrad, Amodei et al. 2016): short lines give CTC few alignments to
            # choose from, so the network leaves the all-blank plateau sooner
            return sorted(out, key=lambda b: (int(self.widths[b].max()), b))
        return [out[i] for i in torch.randperm(len(out), generator=g).tolist()]

    def _generator(self, epoch: int) -> torch.Generator:
        g = torch.Generator()
        g.manual_seed((self.seed * 1_000_003 + epoch) % (2**63))
        return g

    def __iter__(self) -> Iterator[list[Any]]:
        batches = self.batches()
        skip, self._skip = self._skip, 0
        if not self.with_seeds:
            yield from batches[skip:]
            return
        g = self._generator(self.epoch + 7919)
        seeds = torch.randint(0, 2**62, (sum(len(b) for b in batches),), generator=g).tolist()
        pos = 0
        for i, b in enumerate(batches):
            if i >= skip:
                yield list(zip(b, seeds[pos : pos + len(b)]))
            pos += len(b)

    def state_dict(self) -> dict[str, int]:
        """Where training stands: a fully consumed epoch resumes at the start of the next one."""
        if self.consumed >= len(self):
            return {"epoch": self.epoch + 1, "skip": 0}
        return {"epoch": self.epoch, "skip": self.consumed}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.epoch = int(state.get("epoch", 0))
        self._skip = int(state.get("skip", 0))
        self.consumed = self._skip

    def padding_waste(self, epoch: int | None = None) -> float:
        """Fraction of the batched pixels that are padding (a figure for tests and benchmarks)."""
        total = used = 0
        for b in self.batches(epoch):
            w = self.widths[b]
            total += int(w.max()) * len(b)
            used += int(w.sum())
        return 1.0 - used / total if total else 0.0

"""Length-bucketed batches: lines of similar width go together, so little compute is spent on padding.

Each epoch the lines are shuffled, cut into pools of ``pool_batches`` batches, each pool is sorted by width
(randomly perturbed by up to ``jitter``, so that batches mix differently every epoch) and cut into batches,
and the batches are shuffled (in the first ``sorted_epochs`` epochs they run shortest first instead). Everything is drawn from a generator seeded with
``(seed, epoch)``, so an epoch's batches depend only on the seed and the epoch number: a resumed run sees
the same batches as an uninterrupted one. ``load_state_dict`` can also skip the batches of an epoch that
were consumed before an interruption.

Batches are lists of ``(index, augmentation_seed)`` pairs when ``with_seeds`` is set, so that random
augmentation is reproducible whichever worker process draws the sample.

Under DDP (``set_shard(rank, world)``) every process computes the same epoch of whole batches and takes
every ``world``-th one, so batches stay length-bucketed per process and each line is seen once per epoch.
All processes must run the same number of steps (a process with one batch more would wait for the others
forever in its gradient all-reduce), so the batches left over after the round-robin, and the one short
batch, are pooled, sorted by width and cut into one near-equal part per process, each split into the same
number of micro-batches.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from itertools import chain
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
        # whole batches of the epoch that ran before a resume with another number of processes, and the
        # batches the training loop counts as done for them
        self._start = 0
        self._offset = 0
        self.rank, self.world = 0, 1
        self.equal_steps = True
        # number of this epoch's batches that training has finished (set by the training loop)
        self.consumed = 0

    def set_shard(self, rank: int, world: int, *, equal_steps: bool = True) -> None:
        """Makes this sampler serve process ``rank`` of ``world`` (DDP). Without ``equal_steps`` (validation,
        where the processes do not synchronise per batch) the batches are simply dealt out, unchanged."""
        if not 0 <= rank < world:
            raise ValueError(f"rank {rank} is not one of {world} processes")
        self.rank, self.world = int(rank), int(world)
        self.equal_steps = equal_steps

    def __len__(self) -> int:
        n, b, m = len(self.widths), self.batch_size, self.micro
        if self._start:
            # only after a resume with another number of processes: the short batch may be behind or ahead
            return len(self.batches())
        if self.world == 1:
            return (n // b) * -(-b // m) + -(-(n % b) // m)
        if not self.equal_steps:
            return len(self.batches())
        whole, tail = self._shard_sizes()
        return whole * -(-b // m) + self._tail_pieces(tail)

    def _shard_sizes(self) -> tuple[int, int]:
        """Whole batches per process and lines in the pooled tail of an epoch."""
        n, b = len(self.widths), self.batch_size
        whole = n // b // self.world
        tail = (n // b - whole * self.world) * b + n % b
        if 0 < tail < self.world and whole:
            # too few lines to go round: one round of whole batches joins them rather than repeat lines
            whole, tail = whole - 1, tail + self.world * b
        return whole, tail

    def _tail_pieces(self, tail: int) -> int:
        """Micro-batches of each process's share of a tail of ``tail`` lines (the same on every process)."""
        return -(-max(1, -(-tail // self.world)) // self.micro) if tail else 0

    def set_epoch(self, epoch: int) -> None:
        if epoch != self.epoch:
            self.epoch = epoch
            self._skip = 0
            self._start = 0
            self._offset = 0
            self.consumed = 0

    def batches(self, epoch: int | None = None) -> list[list[int]]:
        """This process's batches (micro-batches, if set) of an epoch, in order (indices only)."""
        full = self._full_batches(self.epoch if epoch is None else epoch)[self._start :]
        if self.world == 1:
            return self._micro(full)
        if not self.equal_steps:
            return self._micro(full[self.rank :: self.world])
        whole = [b for b in full if len(b) == self.batch_size]
        short = [b for b in full if len(b) < self.batch_size]
        dealt = len(whole) // self.world * self.world
        if 0 < sum(map(len, whole[dealt:] + short)) < self.world and dealt:
            dealt -= self.world  # as in _shard_sizes
        rest = whole[dealt:] + short
        out = self._micro(whole[self.rank : dealt : self.world])
        pieces = self._tail_pieces(sum(len(b) for b in rest))
        if pieces:
            part = self._tail_part(rest)
            out.extend(part[i * len(part) // pieces : (i + 1) * len(part) // pieces] for i in range(pieces))
        return out

    def _micro(self, batches: list[list[int]]) -> list[list[int]]:
        if self.micro >= self.batch_size:
            return batches
        return [b[i : i + self.micro] for b in batches for i in range(0, len(b), self.micro)]

    def _tail_part(self, batches: list[list[int]]) -> list[int]:
        """This process's near-equal share of the pooled leftover batches, widest lines first."""
        lines = sorted(chain.from_iterable(batches), key=lambda i: (-int(self.widths[i]), i))
        if not lines:
            return []
        if len(lines) < self.world:
            # too few lines to go round: some are repeated rather than leave a process without a batch
            lines = (lines * self.world)[: self.world]
        k, r = divmod(len(lines), self.world)
        start = self.rank * k + min(self.rank, r)
        return lines[start : start + k + (self.rank < r)]

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
        # one seed per line (not per position), so that a line's augmentation does not depend on the shard
        g = self._generator(self.epoch + 7919)
        seeds = torch.randint(0, 2**62, (len(self.widths),), generator=g).tolist()
        for b in batches[skip:]:
            yield [(i, seeds[i]) for i in b]

    def state_dict(self) -> dict[str, int]:
        """Where training stands: a fully consumed epoch resumes at the start of the next one."""
        done = self.consumed - self._offset
        if done >= len(self):
            state = {"epoch": self.epoch + 1, "skip": 0}
        else:
            state = {"epoch": self.epoch, "skip": done}
            if self._start:
                state["start"] = self._start
        if self.world > 1:
            state["world"] = self.world
        return state

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.epoch = int(state.get("epoch", 0))
        skip, start, world = int(state.get("skip", 0)), int(state.get("start", 0)), int(state.get("world", 1))
        if world != self.world and skip:
            # a run continued with another number of processes: each old process ran `skip` batches of its
            # own shard; restart at the first whole batch none of them had reached (a few lines run twice)
            start += skip // -(-self.batch_size // self.micro) * world
            # the training loop goes on counting from its own restored position
            self._offset = skip
            skip = 0
        self._start = start
        self._skip = skip
        self.consumed = self._skip + self._offset

    def padding_waste(self, epoch: int | None = None) -> float:
        """Fraction of the batched pixels that are padding (a figure for tests and benchmarks)."""
        total = used = 0
        for b in self.batches(epoch):
            w = self.widths[b]
            total += int(w.max()) * len(b)
            used += int(w.sum())
        return 1.0 - used / total if total else 0.0

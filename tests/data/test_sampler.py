"""LengthBucketSampler: coverage, reproducibility, little padding, resumable position."""

from __future__ import annotations

import random

import pytest

from scriba.data.sampler import LengthBucketSampler


@pytest.fixture
def widths():
    rng = random.Random(0)
    return [rng.randint(100, 3000) for _ in range(1003)]


def test_every_index_once_per_epoch(widths):
    s = LengthBucketSampler(widths, 16, seed=1)
    batches = list(s)
    assert len(batches) == len(s) == 63
    flat = sorted(i for b in batches for i in b)
    assert flat == list(range(len(widths)))
    assert sum(1 for b in batches if len(b) < 16) <= 1


def test_reproducible_per_seed_and_epoch(widths):
    a, b = LengthBucketSampler(widths, 8, seed=3), LengthBucketSampler(widths, 8, seed=3)
    assert list(a) == list(b)
    first = list(a)
    a.set_epoch(1)
    assert list(a) != first
    assert list(LengthBucketSampler(widths, 8, seed=4)) != first


def test_little_padding_compared_with_random_batches(widths):
    s = LengthBucketSampler(widths, 16, seed=0)
    rng = random.Random(0)
    order = list(range(len(widths)))
    rng.shuffle(order)
    total = used = 0
    for i in range(0, len(order), 16):
        b = [widths[j] for j in order[i : i + 16]]
        total += max(b) * len(b)
        used += sum(b)
    random_waste = 1 - used / total
    assert s.padding_waste() < 0.05 < random_waste


def test_no_shuffle_is_widest_first(widths):
    s = LengthBucketSampler(widths, 10, shuffle=False)
    flat = [widths[i] for b in s for i in b]
    assert flat == sorted(widths, reverse=True)


def test_state_skips_consumed_batches(widths):
    s = LengthBucketSampler(widths, 16, seed=5)
    s.set_epoch(2)
    full = list(s)
    s.consumed = 10
    state = s.state_dict()
    assert state == {"epoch": 2, "skip": 10}
    t = LengthBucketSampler(widths, 16, seed=5)
    t.load_state_dict(state)
    t.set_epoch(2)  # Lightning sets the epoch again: the pending skip must survive
    assert list(t) == full[10:]
    assert list(t) == full  # only the first pass after loading skips
    s.consumed = len(s)
    assert s.state_dict() == {"epoch": 3, "skip": 0}


def test_with_seeds_pairs_are_stable(widths):
    s = LengthBucketSampler(widths, 4, seed=1, with_seeds=True)
    a = list(s)
    assert all(isinstance(x, tuple) and len(x) == 2 for b in a for x in b)
    assert a == list(s)
    plain = LengthBucketSampler(widths, 4, seed=1)
    assert [[i for i, _ in b] for b in a] == list(plain)
    s.load_state_dict({"epoch": 0, "skip": 3})
    assert list(s) == a[3:]


def test_empty_and_bad_batch_size():
    assert list(LengthBucketSampler([], 4)) == []
    with pytest.raises(ValueError):
        LengthBucketSampler([1], 0)


def test_batch_composition_varies_even_in_one_pool():
    widths = list(range(100, 132))
    s = LengthBucketSampler(widths, 8, seed=0)
    sets = []
    for epoch in range(3):
        s.set_epoch(epoch)
        sets.append({frozenset(b) for b in s})
    assert sets[0] != sets[1] != sets[2]


@pytest.mark.parametrize("batch", [1, 8])
def test_sorted_first_epoch_runs_shortest_batches_first_then_shuffles(widths, batch):
    s = LengthBucketSampler(widths, batch, seed=2, sorted_epochs=1)
    first = list(s)
    longest = [max(widths[i] for i in b) for b in first]
    assert longest == sorted(longest)
    assert sorted(i for b in first for i in b) == list(range(len(widths)))
    s.set_epoch(1)
    later = [max(widths[i] for i in b) for b in s]
    assert later != sorted(later)
    # the sorted epoch resumes at the same place
    r = LengthBucketSampler(widths, batch, seed=2, sorted_epochs=1)
    r.load_state_dict({"epoch": 0, "skip": 5})
    assert list(r) == first[5:]

"""The benchmark reuses kraken's equal-epochs accuracy run as its time-to-accuracy run only when that run was
made at kraken's own defaults on the same data and covers the budget (or reached the target)."""

from __future__ import annotations

import functools
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


@pytest.fixture(scope="module")
def bench():
    from bench import figures, settings
    from bench.sections import accuracy

    return SimpleNamespace(SPEC=settings.SPEC, accuracy_run_at_defaults=accuracy.accuracy_run_at_defaults,
                           select=figures.select)


def _acc(bench, **kw):
    rec = dict(name="acc_kraken", section="accuracy", tool="kraken", variant=None, ok=True, load=None, batch=1,
               lr=None, spec=bench.SPEC, train_lines=2950, val_lines=346, wall_s=8000.0,
               epochs_seen=[{"epoch": 0, "t": 800.0, "val_accuracy": 0.05}, {"epoch": 9, "t": 8000.0,
                                                                            "val_accuracy": 0.6}])
    rec.update(kw)
    return rec


def _find(bench, recs, budget=6000.0, n_val=346):
    b = SimpleNamespace(by=functools.partial(bench.select, recs))
    return bench.accuracy_run_at_defaults(b, "kraken", 2950, n_val, budget, 0.85)


def test_run_at_defaults_covering_the_budget_is_reused(bench):
    rec = _acc(bench)
    assert _find(bench, [rec]) is rec


@pytest.mark.parametrize("change", [dict(lr="1e-4"), dict(batch=16), dict(load="model_froc.mlmodel"),
                                    dict(spec="[1,48,0,1 Cr3,3,32 O1c10]"), dict(train_lines=400),
                                    dict(variant="fp32"), dict(ok=False), dict(tool="scriba")])
def test_runs_not_at_defaults_are_not_reused(bench, change):
    assert _find(bench, [_acc(bench, **change)]) is None


def test_short_run_is_reused_only_when_it_reached_the_target(bench):
    short = _acc(bench, wall_s=3000.0)
    assert _find(bench, [short]) is None
    hit = _acc(bench, wall_s=3000.0, epochs_seen=[{"epoch": 3, "t": 2900.0, "val_accuracy": 0.86}])
    assert _find(bench, [hit]) is hit
    assert _find(bench, [_acc(bench)], n_val=64) is None

"""Selecting records, statistics over repeats and the number formats of the report (a missing figure is ``None``, shown as —)."""

from __future__ import annotations

import statistics


def select(records: list[dict], section: str, **kw) -> list[dict]:
    """The records of a section whose fields equal ``kw`` (e.g. ``tool="kraken", batch=1``), in run order."""
    return [r for r in records if r.get("section") == section and all(r.get(k) == v for k, v in kw.items())]


def med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def mn(xs):
    xs = [x for x in xs if x is not None]
    return min(xs) if xs else None


def mx(xs):
    xs = [x for x in xs if x is not None]
    return max(xs) if xs else None


def rnd(x, nd=1):
    return None if x is None else round(x, nd)


def show(x, nd=1, pct=False):
    if x is None:
        return "—"
    return f"{100 * x:.{nd}f} %" if pct else f"{x:.{nd}f}"


def ratio(a, b_):
    if a is None or b_ is None or b_ == 0:
        return "—"
    return f"{a / b_:.2f}x"


def verdict(ok: bool | None, extra: str = "") -> str:
    if ok is None:
        return "—" + extra
    return ("**met**" if ok else "**not met**") + extra


def epoch_rate(rec: dict, n_lines: int) -> float | None:
    """lines/s from intervals between consecutive epoch checkpoints (epoch >= 2)."""
    ts = sorted(e["t"] for e in rec.get("epochs_seen", []) if e.get("t") is not None)
    if len(ts) >= 2:
        iv = [b - a for a, b in zip(ts, ts[1:]) if b > a]
        if iv:
            return n_lines / statistics.median(iv)
    return None

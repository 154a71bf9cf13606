"""A PNG of the training curves (loss, validation accuracies, learning rate), saved next to the weights."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any


def epoch_positions(history: Sequence[dict[str, Any]]) -> list[float]:
    """Where each validation run goes on the epoch axis: the one that ends epoch N at N, as the console's
    ``epoch N`` line and ``checkpoint_NN-*.ckpt`` name it; one halfway through epoch N at N - 0.5."""
    return [float(h.get("epoch", i + 1)) - 1.0 for i, h in enumerate(history)]


def plot_history(history: Sequence[dict[str, Any]], path: str | os.PathLike[str]) -> str | None:
    """Draws one point per validation run; returns the file written, or None when there is nothing to draw.

    ``history`` items hold ``epoch`` (epochs trained when the validation ran, fractional for sub-epoch
    validation) and any of ``train_loss``, ``val_accuracy``, ``val_word_accuracy``, ``lr``. Points are placed
    by :func:`epoch_positions`.
    """
    if not history:
        return None
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    x = epoch_positions(history)

    def series(key: str) -> tuple[list[float], list[float]]:
        pts = [(xi, float(h[key])) for xi, h in zip(x, history) if h.get(key) is not None]
        return [p[0] for p in pts], [p[1] for p in pts]

    fig = Figure(figsize=(8, 6), dpi=100)
    ax_loss, ax_acc = fig.subplots(2, 1, sharex=True)
    xs, ys = series("train_loss")
    if xs:
        ax_loss.plot(xs, ys, marker="o", ms=3, color="tab:red", label="train loss (per line)")
    ax_loss.set_ylabel("loss")
    xs, ys = series("lr")
    if xs:
        ax_lr = ax_loss.twinx()
        ax_lr.plot(xs, ys, ls="--", color="tab:gray", label="learning rate")
        ax_lr.set_ylabel("learning rate")
        ax_lr.legend(loc="upper right", fontsize="small")
    ax_loss.legend(loc="upper left", fontsize="small")
    for key, colour in (("val_accuracy", "tab:blue"), ("val_word_accuracy", "tab:green")):
        xs, ys = series(key)
        if xs:
            ax_acc.plot(xs, ys, marker="o", ms=3, color=colour, label=key.replace("_", " "))
    ax_acc.set_xlabel("epoch (numbered from 0, as in the console and the checkpoint names)")
    ax_acc.xaxis.get_major_locator().set_params(integer=True)
    ax_acc.set_ylabel("accuracy")
    ax_acc.grid(alpha=0.3)
    ax_acc.legend(loc="lower right", fontsize="small")
    fig.tight_layout()
    out = Path(path)
    tmp = out.with_name(f".{out.name}.tmp")
    fig.savefig(tmp, format="png")
    os.replace(tmp, out)
    return str(out)

"""How a training run ended, in words: the ``stopped: ...`` line and where an interrupted run continues from."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class RunResult:
    """What a training or pretraining run produced and why it stopped (``fixed``, ``early``, ``aneal``,
    ``time``, ``interrupted``); each job adds its own figures."""

    output_dir: str
    weights: str | None = None
    best_checkpoint: str | None = None
    abort_checkpoint: str | None = None
    stopped: str = "fixed"
    epochs: int = 0
    steps: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    split_file: str | None = None
    lines_per_second: list[float] = field(default_factory=list)


def stop_message(reason: str, cfg: Any, trainer: Any, early: Any) -> str:
    """The line that says why a run that was not interrupted ended (``reason`` from :func:`scriba.trainer.runtime.stop_reason`)."""
    if reason == "early" and early is not None:
        best = float(early.best_score)
        return (
            f"stopped: {early.monitor} did not improve for {early.patience} validation runs "
            f"(--quit early, --lag {cfg.lag}, --min-delta {cfg.min_delta}); best {best:.4f}"
        )
    if reason == "aneal":
        return "stopped: the learning rate schedule reached its floor (--quit aneal)"
    if reason == "time":
        return f"stopped: the time budget of {cfg.max_time:g} minutes is spent (--max-time)"
    if reason == "fixed":
        return f"stopped: {cfg.epochs} epochs done (--quit fixed)"
    return f"stopped after {trainer.current_epoch} epochs"


def resume_hint(command: str, abort_checkpoint: str | None, out: Path) -> str:
    """How to continue an interrupted run: from its abort checkpoint, else from the last regular one (written
    at the end of the last validation run) when its weights are finite, else nothing to continue from."""
    path = abort_checkpoint
    if path is None:
        last = out / "checkpoint_last.ckpt"
        path = str(last) if last.exists() and _finite_checkpoint(last) else None
    if path is None:
        return "no checkpoint to continue from was written"
    return f"continue with: ketos {command} --resume {path}"


def _finite_checkpoint(path: Path) -> bool:
    import torch

    try:
        state = torch.load(path, map_location="cpu", weights_only=True)["state_dict"]
    except Exception:  # noqa: BLE001 - an unreadable checkpoint is not one to continue from
        return False
    return all(bool(torch.isfinite(v).all()) for v in state.values() if v.is_floating_point())

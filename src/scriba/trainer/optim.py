"""Optimizers (Lamb included) and learning-rate schedules, shared by ``ketos train`` and ``ketos pretrain``.

The schedules are pure functions of the optimizer step count plus a little state updated after each
validation run, so they need no torch scheduler object and resume exactly from a checkpoint:
``LRSchedule.lr(step)`` gives the rate for the next optimizer step, ``on_validation(metric)`` advances the
validation-driven schedules (exponential, step, reduceonplateau).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import KW_ONLY, dataclass, field, fields
from typing import Any

import torch
from torch.optim import Optimizer

from scriba.config import OPTIMIZERS, SCHEDULES, OptimConfig
from scriba.errors import UsageError


class Lamb(Optimizer):
    """LAMB (You et al. 2019): Adam moments with a per-tensor trust ratio ``||w|| / ||update||``.

    The trust ratio lets large batches use large rates without any layer's weights moving further, in
    relative terms, than the others. Weight decay is decoupled (added to the update before the ratio).
    """

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-6,
        weight_decay: float = 0.0,
    ) -> None:
        if lr < 0 or eps < 0 or weight_decay < 0 or not all(0 <= b < 1 for b in betas):
            raise ValueError(f"invalid Lamb parameters lr={lr} betas={betas} eps={eps} weight_decay={weight_decay}")
        super().__init__(params, {"lr": lr, "betas": betas, "eps": eps, "weight_decay": weight_decay})

    @torch.no_grad()
    def step(self, closure: Any = None) -> Any:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            b1, b2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                g = p.grad
                if g.is_sparse:
                    raise RuntimeError("Lamb does not support sparse gradients")
                state = self.state[p]
                if not state:
                    state["step"] = 0
                    state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                state["step"] += 1
                m, v = state["exp_avg"], state["exp_avg_sq"]
                m.mul_(b1).add_(g, alpha=1 - b1)
                v.mul_(b2).addcmul_(g, g, value=1 - b2)
                m_hat = m / (1 - b1 ** state["step"])
                v_hat = v / (1 - b2 ** state["step"])
                update = m_hat / (v_hat.sqrt() + group["eps"])
                if group["weight_decay"]:
                    update.add_(p, alpha=group["weight_decay"])
                w_norm = p.norm()
                u_norm = update.norm()
                # layers whose weights or update are all zero (fresh biases) fall back to plain Adam steps
                trust = torch.where((w_norm > 0) & (u_norm > 0), w_norm / u_norm, torch.ones_like(w_norm))
                p.add_(update * trust, alpha=-group["lr"])
        return loss


def _fused(params: list[Any]) -> dict[str, bool]:
    """torch's fused Adam kernels, where every tensor allows them: one pass over each tensor instead of a dozen
    (default network on CPU: 10.7 -> 1.6 ms per optimizer step, a twentieth of a ``-B 1`` training step)."""
    tensors = [p for p in params if isinstance(p, torch.Tensor)]
    ok = tensors and len(tensors) == len(params)
    ok = ok and all(p.is_floating_point() and p.device.type in ("cpu", "cuda") for p in tensors)
    return {"fused": True} if ok else {}


def build_optimizer(params: Iterable[Any], cfg: OptimConfig) -> Optimizer:
    """The optimizer named by ``cfg.optimizer``; momentum only applies to SGD and RMSprop."""
    name = cfg.optimizer
    lr, wd = cfg.lrate, cfg.weight_decay
    params = list(params)
    if name in ("Adam", "AdamW"):
        opt = getattr(torch.optim, name)(params, lr=lr, weight_decay=wd, **_fused(params))
        # a fused optimizer offers to unscale fp16 gradients itself, inside its step; Lightning then refuses
        # gradient clipping (kraken's default, 1.0). Declining the offer makes the precision plugin unscale
        # before clipping, as for any other optimizer, and the fused step gets true gradients.
        opt._step_supports_amp_scaling = False  # type: ignore[attr-defined]
        return opt
    if name == "SGD":
        return torch.optim.SGD(params, lr=lr, momentum=cfg.momentum, weight_decay=wd)
    if name == "RMSprop":
        return torch.optim.RMSprop(params, lr=lr, momentum=cfg.momentum, weight_decay=wd)
    if name == "Lamb":
        return Lamb(params, lr=lr, weight_decay=wd)
    raise UsageError(f"unknown optimizer {name!r} (expected one of {', '.join(OPTIMIZERS)})")


# reduceonplateau, watching validation accuracy, counts stalled runs only once the model reads this well
ROP_READING_ACCURACY = 0.5


@dataclass(eq=False)
class LRSchedule:
    """Learning rate as a function of optimizer steps and validation runs, with linear warmup.

    - ``constant``: ``lrate``.
    - ``1cycle``: one cycle over ``epochs * steps_per_epoch`` optimizer steps (rise for 30 % from
      ``lrate/25`` to ``lrate``, cosine descent to ``lrate/25e4``).
    - ``exponential``: ``lrate * gamma ** (runs / step_size)`` (smooth decay, a factor ``gamma`` every
      ``step_size`` validation runs); ``step``: ``lrate * gamma ** floor(runs / step_size)``.
    - ``reduceonplateau``: multiplied by ``gamma`` once the monitored metric has not improved for more than
      ``rop_patience`` validation runs; a validation accuracy counts such runs only from
      ``ROP_READING_ACCURACY`` on.
    - ``cosine``: from ``lrate`` to ``cos_min_lr`` over ``cos_t_max`` epochs (counted in steps, so the
      curve is smooth), then constant; ``cosine_warm_restarts``: the same, restarting every ``cos_t_max``.
      ``cos_t_max`` 0 anneals over the whole run instead: ``epochs`` epochs if set, else the wall-clock
      budget ``max_time_s``, as a fraction of the budget spent (the rate follows the clock there, as the
      run's length does).
    - ``warmup`` > 0: the rate is additionally scaled by ``(step + 1) / warmup`` for the first steps.
    """

    schedule: str
    lrate: float
    _: KW_ONLY
    steps_per_epoch: int
    epochs: int = -1
    warmup: float = 0
    gamma: float = 0.1
    step_size: int = 10
    rop_patience: int = 5
    cos_t_max: int = 10
    cos_min_lr: float = 1e-6
    max_time_s: float = 0.0
    mode: str = "max"
    # state changed by validation runs (the only state not derived from the step count): checkpointed
    val_runs: int = field(default=0, init=False)
    plateau_factor: float = field(default=1.0, init=False)
    plateau_best: float | None = field(default=None, init=False)
    plateau_bad: int = field(default=0, init=False)

    def __post_init__(self) -> None:
        schedule = self.schedule
        if schedule not in SCHEDULES:
            raise UsageError(f"unknown schedule {schedule!r} (expected one of {', '.join(SCHEDULES)})")
        if schedule == "1cycle" and self.epochs <= 0:
            raise UsageError("the 1cycle schedule needs a positive number of --epochs (its cycle length)")
        if schedule == "cosine_warm_restarts" and self.cos_t_max <= 0:
            raise UsageError("--cos-max must be positive for cosine_warm_restarts (the length of each cycle)")
        if schedule == "cosine" and self.cos_t_max < 0:
            raise UsageError("--cos-max must be 0 (the whole run) or a number of epochs")
        if schedule == "cosine" and self.cos_t_max == 0 and self.epochs <= 0 and self.max_time_s <= 0:
            raise UsageError("--cos-max 0 anneals over the whole run, which needs its length: --epochs or --max-time")
        if schedule in ("exponential", "step") and self.step_size <= 0:
            raise UsageError("--step-size must be positive")
        self.steps_per_epoch = max(1, int(self.steps_per_epoch))
        self.warmup = float(self.warmup)

    @classmethod
    def from_config(cls, cfg: OptimConfig, steps_per_epoch: int, mode: str = "max") -> LRSchedule:
        return cls(
            cfg.schedule,
            cfg.lrate,
            steps_per_epoch=steps_per_epoch,
            epochs=cfg.epochs,
            warmup=cfg.warmup,
            gamma=cfg.gamma,
            step_size=cfg.step_size,
            rop_patience=cfg.rop_patience,
            cos_t_max=cfg.cos_t_max,
            cos_min_lr=cfg.cos_min_lr,
            max_time_s=cfg.max_time * 60,
            mode=mode,
        )

    @property
    def total_steps(self) -> int:
        return max(1, self.epochs * self.steps_per_epoch)

    def over_run(self) -> bool:
        """Whether the cosine anneals over the whole run (``cos_t_max`` 0) rather than a number of epochs."""
        return self.schedule == "cosine" and self.cos_t_max == 0

    def run_fraction(self, step: int, elapsed_s: float | None) -> float:
        """How much of the run is done, 0 to 1: of ``epochs`` if set, else of the time budget."""
        if self.epochs > 0:
            return min(1.0, step / self.total_steps)
        return min(1.0, max(0.0, (elapsed_s or 0.0) / self.max_time_s))

    def base_lr(self, step: int, elapsed_s: float | None = None) -> float:
        s = self.schedule
        if s == "constant":
            return self.lrate
        if s == "1cycle":
            return _one_cycle(self.lrate, step, self.total_steps)
        if s == "exponential":
            return self.lrate * self.gamma ** (self.val_runs / self.step_size)
        if s == "step":
            return self.lrate * self.gamma ** (self.val_runs // self.step_size)
        if s == "reduceonplateau":
            return self.lrate * self.plateau_factor
        epoch = step / self.steps_per_epoch
        if self.over_run():
            t = self.run_fraction(step, elapsed_s)
        elif s == "cosine":
            t = min(epoch, self.cos_t_max) / self.cos_t_max
        else:  # cosine_warm_restarts
            t = (epoch % self.cos_t_max) / self.cos_t_max
        return self.cos_min_lr + (self.lrate - self.cos_min_lr) * (1 + math.cos(math.pi * t)) / 2

    def lr(self, step: int, elapsed_s: float | None = None) -> float:
        """The rate for optimizer step ``step`` (0-based count of steps already taken), ``elapsed_s`` seconds
        into the time budget (read only by a cosine over a ``--max-time`` run)."""
        lr = self.base_lr(step, elapsed_s)
        if self.warmup > 0 and step < self.warmup:
            lr *= (step + 1) / self.warmup
        return lr

    def on_validation(self, metric: float | None) -> None:
        self.val_runs += 1
        if self.schedule != "reduceonplateau" or metric is None or math.isnan(metric):
            return
        better = self.plateau_best is None or (
            metric > self.plateau_best if self.mode == "max" else metric < self.plateau_best
        )
        if better:
            self.plateau_best = metric
            self.plateau_bad = 0
        elif self.mode == "max" and self.plateau_best is not None and self.plateau_best < ROP_READING_ACCURACY:
            # still on CTC's all-blank plateau or just off it: a lower rate would only keep it there longer
            pass
        else:
            self.plateau_bad += 1
            if self.plateau_bad > self.rop_patience:
                self.plateau_factor *= self.gamma
                self.plateau_bad = 0

    def annealed(self, step: int, elapsed_s: float | None = None) -> bool:
        """Whether the schedule has brought the rate down to its floor (``--quit aneal``).

        The floor is the end of the cycle for 1cycle, ``cos_t_max`` epochs for cosine (the end of the run for
        ``cos_t_max`` 0), and a rate at or below ``cos_min_lr`` for the decaying schedules.
        """
        s = self.schedule
        if s == "1cycle":
            return step >= self.total_steps
        if self.over_run():
            return self.run_fraction(step, elapsed_s) >= 1.0
        if s == "cosine":
            return step >= self.cos_t_max * self.steps_per_epoch
        if s in ("exponential", "step", "reduceonplateau"):
            return self.base_lr(step) <= self.cos_min_lr * (1 + 1e-9)
        return False

    def state_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self) if not f.init}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for f in fields(self):
            if not f.init:
                setattr(self, f.name, state.get(f.name, f.default))


def check_aneal(schedule: str) -> None:
    """``--quit aneal`` needs a schedule that reaches a floor; constant and warm restarts never do."""
    if schedule in ("constant", "cosine_warm_restarts"):
        raise UsageError(
            f"--quit aneal stops once the schedule has annealed the rate to its floor; "
            f"the {schedule} schedule never does (use 1cycle, cosine, exponential, step or reduceonplateau)"
        )


def _one_cycle(max_lr: float, step: int, total: int, pct_start: float = 0.3) -> float:
    initial = max_lr / 25.0
    final = initial / 1e4
    up = max(1.0, pct_start * total)
    step = min(step, total)
    if step <= up:
        return _cos_interp(initial, max_lr, step / up)
    return _cos_interp(max_lr, final, (step - up) / max(1.0, total - up))


def _cos_interp(start: float, end: float, t: float) -> float:
    return end + (start - end) * (1 + math.cos(math.pi * min(max(t, 0.0), 1.0))) / 2

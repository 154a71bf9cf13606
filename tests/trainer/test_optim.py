"""Optimizers (Lamb) and learning-rate schedules, as pure functions of steps and validation runs."""

from __future__ import annotations

import math

import pytest
import torch

from scriba.config import OPTIMIZERS, TrainConfig
from scriba.errors import UsageError
from scriba.trainer.optim import Lamb, LRSchedule, build_optimizer, check_aneal


def _quadratic_descent(opt_cls, **kw) -> float:
    torch.manual_seed(0)
    w = torch.nn.Parameter(torch.randn(20) * 3)
    target = torch.linspace(-1, 1, 20)
    opt = opt_cls([w], **kw)
    for _ in range(200):
        opt.zero_grad()
        loss = ((w - target) ** 2).sum()
        loss.backward()
        opt.step()
    return float(((w.detach() - target) ** 2).sum())


def test_lamb_minimises_a_quadratic():
    start = float(((torch.manual_seed(0) and torch.randn(20) * 3) - torch.linspace(-1, 1, 20)).pow(2).sum())
    assert _quadratic_descent(Lamb, lr=0.05) < 0.01 * start


def test_lamb_trust_ratio_scales_update_by_weight_norm():
    for scale in (1.0, 100.0):
        w = torch.nn.Parameter(torch.full((4,), scale))
        opt = Lamb([w], lr=0.1)
        w.grad = torch.ones(4)
        opt.step()
        # first Adam step has |update| = 1 per element, so the trust ratio moves w by lr * |w|
        assert torch.allclose(w.detach(), torch.full((4,), scale * 0.9), rtol=1e-4)


def test_lamb_weight_decay_and_zero_grads():
    w = torch.nn.Parameter(torch.ones(3))
    opt = Lamb([w], lr=0.1, weight_decay=0.5)
    w.grad = torch.zeros(3)
    opt.step()
    assert (w.detach() < 1).all()
    with pytest.raises(ValueError):
        Lamb([w], lr=-1)


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_build_optimizer(name):
    p = [torch.nn.Parameter(torch.zeros(2))]
    cfg = TrainConfig(optimizer=name, lrate=0.01, momentum=0.5, weight_decay=0.1)
    opt = build_optimizer(p, cfg)
    assert type(opt).__name__ == name
    g = opt.param_groups[0]
    assert g["lr"] == 0.01 and g["weight_decay"] == 0.1
    if name in ("SGD", "RMSprop"):
        assert g["momentum"] == 0.5
    with pytest.raises(UsageError):
        build_optimizer(p, TrainConfig(optimizer="Adagrad"))


@pytest.mark.parametrize("name", ["Adam", "AdamW"])
def test_adam_runs_fused_with_the_same_updates(name):
    torch.manual_seed(0)
    start = [torch.randn(5, 7), torch.randn(7)]
    cfg = TrainConfig(optimizer=name, lrate=0.01, weight_decay=0.1)
    fused = [torch.nn.Parameter(t.clone()) for t in start]
    plain = [torch.nn.Parameter(t.clone()) for t in start]
    opt = build_optimizer(iter(fused), cfg)
    assert opt.param_groups[0]["fused"] is True
    ref = getattr(torch.optim, name)(plain, lr=0.01, weight_decay=0.1, foreach=False)
    for _ in range(5):
        grads = [torch.randn_like(t) for t in start]
        for ps, o in ((fused, opt), (plain, ref)):
            for p_, g_ in zip(ps, grads):
                p_.grad = g_.clone()
            o.step()
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(fused, plain))
    assert not torch.allclose(fused[0], start[0])


def _traj(s: LRSchedule, steps: int) -> list[float]:
    return [s.lr(i) for i in range(steps)]


def test_constant_with_warmup():
    s = LRSchedule("constant", 1e-3, steps_per_epoch=10, warmup=4)
    assert _traj(s, 6) == pytest.approx([2.5e-4, 5e-4, 7.5e-4, 1e-3, 1e-3, 1e-3])


def test_one_cycle_counts_optimizer_steps():
    s = LRSchedule("1cycle", 1e-2, steps_per_epoch=10, epochs=3)
    lrs = _traj(s, 31)
    peak = max(range(31), key=lambda i: lrs[i])
    assert peak == 9  # 30 % of 30 steps
    assert lrs[0] == pytest.approx(1e-2 / 25) and lrs[peak] == pytest.approx(1e-2)
    assert lrs[30] == pytest.approx(1e-2 / 25 / 1e4)
    assert all(a >= b for a, b in zip(lrs[peak:], lrs[peak + 1 :]))
    assert s.annealed(30) and not s.annealed(29)
    with pytest.raises(UsageError):
        LRSchedule("1cycle", 1e-3, steps_per_epoch=10, epochs=-1)


def test_exponential_and_step_decay_per_validation_runs():
    exp = LRSchedule("exponential", 1.0, steps_per_epoch=5, gamma=0.5, step_size=2)
    step = LRSchedule("step", 1.0, steps_per_epoch=5, gamma=0.5, step_size=2)
    e, s = [], []
    for _ in range(5):
        e.append(exp.lr(100))
        s.append(step.lr(100))
        exp.on_validation(0.5)
        step.on_validation(0.5)
    assert e == pytest.approx([1, 0.5**0.5, 0.5, 0.5**1.5, 0.25])
    assert s == pytest.approx([1, 1, 0.5, 0.5, 0.25])


def test_reduce_on_plateau_uses_gamma_and_patience():
    s = LRSchedule("reduceonplateau", 1.0, steps_per_epoch=5, gamma=0.1, rop_patience=2)
    lrs = []
    for metric in [0.6, 0.7, 0.7, 0.7, 0.7, 0.8, 0.8, 0.8, 0.8]:
        s.on_validation(metric)
        lrs.append(s.lr(0 + 100))
    # runs without improvement: 0.7 x3 -> the third exceeds patience 2
    assert lrs == pytest.approx([1, 1, 1, 1, 0.1, 0.1, 0.1, 0.1, 0.01])
    state = s.state_dict()
    t = LRSchedule("reduceonplateau", 1.0, steps_per_epoch=5, gamma=0.1, rop_patience=2)
    t.load_state_dict(state)
    assert t.lr(5) == s.lr(5) and t.plateau_bad == s.plateau_bad


def test_default_schedule_lowers_the_rate_after_two_stalled_validations():
    cfg = TrainConfig()
    s = LRSchedule.from_config(cfg, steps_per_epoch=100)
    lrs = []
    for acc in [0.05, 0.14, 0.65, 0.77, 0.76, 0.77, 0.80, 0.79, 0.79]:
        s.on_validation(acc)
        lrs.append(s.lr(1000) / cfg.lrate)
    # 0.76 and 0.77 (not better than 0.77) -> 0.3x; 0.79 twice after 0.80 -> 0.09x
    assert lrs == pytest.approx([1] * 5 + [0.3] * 3 + [0.09])


def test_reduce_on_plateau_waits_until_the_model_reads():
    s = LRSchedule("reduceonplateau", 1.0, steps_per_epoch=5, gamma=0.1, rop_patience=0)
    for acc in [0.04, 0.07, 0.07, 0.06, 0.07, 0.3, 0.2]:  # CTC's blank plateau and the climb out of it
        s.on_validation(acc)
    assert s.lr(100) == 1.0
    for acc in [0.6, 0.59]:
        s.on_validation(acc)
    assert s.lr(100) == pytest.approx(0.1)
    loss = LRSchedule("reduceonplateau", 1.0, steps_per_epoch=5, gamma=0.1, rop_patience=0, mode="min")
    for v in [0.3, 0.4]:  # a loss (pretraining) has no such threshold
        loss.on_validation(v)
    assert loss.lr(100) == pytest.approx(0.1)


def test_cosine_and_warm_restarts():
    s = LRSchedule("cosine", 1.0, steps_per_epoch=10, cos_t_max=2, cos_min_lr=0.0)
    assert s.lr(0) == pytest.approx(1.0)
    assert s.lr(10) == pytest.approx(0.5)
    assert s.lr(20) == pytest.approx(0.0) and s.lr(50) == pytest.approx(0.0)
    assert s.annealed(20) and not s.annealed(19)
    w = LRSchedule("cosine_warm_restarts", 1.0, steps_per_epoch=10, cos_t_max=2, cos_min_lr=0.0)
    assert w.lr(20) == pytest.approx(1.0) and w.lr(30) == pytest.approx(0.5)
    assert not w.annealed(10_000)


def test_cosine_over_the_whole_run():
    # --cos-max 0: over --epochs when set (in steps), else over the --max-time budget (in seconds spent)
    by_epochs = LRSchedule("cosine", 1.0, steps_per_epoch=10, epochs=4, cos_t_max=0, cos_min_lr=0.0, max_time_s=60)
    assert by_epochs.lr(0, 59.0) == pytest.approx(1.0)
    assert by_epochs.lr(20) == pytest.approx(0.5) and by_epochs.lr(40) == pytest.approx(0.0)
    assert by_epochs.annealed(40) and not by_epochs.annealed(39)
    by_time = LRSchedule("cosine", 1.0, steps_per_epoch=10, cos_t_max=0, cos_min_lr=0.1, max_time_s=600)
    assert by_time.lr(10_000, 0.0) == pytest.approx(1.0)
    assert by_time.lr(3, 300.0) == pytest.approx(0.55)
    assert by_time.lr(3, 600.0) == pytest.approx(0.1) and by_time.lr(3, 900.0) == pytest.approx(0.1)
    assert by_time.annealed(0, 600.0) and not by_time.annealed(10**6, 599.0)
    with pytest.raises(UsageError, match="--epochs or --max-time"):
        LRSchedule("cosine", 1.0, steps_per_epoch=10, cos_t_max=0)
    with pytest.raises(UsageError, match="cosine_warm_restarts"):
        LRSchedule("cosine_warm_restarts", 1.0, steps_per_epoch=10, cos_t_max=0, max_time_s=60)


def test_aneal_floor_for_decaying_schedules():
    s = LRSchedule("step", 1e-3, steps_per_epoch=1, gamma=0.1, step_size=1, cos_min_lr=1e-6)
    runs = 0
    while not s.annealed(0):
        s.on_validation(0.0)
        runs += 1
    assert runs == 3 and math.isclose(s.lr(0), 1e-6)
    for name in ("constant", "cosine_warm_restarts"):
        with pytest.raises(UsageError):
            check_aneal(name)
    check_aneal("cosine")


def test_bad_schedule_arguments():
    with pytest.raises(UsageError):
        LRSchedule("linear", 1e-3, steps_per_epoch=1)
    with pytest.raises(UsageError):
        LRSchedule("step", 1e-3, steps_per_epoch=1, step_size=0)

"""End-to-end pretraining runs on tiny synthetic lines (a few seconds each)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import lightning as L
import pytest
import torch

from scriba.config import GlobalConfig, PretrainConfig
from scriba.errors import ScribaError, SpecError, UsageError
from scriba.jobs.pretrain.job import PretrainResult, check_config, pretrain, warmup_steps
from scriba.weights import load_model
from train_helpers import SlowBatches

G = GlobalConfig(device="cpu", num_workers=0, seed=1)


def _cfg(out: Path, lines: list[str], spec: str, **kw: Any) -> PretrainConfig:
    opts: dict[str, Any] = dict(
        training_data=lines,
        format_type="path",
        spec=spec,
        checkpoint_path=str(out),
        quit="fixed",
        epochs=2,
        min_epochs=0,
        lrate=1e-3,
        warmup=0,
        schedule="constant",
        batch_size=4,
        mask_width=2,
        num_negatives=10,
        partition=0.75,
    )
    opts.update(kw)
    return PretrainConfig(**opts)


class _Spy(L.Callback):
    """Records what the tests need to see from inside a run."""

    def __init__(self) -> None:
        self.lrs: list[float] = []
        self.start_state: dict[str, torch.Tensor] = {}
        self.module: Any = None
        self.datamodule: Any = None

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.module = pl_module
        self.datamodule = trainer.datamodule
        self.start_state = {k: v.detach().clone() for k, v in pl_module.net.state_dict().items()}  # type: ignore[union-attr]

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, idx: int) -> None:
        self.lrs.append(float(trainer.optimizers[0].param_groups[0]["lr"]))


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory: pytest.TempPathFactory, tiny_lines: list[str], tiny_spec: str) -> PretrainResult:
    out = tmp_path_factory.mktemp("pretrained")
    return pretrain(_cfg(out, tiny_lines, tiny_spec, epochs=6), G, progress=False)


def test_loss_decreases(pretrained: PretrainResult) -> None:
    losses = [h["val_loss"] for h in pretrained.history]
    assert len(losses) == 6 and all(v is not None for v in losses)
    assert losses[-1] < losses[0]
    # 1 positive among 11 candidates: chance is ln(11); training gets below it
    assert min(losses) < torch.log(torch.tensor(11.0)).item()
    train = [h["train_loss"] for h in pretrained.history]
    assert train[-1] < train[0]
    assert pretrained.stopped == "fixed" and pretrained.epochs == 6


def test_best_weights_are_a_recognition_model(pretrained: PretrainResult) -> None:
    assert pretrained.weights is not None
    path = Path(pretrained.weights)
    assert path.name == f"best_{pretrained.best_loss:.4f}.safetensors"
    assert pretrained.best_loss == pytest.approx(min(h["val_loss"] for h in pretrained.history), abs=1e-4)
    model = load_model(path)
    assert model.codec is not None and model.codec.to_json() == {" ": [1]}
    assert model.spec.endswith("1c2]")
    assert all(not k.startswith("mask") for k in model.state_dict())
    assert model.metadata["model_type"] == ["recognition"]
    assert model.metadata["seg_type"] == "bbox"
    assert model.metadata["one_channel_mode"] in ("1", "L")
    # the encoder weights are the trained ones, not a fresh initialisation
    ckpt = torch.load(pretrained.best_checkpoint, map_location="cpu", weights_only=True)
    state = model.state_dict()
    for k, v in ckpt["state_dict"].items():
        if k.startswith("net."):
            assert torch.equal(state[k[4:]], v), k


def test_checkpoints_follow_the_contract(pretrained: PretrainResult) -> None:
    out = Path(pretrained.output_dir)
    ckpts = sorted(out.glob("checkpoint_*.ckpt"))
    assert (out / "checkpoint_last.ckpt").exists()
    assert len(ckpts) == 7  # one per epoch plus last
    ckpt = torch.load(str(ckpts[0]), map_location="cpu", weights_only=True)
    entry = ckpt["scriba"]
    assert entry["task"] == "pretrain"
    assert entry["codec"] == {" ": [1]}
    assert entry["vgsl"].startswith("[1,16,0,1 Cr{C_0}3,3,8")
    assert entry["pretrain_config"]["mask_width"] == 2
    assert entry["global_config"]["seed"] == 1
    assert entry["data"]["split"]["mode"] == "partition"
    assert entry["machine"]["precision"] == "32-true" and "micro_batch" not in entry["machine"]
    assert entry["machine"]["threads"] == G.num_threads
    keys = set(ckpt["state_dict"])
    assert any(k.startswith("net.nn.C_0.") for k in keys)
    assert {"mask.mask_emb", "mask.project_q.weight", "mask.project_q.bias"} <= keys
    assert all(k.startswith(("net.", "mask.")) for k in keys)
    # a pretraining checkpoint loads as a recognition model too (``ketos train --load x.ckpt``)
    assert load_model(ckpts[0]).codec.to_json() == {" ": [1]}  # type: ignore[union-attr]
    assert json.loads((out / "partition.json").read_text())["mode"] == "partition"


def test_fine_tuning_from_pretrained_weights(pretrained: PretrainResult, tiny_lines: list[str], tmp_path: Path) -> None:
    from scriba.config import TrainConfig
    from scriba.jobs.train.job import train

    assert pretrained.weights is not None
    base = load_model(pretrained.weights)
    spy = _Spy()
    cfg = TrainConfig(
        training_data=tiny_lines,
        format_type="path",
        load=pretrained.weights,
        resize="new",
        checkpoint_path=str(tmp_path / "ft"),
        quit="fixed",
        epochs=1,
        batch_size=4,
        partition=0.75,
    )
    result = train(cfg, G, callbacks=[spy], progress=False)
    assert result.weights is not None
    tuned = load_model(result.weights)
    assert tuned.codec is not None and set(tuned.codec.c2l) == set(" abcdef")
    assert tuned.spec.endswith(f"1c{tuned.codec.max_label + 1}]")
    # training started from the pretrained front and encoder; only the output layer was replaced
    for k, v in base.state_dict().items():
        if ".O_" in k:
            assert spy.start_state[k].shape[0] == tuned.codec.max_label + 1
        else:
            assert torch.equal(spy.start_state[k], v), k


def test_resize_fail_refuses_the_dummy_codec(pretrained: PretrainResult, tiny_lines: list[str], tmp_path: Path) -> None:
    from scriba.config import TrainConfig
    from scriba.jobs.train.job import train

    cfg = TrainConfig(
        training_data=tiny_lines,
        format_type="path",
        load=pretrained.weights,
        resize="fail",
        checkpoint_path=str(tmp_path / "ft"),
        quit="fixed",
        epochs=1,
        batch_size=4,
    )
    with pytest.raises(UsageError, match="--resize"):
        train(cfg, G, progress=False)


def test_load_continues_from_existing_weights(
    pretrained: PretrainResult, tiny_lines: list[str], tmp_path: Path
) -> None:
    spy = _Spy()
    cfg = _cfg(tmp_path, tiny_lines, "[1,48,0,1 Cr3,3,4 S1(1x0)1,3 Lbx4]", load=pretrained.weights, epochs=1)
    result = pretrain(cfg, G, callbacks=[spy], progress=False)
    base = load_model(pretrained.weights)  # type: ignore[arg-type]
    assert spy.module.net.spec == base.spec  # --spec is ignored with --load
    for k, v in base.state_dict().items():
        assert torch.equal(spy.start_state[k], v), k
    assert result.weights is not None


def test_resume_continues_the_run(tiny_lines: list[str], tiny_spec: str, tmp_path: Path) -> None:
    full = pretrain(_cfg(tmp_path / "a", tiny_lines, tiny_spec, epochs=3), G, progress=False)
    first = sorted((tmp_path / "a").glob("checkpoint_00-*.ckpt"))[0]
    # the checkpoint's options rule (3 fixed epochs, its output directory); this one only names the file
    result = pretrain(PretrainConfig(resume=str(first)), G, progress=False)
    assert result.epochs == 3 and result.steps == full.steps
    assert [h["completed_epoch"] for h in result.history] == [0, 1, 2]
    # same seed, same data order, same masks: the continued run retraces the uninterrupted one
    assert [h["val_loss"] for h in result.history] == pytest.approx([h["val_loss"] for h in full.history], rel=1e-4)


def test_evaluation_data_overrides_partition(
    tiny_lines: list[str], unlabelled_lines: list[str], tiny_spec: str, tmp_path: Path
) -> None:
    spy = _Spy()
    cfg = _cfg(tmp_path, tiny_lines[:8], tiny_spec, evaluation_data=tiny_lines[8:12], epochs=1, partition=0.5)
    result = pretrain(cfg, G, callbacks=[spy], progress=False)
    assert (result.train_lines, result.val_lines) == (8, 4)
    assert not (tmp_path / "partition.json").exists()


def test_partition_splits_training_data(tiny_lines: list[str], tiny_spec: str, tmp_path: Path) -> None:
    result = pretrain(_cfg(tmp_path, tiny_lines[:20], tiny_spec, epochs=1, partition=0.6), G, progress=False)
    assert (result.train_lines, result.val_lines) == (12, 8)


def test_unlabelled_images_need_no_transcription(unlabelled_lines: list[str], tiny_spec: str, tmp_path: Path) -> None:
    assert not any(Path(p).with_suffix(".gt.txt").exists() for p in unlabelled_lines)
    result = pretrain(_cfg(tmp_path, unlabelled_lines, tiny_spec, epochs=1), G, progress=False)
    assert result.train_lines + result.val_lines == len(unlabelled_lines)
    assert result.weights is not None


def test_augment_applies_to_training_lines_only(tiny_lines: list[str], tiny_spec: str, tmp_path: Path) -> None:
    spy = _Spy()
    pretrain(_cfg(tmp_path, tiny_lines, tiny_spec, epochs=1, augment=True), G, callbacks=[spy], progress=False)
    assert spy.datamodule.train_set.augmenter is not None
    assert spy.datamodule.val_set.augmenter is None
    spy = _Spy()
    pretrain(_cfg(tmp_path / "b", tiny_lines, tiny_spec, epochs=1), G, callbacks=[spy], progress=False)
    assert spy.datamodule.train_set.augmenter is None


def test_pretrain_options_reach_the_module(tiny_lines: list[str], tiny_spec: str, tmp_path: Path) -> None:
    spy = _Spy()
    cfg = _cfg(
        tmp_path,
        tiny_lines,
        tiny_spec,
        epochs=1,
        mask_width=3,
        mask_prob=0.3,
        num_negatives=7,
        logit_temp=0.2,
        optimizer="Lamb",
        weight_decay=0.5,
    )
    pretrain(cfg, G, callbacks=[spy], progress=False)
    m = spy.module
    assert (m.mask.mask_width, m.mask.mask_prob, m.mask.num_negatives, m.logit_temp) == (3, 0.3, 7, 0.2)
    from scriba.trainer.optim import Lamb

    opt = m.trainer.optimizers[0]
    assert isinstance(opt, Lamb) and opt.param_groups[0]["weight_decay"] == 0.5
    # the mask module is trained together with the network
    assert {id(p) for p in m.mask.parameters()} <= {id(p) for g in opt.param_groups for p in g["params"]}


def test_warmup_counts_samples(tiny_lines: list[str], tiny_spec: str, tmp_path: Path) -> None:
    cfg = _cfg(tmp_path, tiny_lines, tiny_spec, epochs=1, warmup=16.0, lrate=1e-2)
    assert warmup_steps(cfg) == 4.0  # 16 samples in batches of 4
    spy = _Spy()
    result = pretrain(cfg, G, callbacks=[spy], progress=False)
    assert result.warmup_steps == 4.0
    assert spy.lrs[:5] == pytest.approx([2.5e-3, 5e-3, 7.5e-3, 1e-2, 1e-2])
    assert warmup_steps(_cfg(tmp_path, tiny_lines, tiny_spec, warmup=16.0, accumulate_grad_batches=2)) == 2.0


def test_cosine_schedule_and_quit_aneal(tiny_lines: list[str], tiny_spec: str, tmp_path: Path) -> None:
    spy = _Spy()
    cfg = _cfg(
        tmp_path, tiny_lines, tiny_spec, quit="aneal", epochs=-1, schedule="cosine", cos_t_max=2, cos_min_lr=1e-5
    )
    result = pretrain(cfg, G, callbacks=[spy], progress=False)
    assert result.stopped == "aneal" and result.epochs == 2
    assert spy.lrs[0] == pytest.approx(1e-3)
    assert spy.lrs == sorted(spy.lrs, reverse=True) and spy.lrs[-1] < 2e-4


def test_freq_validates_within_epochs(tiny_lines: list[str], tiny_spec: str, tmp_path: Path) -> None:
    result = pretrain(_cfg(tmp_path, tiny_lines, tiny_spec, epochs=1, freq=0.5, batch_size=2), G, progress=False)
    assert len(result.history) == 2
    result = pretrain(_cfg(tmp_path / "b", tiny_lines, tiny_spec, epochs=2, freq=2), G, progress=False)
    assert len(result.history) == 1


def test_early_stopping_with_relative_min_delta(tiny_lines: list[str], tiny_spec: str, tmp_path: Path) -> None:
    # an improvement must halve the loss: never happens, so the run stops after lag + 1 validations
    cfg = _cfg(tmp_path, tiny_lines, tiny_spec, quit="early", epochs=-1, lag=2, min_delta=0.5, min_epochs=0)
    result = pretrain(cfg, G, progress=False)
    assert result.stopped == "early" and len(result.history) == 3
    assert result.weights is not None


def test_min_epochs_holds_back_early_stopping(tiny_lines: list[str], tiny_spec: str, tmp_path: Path) -> None:
    cfg = _cfg(tmp_path, tiny_lines, tiny_spec, quit="early", epochs=-1, lag=1, min_delta=0.5, min_epochs=4)
    result = pretrain(cfg, G, progress=False)
    assert len(result.history) == 4


def test_max_time_ends_the_run_before_min_epochs(tiny_lines: list[str], tiny_spec: str, tmp_path: Path) -> None:
    # pretraining's --min-epochs default is 100: the time budget must still end the run (it did not: Lightning
    # ignores a stop request before min_epochs; `ketos pretrain --max-time 12` ran 28 minutes on froc_mss)
    slow = SlowBatches(0.3)
    cfg = _cfg(tmp_path, tiny_lines, tiny_spec, quit="early", epochs=-1, min_epochs=3, batch_size=1,
               max_time=0.01)
    result = pretrain(cfg, G, callbacks=[slow], progress=False)
    assert result.stopped == "time"
    assert len(result.history) == 1 and slow.steps < 18  # 18 training lines at -B 1: within the first epoch
    assert result.weights is not None and Path(result.weights).exists()


def test_spec_without_recurrent_layer_is_refused(tiny_lines: list[str], tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="recurrent"):
        pretrain(_cfg(tmp_path, tiny_lines, "[1,16,0,1 Cr3,3,8 Mp2,2 S1(1x0)1,3]"), G, progress=False)
    with pytest.raises(SpecError, match="1 high"):
        pretrain(_cfg(tmp_path, tiny_lines, "[1,16,0,1 Cr3,3,8 Lbx8]"), G, progress=False)


@pytest.mark.parametrize(
    ("option", "value", "match"),
    [
        ("mask_width", 0, "--mask-width"),
        ("mask_prob", 1.5, "--mask-probability"),
        ("mask_prob", 0.0, "nothing would be masked"),
        ("num_negatives", 0, "--num-negatives"),
        ("logit_temp", 0.0, "--logit-temp"),
        ("epochs", -1, "--quit fixed"),
        ("freq", 1.5, "--freq"),
    ],
)
def test_bad_options_are_usage_errors(option: str, value: Any, match: str, tmp_path: Path) -> None:
    cfg = _cfg(tmp_path, ["x.png"], "[1,16,0,1 Cr3,3,8 Mp2,2 S1(1x0)1,3 Lbx16]", **{option: value})
    with pytest.raises(UsageError, match=match):
        check_config(cfg)


def test_resume_needs_a_pretraining_checkpoint(tmp_path: Path) -> None:
    bogus = tmp_path / "x.ckpt"
    torch.save({"scriba": {"train_config": {}}}, bogus)
    with pytest.raises(ScribaError, match="pretraining checkpoint"):
        pretrain(PretrainConfig(resume=str(bogus)), G, progress=False)


class _Boom(L.Callback):
    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, idx: int) -> None:
        if trainer.global_step == 7:
            raise RuntimeError("boom")


def test_failure_leaves_an_abort_checkpoint_to_resume_from(
    tiny_lines: list[str], tiny_spec: str, tmp_path: Path
) -> None:
    with pytest.raises(RuntimeError, match="boom"):
        pretrain(_cfg(tmp_path, tiny_lines, tiny_spec, epochs=3), G, callbacks=[_Boom()], progress=False)
    abort = tmp_path / "checkpoint_abort.ckpt"
    assert abort.exists()
    result = pretrain(PretrainConfig(resume=str(abort)), G, progress=False)
    assert result.epochs == 3 and result.steps == 15
    assert result.weights is not None
    # the interruption mid-epoch leaves no trace: same losses as a run that was never stopped
    full = pretrain(_cfg(tmp_path / "full", tiny_lines, tiny_spec, epochs=3), G, progress=False)
    for key in ("val_loss", "train_loss"):
        assert [h[key] for h in result.history] == pytest.approx([h[key] for h in full.history], rel=1e-4)


def test_optimizer_schedule_and_trainer_options_are_wired(
    tiny_lines: list[str], tiny_spec: str, tmp_path: Path
) -> None:
    from scriba.trainer.callbacks import LRScheduleCallback

    spy = _Spy()
    cfg = _cfg(
        tmp_path,
        tiny_lines,
        tiny_spec,
        epochs=1,
        optimizer="SGD",
        momentum=0.7,
        lrate=0.01,
        gradient_clip_val=0.5,
        accumulate_grad_batches=2,
        batch_size=3,
        padding=5,
        schedule="step",
        gamma=0.3,
        step_size=4,
        rop_patience=2,
        cos_t_max=7,
        cos_min_lr=1e-4,
        warmup=12,
        legacy_polygons=True,
    )
    result = pretrain(cfg, G, callbacks=[spy], progress=False)
    trainer = spy.module.trainer
    opt = trainer.optimizers[0]
    assert isinstance(opt, torch.optim.SGD) and opt.param_groups[0]["momentum"] == 0.7
    assert trainer.gradient_clip_val == 0.5 and trainer.accumulate_grad_batches == 2
    assert result.steps == 3  # 18 training lines in batches of 3, two batches per optimizer step
    sched = next(cb for cb in trainer.callbacks if isinstance(cb, LRScheduleCallback)).schedule
    assert (sched.schedule, sched.lrate, sched.gamma, sched.step_size) == ("step", 0.01, 0.3, 4)
    assert (sched.rop_patience, sched.cos_t_max, sched.cos_min_lr, sched.mode) == (2, 7, 1e-4, "min")
    assert sched.warmup == 2.0  # 12 samples = 2 steps of 2 x 3 lines
    assert spy.datamodule.batch_size == 3
    assert spy.datamodule.train_set.line_transform.padding == 5
    assert load_model(result.weights).metadata["legacy_polygons"] is True  # type: ignore[arg-type]


def test_coreml_weights_and_tensorboard_logs(tiny_lines: list[str], tiny_spec: str, tmp_path: Path) -> None:
    pytest.importorskip("coremltools")
    pytest.importorskip("tensorboard")
    logs = tmp_path / "logs"
    cfg = _cfg(
        tmp_path / "out",
        tiny_lines,
        tiny_spec,
        epochs=1,
        weights_format="coreml",
        pl_logger="tensorboard",
        log_dir=str(logs),
    )
    result = pretrain(cfg, G, progress=False)
    assert result.weights is not None and result.weights.endswith(".mlmodel")
    assert Path(result.weights).name.startswith("best_")
    model = load_model(result.weights)
    assert model.codec is not None and model.codec.to_json() == {" ": [1]}
    assert list(logs.rglob("events.out.tfevents.*"))


def test_interrupted_run_leaves_its_best_weights(tiny_lines: list[str], tiny_spec: str, tmp_path: Path) -> None:
    import os
    import signal

    class SigintInEpoch1(L.Callback):
        def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, idx: int) -> None:
            if trainer.current_epoch == 1 and idx == 0:
                os.kill(os.getpid(), signal.SIGINT)

    result = pretrain(_cfg(tmp_path, tiny_lines, tiny_spec, epochs=5), G, callbacks=[SigintInEpoch1()], progress=False)
    assert result.stopped == "interrupted" and result.abort_checkpoint is not None
    assert result.weights is not None and load_model(result.weights) is not None

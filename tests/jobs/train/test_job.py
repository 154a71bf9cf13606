"""End-to-end training runs on tiny synthetic data: outputs, options and their effects."""

from __future__ import annotations

import json
from pathlib import Path

import lightning as L
import pytest
import torch

from scriba.errors import NoDataError, ScribaError, UsageError
from scriba.jobs.train.job import PARTITION_FILE, PLOT_FILE, train
from scriba.recognizer import Recognizer
from scriba.weights import load_model
from train_helpers import TINY_SPEC, SlowBatches, tiny_config, tiny_global


@pytest.fixture(scope="module")
def base_run(synth, tmp_path_factory):
    out = tmp_path_factory.mktemp("base")
    return train(tiny_config(synth, out, epochs=3), tiny_global(), progress=False)


def test_smoke_loss_falls_and_weights_predict(base_run, synth):
    from PIL import Image

    from scriba.weights import load_model

    r = base_run
    assert r.stopped == "fixed" and r.epochs == 3
    losses = [h["train_loss"] for h in r.history]
    assert len(losses) == 3 and losses[-1] < losses[0]
    assert r.weights and Path(r.weights).name == f"best_{r.best_accuracy:.4f}.safetensors"
    model = load_model(r.weights)
    preds = Recognizer(model, batch_size=2).predict([Image.open(p) for p in synth["val"][:2]])
    assert len(preds) == 2 and all(isinstance(p.text, str) for p in preds)
    meta = model.metadata
    assert [m[0] for m in meta["metrics"]] == [0, 1, 2][: len(meta["metrics"])]
    assert set(meta["metrics"][0][1]) >= {"val_accuracy", "val_word_accuracy", "train_loss"}
    assert meta["accuracy"][0][1]["val_accuracy"] == meta["metrics"][0][1]["val_accuracy"]
    assert meta["hyper_params"]["lrate"] == 3e-3 and meta["hyper_params"]["pad"] == 16
    assert meta["seg_type"] == "bbox" and meta["one_channel_mode"] in ("1", "L")


def test_outputs_plot_and_checkpoints(base_run):
    out = Path(base_run.output_dir)
    assert (out / PLOT_FILE).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    ckpts = sorted(out.glob("checkpoint_*.ckpt"))
    assert (out / "checkpoint_last.ckpt") in ckpts and len(ckpts) >= 2
    ck = torch.load(out / "checkpoint_last.ckpt", map_location="cpu", weights_only=True)
    entry = ck["scriba"]
    assert entry["vgsl"].startswith("[1,16,0,1") and entry["codec"]
    assert entry["train_config"]["spec"] == TINY_SPEC and entry["global_config"]["seed"] == 7
    assert any(k.startswith("net.nn.") for k in ck["state_dict"])
    assert not list(out.glob(".*tmp"))


def test_coreml_weights(synth, tmp_path):
    r = train(tiny_config(synth, tmp_path, epochs=1, weights_format="coreml"), tiny_global(), progress=False)
    assert r.weights and r.weights.endswith(".mlmodel") and Path(r.weights).stat().st_size > 0
    from scriba.weights import load_model

    assert load_model(r.weights).codec is not None


def test_partition_recorded_and_augment_on_train_only(synth, tmp_path):
    seen = {}

    class Spy(L.Callback):
        def on_train_start(self, trainer, pl_module):
            seen["train_aug"] = trainer.datamodule.train_set.augmenter is not None
            seen["val_aug"] = trainer.datamodule.val_set.augmenter is not None

    cfg = tiny_config(synth, tmp_path, epochs=1, evaluation_data=[], partition=0.75, augment=True)
    r = train(cfg, tiny_global(), callbacks=[Spy()], progress=False)
    split = json.loads((tmp_path / PARTITION_FILE).read_text())
    assert split["mode"] == "partition" and split["partition"] == 0.75
    assert len(split["train"]) == 24 and len(split["validation"]) == 8
    assert not set(split["train"]) & set(split["validation"])
    assert r.train_lines == 24 and r.val_lines == 8
    val_lst = (tmp_path / "partition_val.lst").read_text().split()
    assert sorted(val_lst) == sorted(str(Path(p).resolve()) for p in split["validation"])
    assert seen == {"train_aug": True, "val_aug": False}


def test_tensorboard_logger(synth, tmp_path):
    logs = tmp_path / "logs"
    train(
        tiny_config(synth, tmp_path / "out", epochs=1, pl_logger="tensorboard", log_dir=str(logs)),
        tiny_global(),
        progress=False,
    )
    events = list(logs.rglob("events.out.tfevents.*"))
    assert events and events[0].stat().st_size > 0


def test_tensorboard_logs_go_where_the_log_dir_help_says(synth, tmp_path, monkeypatch, capsys):
    from shared_paths import run_ketos

    rc, out, _ = run_ketos(["train", "--help"], capsys)
    assert rc == 0 and "current working directory, ketos_train" in " ".join(out.split())
    monkeypatch.chdir(tmp_path)
    train(tiny_config(synth, tmp_path / "out", epochs=1, pl_logger="tensorboard"), tiny_global(), progress=False)
    assert list((tmp_path / "ketos_train").rglob("events.out.tfevents.*"))  # the guide's default


def test_freeze_backbone_keeps_all_but_output_layer(synth, tmp_path):
    before: dict[str, torch.Tensor] = {}

    class Snap(L.Callback):
        def on_train_start(self, trainer, pl_module):
            before.update({k: v.detach().clone() for k, v in pl_module.net.state_dict().items()})

    after: dict[str, torch.Tensor] = {}

    class End(L.Callback):
        def on_train_end(self, trainer, pl_module):
            after.update({k: v.detach().clone() for k, v in pl_module.net.state_dict().items()})

    # 32 lines per epoch, 2 epochs = 64 samples: frozen throughout with 1000
    train(
        tiny_config(synth, tmp_path, epochs=2, freeze_backbone=1000),
        tiny_global(),
        callbacks=[Snap(), End()],
        progress=False,
    )
    out_keys = [k for k in before if k.startswith("nn.O_")]
    assert out_keys
    for k, v in before.items():
        if k in out_keys:
            assert not torch.equal(v, after[k]), k
        else:
            assert torch.equal(v, after[k]), k


def test_freeze_backbone_unfreezes_after_samples(synth, tmp_path):
    from scriba.trainer.callbacks import FreezeBackbone

    fb = FreezeBackbone(16)
    state = {}

    class Check(L.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            conv = pl_module.net.nn[0].co.weight
            state.setdefault("req", []).append(conv.requires_grad)

    train(tiny_config(synth, tmp_path, epochs=1), tiny_global(), callbacks=[fb, Check()], progress=False)
    # batches of 8 lines: frozen for the first two (16 samples), trainable after
    assert state["req"] == [False, False, True, True]


def test_min_delta_early_stopping(synth, tmp_path):
    from lightning.pytorch.callbacks import EarlyStopping

    found = {}

    class Spy(L.Callback):
        def on_train_end(self, trainer, pl_module):
            es = [c for c in trainer.callbacks if isinstance(c, EarlyStopping)][0]
            found.update(min_delta=abs(float(es.min_delta)), patience=es.patience)

    # no run can improve accuracy by 5: with lag 1 it stops after the second validation
    cfg = tiny_config(synth, tmp_path, quit="early", lag=1, min_delta=5.0, epochs=-1)
    r = train(cfg, tiny_global(), callbacks=[Spy()], progress=False)
    assert r.stopped == "early" and r.epochs == 2
    assert found == {"min_delta": 5.0, "patience": 1}


def test_min_epochs_holds_early_stopping(synth, tmp_path):
    cfg = tiny_config(synth, tmp_path, quit="early", lag=1, min_delta=5.0, epochs=-1, min_epochs=4)
    r = train(cfg, tiny_global(), progress=False)
    assert r.epochs == 4 and len(r.history) == 4


def test_aneal_stops_when_schedule_reaches_floor(synth, tmp_path):
    cfg = tiny_config(synth, tmp_path, quit="aneal", epochs=-1, schedule="cosine", cos_t_max=2, cos_min_lr=1e-5)
    r = train(cfg, tiny_global(), progress=False)
    assert r.stopped == "aneal" and r.epochs == 2


def test_lr_trajectory_applied_per_optimizer_step(synth, tmp_path):
    lrs: list[tuple[int, float]] = []

    class Spy(L.Callback):
        def on_before_optimizer_step(self, trainer, pl_module, optimizer):
            lrs.append((trainer.global_step, optimizer.param_groups[0]["lr"]))

    cfg = tiny_config(synth, tmp_path, epochs=2, schedule="1cycle", accumulate_grad_batches=2, warmup=2)
    train(cfg, tiny_global(), callbacks=[Spy()], progress=False)
    # 4 batches per epoch, 2 per optimizer step: 4 optimizer steps over the cycle
    assert [s for s, _ in lrs] == [0, 1, 2, 3]
    from scriba.trainer.optim import LRSchedule

    ref = LRSchedule("1cycle", 3e-3, steps_per_epoch=2, epochs=2, warmup=2)
    assert [lr for _, lr in lrs] == pytest.approx([ref.lr(s) for s in range(4)])


def test_freq_fraction_validates_within_epoch(synth, tmp_path):
    r = train(tiny_config(synth, tmp_path, epochs=1, freq=0.5), tiny_global(), progress=False)
    assert [h["epoch"] for h in r.history] == [0.5, 1.0]


def test_workers_and_threads(synth, tmp_path):
    seen = []

    class Spy(L.Callback):
        def on_train_start(self, trainer, pl_module):
            seen.append(torch.get_num_threads())

    r = train(
        tiny_config(synth, tmp_path, epochs=1, augment=True),
        tiny_global(num_workers=1, num_threads=2),
        callbacks=[Spy()],
        progress=False,
    )
    # the run's thread count while it runs, the caller's (1, see conftest) once it returns
    assert r.weights and seen == [2] and torch.get_num_threads() == 1


# -- bad input --------------------------------------------------------------------------------------------------


def test_no_training_data(tmp_path):
    cfg = tiny_config({"train": [], "val": []}, tmp_path)
    with pytest.raises(NoDataError):
        train(cfg, tiny_global(), progress=False)


def test_no_validation_lines(synth, tmp_path):
    empty = tmp_path / "e.png"
    import shutil

    shutil.copy(synth["val"][0], empty)
    (tmp_path / "e.gt.txt").write_text("   \n", encoding="utf-8")
    with pytest.raises(NoDataError, match="validation"):
        train(tiny_config(synth, tmp_path / "out", evaluation_data=[str(empty)]), tiny_global(), progress=False)


def test_unwritable_output(synth, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(ScribaError, match="cannot be written"):
        train(tiny_config(synth, blocker / "out"), tiny_global(), progress=False)


def test_validation_chars_missing_from_codec_count_as_errors(synth, tmp_path, caplog):
    from train_helpers import make_lines

    odd = make_lines(tmp_path / "odd", 2, 5, "o")
    Path(odd[0]).with_suffix("").with_suffix(".gt.txt").write_text("xyz bad", encoding="utf-8")
    r = train(tiny_config(synth, tmp_path / "out", epochs=1, evaluation_data=odd), tiny_global(), progress=False)
    msgs = [m for m in caplog.messages if "missing from the codec" in m]
    assert len(msgs) == 1 and "'x'" in msgs[0] and "counted as errors" in msgs[0]
    assert r.history[0]["val_chars"] == sum(
        len(Path(p).with_suffix("").with_suffix(".gt.txt").read_text()) for p in odd
    )


def test_nan_loss_skips_then_stops_without_a_checkpoint_of_nan_weights(synth, tmp_path):
    class Poison(L.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            if trainer.current_epoch == 1:
                with torch.no_grad():
                    pl_module.net.nn[-1].lin.bias.fill_(float("nan"))

    with pytest.raises(ScribaError, match="NaN") as err:
        cfg = tiny_config(synth, tmp_path, epochs=30, batch_size=1)
        train(cfg, tiny_global(), callbacks=[Poison()], progress=False)
    message = str(err.value)
    assert "diverged" in message and "no checkpoint of the diverged weights" in message and "resume" not in message
    assert not (tmp_path / "checkpoint_abort.ckpt").exists()
    best = list(tmp_path.glob("best_*.safetensors"))  # from the validation of epoch 0
    assert len(best) == 1 and f"best weights so far are in {best[0]}" in message
    assert all(torch.isfinite(v).all() for v in load_model(str(best[0])).state_dict().values())


def test_nan_batch_is_skipped(synth, tmp_path):
    skipped = {}

    class OneBad(L.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            if batch_idx == 1 and trainer.current_epoch == 0:
                batch["images"][:] = float("nan")

        def on_train_end(self, trainer, pl_module):
            skipped["n"] = pl_module.skipped_batches

    r = train(tiny_config(synth, tmp_path, epochs=1), tiny_global(), callbacks=[OneBad()], progress=False)
    assert skipped["n"] == 1 and r.weights


def test_load_checkpoint_starts_fresh_run(base_run, synth, tmp_path):
    steps = []

    class Spy(L.Callback):
        def on_train_start(self, trainer, pl_module):
            steps.append((trainer.current_epoch, trainer.global_step, len(trainer.optimizers[0].state)))

    ckpt = Path(base_run.output_dir) / "checkpoint_last.ckpt"
    r = train(tiny_config(synth, tmp_path, epochs=1, load=str(ckpt)), tiny_global(), callbacks=[Spy()], progress=False)
    assert steps == [(0, 0, 0)] and r.epochs == 1
    first = torch.load(ckpt, map_location="cpu", weights_only=True)["scriba"]["codec"]
    assert torch.load(tmp_path / "checkpoint_last.ckpt", weights_only=True)["scriba"]["codec"] == first


def test_explicit_codec(synth, tmp_path):
    chars = sorted(set("".join(Path(p).with_suffix("").with_suffix(".gt.txt").read_text() for p in synth["train"])))
    codec = {c: [i + 3] for i, c in enumerate(chars)}
    codec["ab"] = [1, 2]
    r = train(tiny_config(synth, tmp_path, epochs=1, codec=codec), tiny_global(), progress=False)
    from scriba.weights import load_model

    model = load_model(r.weights)
    assert model.codec.c2l == codec
    assert model.nn[-1].lin.weight.shape[0] == len(chars) + 3


def test_xml_pages(kraken_data, tmp_path):
    page = kraken_data / "170025120000003,0074.xml"
    cfg = tiny_config(
        {"train": [str(page)], "val": []}, tmp_path, epochs=1, format_type="xml", evaluation_data=[], partition=0.8
    )
    r = train(cfg, tiny_global(), progress=False)
    assert r.train_lines + r.val_lines == 44 and r.weights
    split = json.loads((tmp_path / PARTITION_FILE).read_text())
    assert all("#" in k for k in split["validation"])
    assert not (tmp_path / "partition_val.lst").exists()
    from scriba.weights import load_model

    assert load_model(r.weights).metadata["seg_type"] == "baselines"


def test_rich_progress(synth, tmp_path):
    r = train(tiny_config(synth, tmp_path, epochs=1), tiny_global(), progress=True)
    assert r.lines_per_second and r.lines_per_second[0] > 0


def test_learns_to_read(synth, tmp_path):
    from PIL import Image

    from scriba.weights import load_model

    cfg = tiny_config(synth, tmp_path, epochs=40, batch_size=4, spec="[1,24,0,1 Cr3,3,16 Mp2,2 S1(1x0)1,3 Lbx48]")
    r = train(cfg, tiny_global(), progress=False)
    # 25 epochs reached 0.27-0.28 on an AVX2 host (0.3 on AVX-512): 40 reach 0.87-0.92
    assert r.best_accuracy is not None and r.best_accuracy > 0.5
    model = load_model(r.weights)
    preds = Recognizer(model, batch_size=1).predict([Image.open(p) for p in synth["val"]])
    refs = [Path(p).with_suffix("").with_suffix(".gt.txt").read_text() for p in synth["val"]]
    from scriba.metrics import Tally

    t = Tally()
    for ref, pred in zip(refs, preds):
        t.add(ref, pred.text)
    assert t.char_accuracy == pytest.approx(r.best_accuracy, abs=0.05)


@pytest.mark.parametrize("cache_mb", [0, 100])
def test_unreadable_training_line_is_left_out(synth, tmp_path, caplog, cache_mb):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG broken")
    (tmp_path / "bad.gt.txt").write_text("bad", encoding="utf-8")
    seen = {}

    class Spy(L.Callback):
        def on_train_start(self, trainer, pl_module):
            seen["cached"] = trainer.datamodule.train_set.cached

    data = {"train": [*synth["train"], str(bad)], "val": synth["val"]}
    g = tiny_global(cache_mb=cache_mb)
    r = train(tiny_config(data, tmp_path / "out", epochs=1), g, callbacks=[Spy()], progress=False)
    assert r.weights
    assert seen["cached"] is (cache_mb != 0)
    assert any("bad.png" in m and "left out" in m for m in caplog.messages)


def test_cached_lines_load_in_process_on_cpu(synth, tmp_path):
    seen = {}

    class Spy(L.Callback):
        def on_train_start(self, trainer, pl_module):
            dm = trainer.datamodule
            seen.update(train=dm.train_workers, val=dm.val_workers, cached=dm.train_set.cached)

    train(
        tiny_config(synth, tmp_path, epochs=1),
        tiny_global(num_workers=2, device="cpu"),
        callbacks=[Spy()],
        progress=False,
    )
    assert seen == {"train": 0, "val": 0, "cached": True}
    train(
        tiny_config(synth, tmp_path / "aug", epochs=1, augment=True),
        tiny_global(num_workers=2, device="cpu"),
        callbacks=[Spy()],
        progress=False,
    )
    assert seen["train"] == 2 and seen["val"] == 0


def test_batches_reshuffled_every_epoch(synth, tmp_path):
    seen: dict[int, list[tuple[str, ...]]] = {}

    class Spy(L.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            seen.setdefault(trainer.current_epoch, []).append(tuple(batch["ids"]))

    train(tiny_config(synth, tmp_path, epochs=2), tiny_global(), callbacks=[Spy()], progress=False)
    assert seen[0] != seen[1]
    assert sorted(i for b in seen[0] for i in b) == sorted(i for b in seen[1] for i in b) == sorted(synth["train"])


def test_bf16_mixed_precision_on_cpu(synth, tmp_path):
    r = train(tiny_config(synth, tmp_path, epochs=1), tiny_global(precision="bf16-mixed", device="cpu"), progress=False)
    assert r.weights and all(h["train_loss"] == h["train_loss"] for h in r.history)


def test_one_summary_line_per_epoch_without_terminal(synth, tmp_path, capfd):
    train(tiny_config(synth, tmp_path, epochs=2), tiny_global(), progress=False)
    lines = [ln for ln in capfd.readouterr().err.splitlines() if ln.startswith("epoch ")]
    assert len(lines) == 2
    assert "train_loss" in lines[0] and "val_accuracy" in lines[0] and "lines/s" in lines[0]
    assert "early stopping" in lines[0]


def test_micro_batches_keep_optimizer_steps_and_gradients(synth, tmp_path):
    steps: dict[str, list[int]] = {}

    class Spy(L.Callback):
        def __init__(self, tag):
            self.tag = tag

        def on_before_optimizer_step(self, trainer, pl_module, optimizer):
            steps.setdefault(self.tag, []).append(trainer.global_step)
            if trainer.global_step == 0:
                g = torch.cat([p.grad.flatten() for p in pl_module.parameters() if p.grad is not None])
                steps.setdefault(self.tag + "_grad", []).append(float(g.norm()))

    whole = train(
        tiny_config(synth, tmp_path / "a", epochs=1),
        tiny_global(device="cpu", micro_batch=0),
        callbacks=[Spy("whole")],
        progress=False,
    )
    micro = train(
        tiny_config(synth, tmp_path / "b", epochs=1),
        tiny_global(device="cpu", micro_batch=1),  # one line per pass
        callbacks=[Spy("micro")],
        progress=False,
    )
    assert steps["whole"] == steps["micro"] == [0, 1, 2, 3]
    # same lines per step and the same summed loss: gradients agree up to padding effects at line ends
    assert steps["micro_grad"][0] == pytest.approx(steps["whole_grad"][0], rel=0.05)
    assert micro.history[0]["train_loss"] == pytest.approx(whole.history[0]["train_loss"], rel=0.1)


def test_max_time_validates_then_stops_mid_epoch(synth, tmp_path, capsys):
    # 32 batches of 1 line at 0.1 s or more each: an epoch outlasts the 1.2 s budget
    slow = SlowBatches(0.1)
    cfg = tiny_config(synth, tmp_path, quit="early", epochs=-1, batch_size=1, max_time=0.02)
    r = train(cfg, tiny_global(), callbacks=[slow], progress=False)
    assert r.stopped == "time"
    assert 0 < slow.steps < 32
    # the budget's end still validates once, so the run leaves weights of what it trained
    assert len(r.history) == 1 and r.weights and Path(r.weights).exists()
    assert "--max-time" in capsys.readouterr().err


def test_max_time_outranks_min_epochs(synth, tmp_path):
    # --min-epochs holds back early stopping, not the wall-clock budget (Lightning's own Timer waited for it)
    slow = SlowBatches(0.1)
    cfg = tiny_config(synth, tmp_path, quit="early", epochs=-1, min_epochs=3, batch_size=1, max_time=0.02)
    r = train(cfg, tiny_global(), callbacks=[slow], progress=False)
    assert r.stopped == "time"
    assert 0 < slow.steps < 32 and len(r.history) == 1


def test_cosine_over_the_time_budget_anneals_as_the_budget_is_spent(synth, tmp_path):
    rates: list[float] = []

    class Rates(L.Callback):
        def on_train_batch_end(self, trainer, *args):
            rates.append(trainer.optimizers[0].param_groups[0]["lr"])

    cfg = tiny_config(synth, tmp_path, quit="early", epochs=-1, batch_size=1, max_time=0.03, schedule="cosine",
                      cos_t_max=0, cos_min_lr=0.0, ema=0.0)
    r = train(cfg, tiny_global(), callbacks=[SlowBatches(0.1), Rates()], progress=False)
    assert r.stopped == "time" and len(rates) >= 8
    # the rate follows the budget spent (with some batches of start-up before it), not the epochs
    assert rates[0] > 0.8 * cfg.lrate and rates[-1] < 0.1 * cfg.lrate
    assert all(b <= a for a, b in zip(rates, rates[1:], strict=False))


def test_cosine_over_the_run_needs_its_length(synth, tmp_path):
    cfg = tiny_config(synth, tmp_path, quit="early", epochs=-1, schedule="cosine", cos_t_max=0)
    with pytest.raises(UsageError, match="--epochs or --max-time"):
        train(cfg, tiny_global(), progress=False)
    assert not any(tmp_path.iterdir())  # refused before anything was read or written


def test_max_time_zero_means_no_budget(synth, tmp_path):
    r = train(tiny_config(synth, tmp_path, epochs=2, max_time=0.0), tiny_global(), progress=False)
    assert r.stopped == "fixed" and r.epochs == 2


def test_ema_validates_and_exports_the_averaged_weights(synth, tmp_path):
    from scriba.trainer.averaging import EMA
    from scriba.weights.checkpoint import read_checkpoint_dict

    r = train(tiny_config(synth, tmp_path, epochs=2, ema=0.9), tiny_global(), progress=False)
    ckpt = read_checkpoint_dict(r.best_checkpoint)
    averaged, raw = ckpt["state_dict"], ckpt["current_model_state"]
    assert averaged.keys() == raw.keys()
    assert any(not torch.equal(averaged[k], raw[k]) for k in averaged)
    exported = load_model(r.weights).state_dict()
    net = {k.split("net.", 1)[-1]: v for k, v in averaged.items()}
    assert all(torch.equal(exported[k], net[k]) for k in exported)
    # the decay warms up: the first updates follow the weights closely, later ones at most `decay`
    ema = EMA(0.999)
    a, w = torch.zeros(1), torch.ones(1)
    assert float(ema._average(a, w, torch.tensor(0))) == pytest.approx(1 - 1 / 10)
    assert float(ema._average(a, w, torch.tensor(10**6))) == pytest.approx(1 - 0.999)


def test_ema_is_on_by_default_and_off_at_zero(synth, tmp_path):
    from scriba.weights.checkpoint import read_checkpoint_dict

    on = train(tiny_config(synth, tmp_path / "on", epochs=1), tiny_global(), progress=False)
    off = train(tiny_config(synth, tmp_path / "off", epochs=1, ema=0.0), tiny_global(), progress=False)
    # the averaging callback keeps the raw weights beside the averaged ones; without it there are none
    assert "current_model_state" in read_checkpoint_dict(on.best_checkpoint)
    assert "current_model_state" not in read_checkpoint_dict(off.best_checkpoint)


def test_ema_keeps_an_unchanging_weight_exactly():
    from scriba.trainer.averaging import EMA

    # d*a + (1-d)*a rounds away from a for most a: a frozen layer would drift under the average
    a = torch.randn(10000)
    for n in (0, 7, 10**6):
        assert torch.equal(EMA(0.999)._average(a.clone(), a.clone(), torch.tensor(n)), a)


def test_ema_out_of_range_is_a_usage_error(synth, tmp_path):
    from scriba.errors import UsageError

    with pytest.raises(UsageError, match="--ema"):
        train(tiny_config(synth, tmp_path, ema=1.0), tiny_global(), progress=False)


def test_aux_ctc_head_trains_the_convolutions_and_stays_out_of_the_weights(synth, tmp_path):
    from scriba.weights.checkpoint import read_checkpoint_dict

    plain = train(tiny_config(synth, tmp_path / "plain", epochs=2, aux_ctc=0.0), tiny_global(), progress=False)
    aux = train(tiny_config(synth, tmp_path / "aux", epochs=2, aux_ctc=0.5), tiny_global(), progress=False)
    ckpt = read_checkpoint_dict(aux.best_checkpoint)["state_dict"]
    assert {k for k in ckpt if k.startswith("shortcut.")} == {"shortcut.head.weight", "shortcut.head.bias"}
    # the head's loss reaches the convolutions: the same seed ends elsewhere
    a, b = load_model(plain.weights).state_dict(), load_model(aux.weights).state_dict()
    assert a.keys() == b.keys() and not all(torch.equal(a[k], b[k]) for k in a)
    losses = [h["train_loss"] for h in aux.history]
    assert losses[-1] < losses[0]
    # the exported network is the plain one: the same shapes, no head, and it predicts
    assert all(a[k].shape == b[k].shape for k in a)
    from PIL import Image

    assert Recognizer(load_model(aux.weights)).predict([Image.open(synth["val"][0])])[0].text is not None


def test_aux_ctc_is_on_by_default_and_left_out_for_a_network_without_a_recurrent_layer(synth, tmp_path, caplog):
    from scriba.config import TrainConfig
    from scriba.weights.checkpoint import read_checkpoint_dict

    assert TrainConfig().aux_ctc > 0
    cfg = tiny_config(synth, tmp_path, epochs=1, spec="[1,16,0,1 Cr3,3,8 Mp2,2 S1(1x0)1,3 Cr1,1,16]")
    r = train(cfg, tiny_global(), progress=False)
    assert "training without the auxiliary CTC head" in caplog.text
    assert not any(k.startswith("shortcut.") for k in read_checkpoint_dict(r.best_checkpoint)["state_dict"])

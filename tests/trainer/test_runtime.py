"""The scaffolding shared by ``ketos train`` and ``ketos pretrain``."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import pytest
import torch

from scriba.config import GlobalConfig, PretrainConfig, TrainConfig
from scriba.errors import ScribaError, UsageError
from scriba.trainer import runtime


def test_parse_device() -> None:
    assert runtime.parse_device("auto") == ("auto", 1)
    assert runtime.parse_device("cpu") == ("cpu", 1)
    assert runtime.parse_device("cuda") == ("gpu", 1)
    assert runtime.parse_device("cuda:1") == ("gpu", [1])
    assert runtime.parse_device("cuda:0,cuda:1") == ("gpu", [0, 1])
    assert runtime.parse_device("cuda:2, cuda:3") == ("gpu", [2, 3])
    with pytest.raises(UsageError, match="twice"):
        runtime.parse_device("cuda:0,cuda:0")
    with pytest.raises(UsageError, match="invalid device"):
        runtime.parse_device("tpu")


@pytest.mark.parametrize("cfg_type", [TrainConfig, PretrainConfig])
def test_check_run_options_names_the_option(cfg_type: type) -> None:
    runtime.check_run_options(cfg_type(quit="fixed", epochs=1))
    with pytest.raises(UsageError, match="--quit"):
        runtime.check_run_options(cfg_type(quit="never"))
    with pytest.raises(UsageError, match="--freq"):
        runtime.check_run_options(cfg_type(freq=1.5))
    with pytest.raises(UsageError, match="mutually exclusive"):
        runtime.check_run_options(cfg_type(load="a", resume="b"))


@pytest.mark.parametrize("cfg_type", [TrainConfig, PretrainConfig])
def test_epochs_under_early_stopping_are_warned_about(cfg_type: type, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="scriba"):
        runtime.check_run_options(cfg_type(quit="early", epochs=2, schedule="constant"))
    assert "--epochs 2 does not end the run under --quit early" in caplog.text and "-q fixed" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="scriba"):
        runtime.check_run_options(cfg_type(quit="fixed", epochs=2))
        runtime.check_run_options(cfg_type(quit="early"))  # no --epochs given
        runtime.check_run_options(cfg_type(quit="early", epochs=2, schedule="1cycle"))  # -N is the cycle's length
        runtime.check_run_options(cfg_type(quit="early", epochs=2, schedule="cosine", cos_t_max=0))
    assert "--epochs" not in caplog.text


def test_seed_run_keeps_a_stored_sampler_seed() -> None:
    assert runtime.seed_run(GlobalConfig(seed=3), {}) == (3, 3)
    assert runtime.seed_run(GlobalConfig(seed=3), {"sampler_seed": 7}) == (3, 7)
    assert runtime.seed_run(GlobalConfig(seed=None, deterministic=True), {})[0] == 42


def test_restore_configs_rejects_a_foreign_checkpoint(tmp_path: Path) -> None:
    bogus = tmp_path / "other.ckpt"
    torch.save({"state_dict": {}, "scriba": {"train_config": {}}}, bogus)
    with pytest.raises(ScribaError, match="not a scriba pretraining checkpoint"):
        runtime.restore_configs(
            PretrainConfig(resume=str(bogus)), GlobalConfig(), key="pretrain_config", task="pretraining"
        )


def test_plain_holds_only_weights_only_types() -> None:
    value = {1: (torch.tensor(2.0), torch.tensor([1, 2])), "x": math.nan, "p": Path("a")}
    assert runtime.plain(value) == {"1": [2.0, [1, 2]], "x": None, "p": "a"}
    assert type(runtime.plain(torch.__version__)) is str  # a str subclass would not load with weights_only


def test_write_split_only_for_a_partition(tmp_path: Path) -> None:
    assert runtime.write_split(tmp_path, {"mode": "explicit"}) is None
    split = {"mode": "partition", "train": ["a.png"], "validation": ["b.xml#l1"]}
    path = runtime.write_split(tmp_path, split)
    assert json.loads(Path(path).read_text()) == split  # type: ignore[arg-type]
    assert (tmp_path / "partition_train.lst").exists()
    assert not (tmp_path / "partition_val.lst").exists()  # not whole files


def test_auto_is_the_default_and_reaches_the_trainer(monkeypatch, tmp_path) -> None:
    from scriba import machine

    monkeypatch.setattr(machine, "cpu_features", lambda: machine.CpuFeatures("AVX512", frozenset({"amx_bf16"})))
    assert GlobalConfig().precision == "auto"
    trainer = runtime.build_trainer(
        TrainConfig(quit="fixed", epochs=1), GlobalConfig(device="cpu"), tmp_path, [], logger_name="t", min_epochs=None, accumulate_grad_batches=1,
    )
    assert "bf16" in type(trainer.precision_plugin).__name__.lower() or trainer.precision == "bf16-mixed"



"""The scaffolding shared by ``ketos train`` and ``ketos pretrain``."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
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


def test_write_split_only_for_a_partition(tmp_path: Path) -> None:
    assert runtime.write_split(tmp_path, {"mode": "explicit"}) is None
    split = {"mode": "partition", "train": ["a.png"], "validation": ["b.xml#l1"]}
    path = runtime.write_split(tmp_path, split)
    assert json.loads(Path(path).read_text()) == split  # type: ignore[arg-type]
    assert (tmp_path / "partition_train.lst").exists()
    assert not (tmp_path / "partition_val.lst").exists()  # not whole files


@pytest.mark.parametrize(
    ("precision", "bf16_cpu", "accelerator", "task", "expected"),
    [
        ("auto", True, "cpu", "train", "bf16-mixed"),
        ("auto", False, "cpu", "train", "32-true"),
        ("auto", True, "cpu", "pretrain", "32-true"),
        ("auto", True, "gpu", "train", "32-true"),
        ("32-true", True, "cpu", "train", "32-true"),
        ("bf16-mixed", False, "cpu", "pretrain", "bf16-mixed"),
    ],
)
def test_auto_precision(monkeypatch, precision, bf16_cpu, accelerator, task, expected) -> None:
    monkeypatch.setattr(runtime, "cpu_has_bf16", lambda: bf16_cpu)
    assert runtime.resolve_precision(GlobalConfig(precision=precision), accelerator, task=task) == expected


def test_auto_is_the_default_and_reaches_the_trainer(monkeypatch, tmp_path) -> None:
    monkeypatch.setattr(runtime, "cpu_has_bf16", lambda: True)
    assert GlobalConfig().precision == "auto"
    trainer = runtime.build_trainer(
        TrainConfig(quit="fixed", epochs=1), GlobalConfig(), accelerator="cpu", devices=1, out=tmp_path,
        callbacks=[], logger_name="t", min_epochs=None, accumulate_grad_batches=1,
    )
    assert "bf16" in type(trainer.precision_plugin).__name__.lower() or trainer.precision == "bf16-mixed"


def test_cpu_has_bf16_reads_cpuinfo() -> None:
    flags = ""
    try:
        flags = next((ln for ln in Path("/proc/cpuinfo").read_text().splitlines() if ln.startswith("flags")), "")
    except OSError:
        pass
    assert runtime.cpu_has_bf16() == ("avx512_bf16" in flags.split() or "amx_bf16" in flags.split())


_FAULTS_PROBE = """
import resource, sys, torch
from scriba.trainer import runtime
applied = runtime.keep_freed_memory() if sys.argv[1] == "keep" else False
def step():
    bufs = [torch.ones(2 * 1024**2) for _ in range(20)]  # 20 buffers of 8 MB, like a step's activations
    del bufs
step()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(4):
    step()
print(applied, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc tunables")
def test_freed_step_memory_is_reused_without_page_faults():
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}

    def faults(mode: str) -> tuple[str, int]:
        out = subprocess.run([sys.executable, "-c", _FAULTS_PROBE, mode], env=env, capture_output=True, text=True,
                             check=True).stdout.split()
        return out[0], int(out[1])

    applied, kept = faults("keep")
    if applied != "True":
        pytest.skip("the C library is not glibc")
    _, default = faults("default")
    # four steps of 160 MB: glibc's defaults give (some of) the pages back and fault them in again (43,000 to
    # 164,000 faults seen); kept, the heap serves them again (2,000 to 8,000)
    assert default > 20_000
    assert kept * 4 < default

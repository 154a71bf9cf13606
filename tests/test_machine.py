"""The machine module: the CPU probe, each tuning knob through the configuration, the log line, the record in
the checkpoint, the warnings on a resume elsewhere, and the process settings put back after a job."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import warnings

import pytest
import torch

from scriba import machine
from scriba.config import GlobalConfig
from scriba.errors import UsageError
from scriba.vgsl import layers
from shared_paths import run_ketos
from train_helpers import make_lines, tiny_config, tiny_global

AVX2 = machine.CpuFeatures("AVX2", frozenset({"avx2", "fma"}))
AVX512 = machine.CpuFeatures("AVX512", frozenset({"avx2", "avx512f"}))
AVX512_BF16 = machine.CpuFeatures("AVX512", frozenset({"avx2", "avx512f", "avx512_bf16"}))


# -- the probe -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("capability", "flags", "avx2_only", "bf16"),
    [
        ("AVX2", "fpu sse2 avx2 fma", True, False),
        ("AVX512", "fpu avx2 avx512f avx512bw", False, False),
        ("AVX512", "fpu avx2 avx512f avx512_bf16", False, True),
        ("AVX512", "fpu avx2 avx512f amx_bf16 amx_tile", False, True),
        ("DEFAULT", "fpu sse2", False, False),
    ],
)
def test_probe_reads_torch_capability_and_cpuinfo_flags(tmp_path, monkeypatch, capability, flags, avx2_only, bf16):
    info = tmp_path / "cpuinfo"
    info.write_text(f"processor\t: 0\nmodel name\t: Some CPU\nflags\t\t: {flags}\n\nprocessor\t: 1\nflags\t\t: fpu\n")
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: capability)
    f = machine.probe_cpu(str(info))
    assert f.capability == capability
    assert f.flags == frozenset(flags.split())  # the first processor's line
    assert (f.avx2_only, f.native_bf16) == (avx2_only, bf16)


def test_probe_without_cpuinfo_assumes_no_native_bf16(tmp_path):
    f = machine.probe_cpu(str(tmp_path / "missing"))
    assert f.flags == frozenset() and not f.native_bf16
    assert f.capability == torch.backends.cpu.get_cpu_capability()


def test_cpu_is_probed_once(monkeypatch):
    calls = []
    monkeypatch.setattr(machine, "probe_cpu", lambda: calls.append(1) or AVX2)
    machine.cpu_features.cache_clear()
    try:
        assert machine.cpu_features() is machine.cpu_features() is AVX2
        assert calls == [1]
    finally:
        machine.cpu_features.cache_clear()


# -- the knobs -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("precision", "features", "accelerator", "task", "expected"),
    [
        ("auto", AVX512_BF16, "cpu", "train", "bf16-mixed"),
        ("auto", AVX512, "cpu", "train", "32-true"),
        ("auto", AVX512_BF16, "cpu", "pretrain", "32-true"),
        ("auto", AVX512_BF16, "gpu", "train", "32-true"),
        ("32-true", AVX512_BF16, "cpu", "train", "32-true"),
        ("bf16-mixed", AVX2, "cpu", "pretrain", "bf16-mixed"),
    ],
)
def test_auto_precision(precision, features, accelerator, task, expected):
    g = GlobalConfig(precision=precision)
    assert machine.resolve_precision(g, accelerator, task=task, features=features) == expected


@pytest.mark.parametrize(
    ("setting", "features", "expected"),
    [("auto", AVX2, "nchw"), ("auto", AVX512, "nhwc"), ("nhwc", AVX2, "nhwc"), ("NCHW", AVX512, "nchw")],
)
def test_weight_gradient_layout(setting, features, expected):
    assert machine.weight_gradient_layout(GlobalConfig(weight_gradient_layout=setting), features) == expected


def test_unknown_weight_gradient_layout_names_the_option():
    with pytest.raises(UsageError, match="--weight-gradient-layout 'blocked'"):
        machine.weight_gradient_layout(GlobalConfig(weight_gradient_layout="blocked"), AVX2)


def test_micro_batch_sized_to_the_lines():
    g = GlobalConfig()
    # kraken's 120-px network on froc lines: four per pass (1.3x one per pass, AVX-512 and AVX2 alike)
    assert machine.micro_batch(g, 16, 120, [1600] * 10) == 4
    # the default 64-px network on the same lines: -B 4 whole (2x2 was 0.74x its speed), -B 16 as 2x8
    assert machine.micro_batch(g, 4, 64, [855] * 10) == 4
    assert machine.micro_batch(g, 16, 64, [855] * 10) == 8
    assert machine.micro_batch(g, 16, 16, [200] * 10) == 16  # small lines keep their batch
    assert machine.micro_batch(g, 12, 120, [2400] * 10) == 2  # largest divisor of 12 that fits
    assert machine.micro_batch(g, 16, 120, [8000] * 10) == 1  # a line too large for the budget runs alone
    assert machine.micro_batch(g, 1, 120, [1350]) == 1
    assert machine.micro_batch(g, 16, 120, []) == 16  # nothing known about the lines


@pytest.mark.parametrize(("setting", "expected"), [(0, 16), (1, 1), (5, 4), (16, 16), (40, 16)])
def test_micro_batch_from_the_config(setting, expected):
    # 0 keeps whole batches; N: the largest divisor of the batch size not above N, whatever the lines
    assert machine.micro_batch(GlobalConfig(micro_batch=setting), 16, 120, [1350] * 10) == expected


def test_negative_budgets_name_the_option():
    with pytest.raises(UsageError, match="--micro-batch"):
        machine.micro_batch(GlobalConfig(micro_batch=-1), 16, 120, [100])
    with pytest.raises(UsageError, match="--cache-mb"):
        machine.cache_bytes(GlobalConfig(cache_mb=-1))


def test_cache_budget_from_the_config():
    assert machine.cache_bytes(GlobalConfig()) == 2048 * 1024**2
    assert machine.cache_bytes(GlobalConfig(cache_mb=0)) == 0
    assert machine.cache_bytes(GlobalConfig(cache_mb=1.5)) == 1024**2 * 3 // 2


def test_global_options_and_experiment_keys_reach_the_config(tmp_path, monkeypatch, capsys):
    import scriba.jobs.train.job as job

    seen = []
    monkeypatch.setattr(job, "train", lambda cfg, g: seen.append(g) or job.TrainResult(output_dir="x"))
    monkeypatch.chdir(tmp_path)
    (tmp_path / "p.xml").write_text("<x/>")
    args = ["--cache-mb", "0", "--micro-batch", "2", "--weight-gradient-layout", "nchw", "train", "-f", "xml", "p.xml"]
    rc, _, err = run_ketos(args, capsys)
    assert rc == 0, err
    (tmp_path / "exp.yml").write_text("cache_mb: 64\nmicro_batch: 4\nweight_gradient_layout: nhwc\n")
    rc, _, err = run_ketos(["--config", "exp.yml", *args[6:]], capsys)
    assert rc == 0, err
    assert [(g.cache_mb, g.micro_batch, g.weight_gradient_layout) for g in seen] == [(0, 2, "nchw"), (64, 4, "nhwc")]


# -- the tuning context ----------------------------------------------------------------------------------------


def test_tuned_applies_the_settings_and_puts_the_process_back(monkeypatch):
    monkeypatch.setattr(machine, "cpu_features", lambda: AVX2)
    torch.set_num_threads(2)
    log = logging.getLogger("scriba.test.noisy")
    log.setLevel(logging.DEBUG)
    deterministic = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(deterministic)  # its first call imports sympy, which adds a filter
    filters = list(warnings.filters)
    try:
        with machine.tuned(GlobalConfig(num_threads=1, cache_mb=3)) as t:
            assert torch.get_num_threads() == 1
            assert layers._wgrad_layout == "nchw"
            assert (t.threads, t.cache_bytes, t.weight_gradient_layout) == (1, 3 * 1024**2, "nchw")
            machine.set_logger_level("scriba.test.noisy", logging.ERROR)
            machine.ignore_warnings(".*scriba test warning.*")
            torch.use_deterministic_algorithms(not deterministic)  # as Lightning does for --deterministic
            assert log.level == logging.ERROR
            assert warnings.filters[0][0] == "ignore" and warnings.filters[0][1].pattern == ".*scriba test warning.*"
        assert torch.get_num_threads() == 2
        assert layers._wgrad_layout == "nhwc"
        assert log.level == logging.DEBUG
        assert warnings.filters == filters
        assert torch.are_deterministic_algorithms_enabled() == deterministic
        assert machine.current() is None
    finally:
        torch.set_num_threads(1)
        torch.use_deterministic_algorithms(deterministic)


def test_weight_gradient_layout_from_the_config_reaches_the_convolutions(monkeypatch):
    from scriba.vgsl import build_model

    calls = []
    real = layers._ConvBlockedWgrad.backward
    monkeypatch.setattr(layers._ConvBlockedWgrad, "backward", lambda ctx, g: calls.append(1) or real(ctx, g))
    m = build_model("[1,16,0,1 Cr3,3,8 Cr3,3,8 S1(1x0)1,3 O1c5]").train()
    x, lens = torch.rand(2, 1, 16, 30), torch.tensor([30, 21])
    for layout in ("nhwc", "nchw", "auto"):
        with machine.tuned(GlobalConfig(weight_gradient_layout=layout)):
            m(x, lens)[0].sum().backward()
    # the second convolution (8 input channels) takes the blocked path when nchw is chosen, or on an AVX2 CPU
    assert len(calls) == 1 + machine.cpu_features().avx2_only


def test_tuned_puts_the_process_back_when_the_job_fails():
    torch.set_num_threads(2)
    try:
        with pytest.raises(RuntimeError), machine.tuned(GlobalConfig(num_threads=1, weight_gradient_layout="nchw")):
            machine.ignore_warnings(".*scriba failing job.*")
            raise RuntimeError("job failed")
        assert torch.get_num_threads() == 2 and layers._wgrad_layout == "nhwc"
        assert not any(f[1] is not None and "scriba failing job" in f[1].pattern for f in warnings.filters)
    finally:
        torch.set_num_threads(1)


def test_tuned_refuses_a_bad_setting_before_changing_anything():
    torch.set_num_threads(2)
    try:
        with pytest.raises(UsageError), machine.tuned(GlobalConfig(num_threads=1, cache_mb=-5)):
            pass
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(1)


def test_report_logs_one_line_and_warns_per_changed_setting(caplog):
    t = machine.Tuning(AVX512_BF16, threads=1, keeps_freed_memory=True, cache_bytes=2048 * 1024**2,
                       weight_gradient_layout="nhwc")
    with caplog.at_level(logging.INFO, logger="scriba.machine"):
        rec = t.report(None, precision="bf16-mixed", micro_batch=1)
    assert rec["threads"] == 1 and rec["cpu"] == "AVX512" and rec["native_bf16"] is True
    assert rec["precision"] == "bf16-mixed" and rec["micro_batch"] == 1 and rec["cache_mb"] == 2048
    assert rec["torch"] == torch.__version__ and "lightning" in rec and rec["keep_freed_memory"] is True
    line, = [r.getMessage() for r in caplog.records]
    assert line.startswith("machine: threads 1, cpu AVX512, native_bf16 True, keep_freed_memory True")
    assert "precision bf16-mixed" in line and "micro_batch 1" in line and "weight_gradient_layout nhwc" in line

    caplog.clear()
    stored = {"scriba": {"machine": {**rec, "threads": 4, "cpu": "AVX2", "micro_batch": 4}}}
    t2 = machine.Tuning(AVX512_BF16, 1, True, 2048 * 1024**2, "nhwc")
    with caplog.at_level(logging.INFO, logger="scriba.machine"):
        t2.report(stored, precision="bf16-mixed", micro_batch=1)
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warned == [
        "resumed run: threads is 1 here, 4 where the checkpoint was written",
        "resumed run: cpu is AVX512 here, AVX2 where the checkpoint was written",
        "resumed run: micro_batch is 1 here, 4 where the checkpoint was written",
    ]
    caplog.clear()
    t2.report({"scriba": {}}, precision="bf16-mixed", micro_batch=1)  # a checkpoint from before the record
    assert not [r for r in caplog.records if r.levelno == logging.WARNING]


# -- in a training run -----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def lines(tmp_path_factory):
    root = tmp_path_factory.mktemp("machine_lines")
    return {"train": make_lines(root / "train", 16, 1, "t"), "val": make_lines(root / "val", 4, 2, "v")}


def test_training_records_the_machine_and_a_resume_names_what_changed(lines, tmp_path, caplog):
    from scriba import train
    from scriba.weights.checkpoint import read_checkpoint_dict

    torch.set_num_threads(2)
    caplog.set_level(logging.INFO, logger="scriba")
    quieted = logging.getLogger("lightning.fabric.utilities.seed")
    quieted.setLevel(logging.DEBUG)
    try:
        r = train(tiny_config(lines, tmp_path, epochs=1), tiny_global(num_threads=1, micro_batch=2), progress=False)
        # the caller's thread count, log level and warning filters again
        assert torch.get_num_threads() == 2
        assert quieted.level == logging.DEBUG
        assert not [f for f in warnings.filters if f[1] is not None and "many workers" in f[1].pattern]
    finally:
        torch.set_num_threads(1)
        quieted.setLevel(logging.NOTSET)
    rec = read_checkpoint_dict(tmp_path / "checkpoint_last.ckpt")["scriba"]["machine"]
    assert rec["threads"] == 1 and rec["micro_batch"] == 2 and rec["cache_mb"] == 2048
    assert rec["weight_gradient_layout"] == machine.weight_gradient_layout(GlobalConfig())
    assert rec["precision"] in ("bf16-mixed", "32-true") and rec["torch"] == torch.__version__
    logged = [m for m in caplog.messages if m.startswith("machine: ")]
    assert len(logged) == 1 and "micro_batch 2" in logged[0] and "threads 1" in logged[0]
    assert r.weights

    caplog.clear()
    resume = tiny_config(lines, tmp_path, epochs=1, resume=str(tmp_path / "checkpoint_last.ckpt"))
    train(resume, tiny_global(num_threads=1, micro_batch=4, cache_mb=0), progress=False)
    warned = [m for m in caplog.messages if m.startswith("resumed run: ")]
    assert warned == [
        "resumed run: cache_mb is 0.0 here, 2048.0 where the checkpoint was written",
        "resumed run: micro_batch is 4 here, 2 where the checkpoint was written",
    ]


# -- the allocator ---------------------------------------------------------------------------------------------

_FAULTS_PROBE = """
import resource, sys, torch
from scriba import machine
applied = machine.keep_freed_memory() if sys.argv[1] == "keep" else False
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


def test_users_own_malloc_tunables_are_left_alone(monkeypatch):
    monkeypatch.setenv("MALLOC_ARENA_MAX", "2")
    assert machine.keep_freed_memory() is False

"""Several processes: sharded sampler, layouts and launchers, Lightning arguments, and real gloo DDP runs."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from scriba.data.sampler import LengthBucketSampler
from scriba.errors import UsageError
from scriba.trainer.cluster import CHILD_ENV, Layout, resolve_layout, trainer_arguments
from shared_paths import SHARED_DATA, run_ketos

ROOT = Path(__file__).resolve().parents[2]
FROC = SHARED_DATA / "froc_mss"
SPEC = "[1,32,0,1 Cr3,3,16 Mp2,2 S1(1x0)1,3 Lbx32]"

# -- the sampler -----------------------------------------------------------------------------------------------


def _widths(n: int, seed: int = 0) -> list[int]:
    import random

    rng = random.Random(seed)
    return [rng.randint(50, 900) for _ in range(n)]


@pytest.mark.parametrize("n,batch,micro,world", [(103, 8, None, 2), (103, 8, 4, 3), (64, 16, 4, 4), (5, 4, None, 3),
                                                 (200, 1, None, 2), (37, 6, 2, 2)])
def test_shards_cover_every_line_once_in_equal_steps(n, batch, micro, world):
    widths = _widths(n)
    shards = []
    for rank in range(world):
        s = LengthBucketSampler(widths, batch, seed=3, micro_batch=micro)
        s.set_shard(rank, world)
        s.set_epoch(1)
        shards.append(list(s))
        assert len(s) == len(shards[-1])
    assert len({len(sh) for sh in shards}) == 1  # the same number of steps on every process
    seen = Counter(i for sh in shards for b in sh for i in b)
    if n >= world:
        assert sorted(seen) == list(range(n)) and set(seen.values()) == {1}
    else:
        assert set(seen) == set(range(n))  # too few lines: some are repeated, none is left out
    # whole batches are the single process's batches, dealt out
    one = LengthBucketSampler(widths, batch, seed=3, micro_batch=micro)
    one.set_epoch(1)
    single = {tuple(b) for b in one}
    rounds = n // batch // world - (0 < n - n // batch // world * world * batch < world)
    dealt = [b for sh in shards for b in sh[: max(0, rounds) * -(-batch // (micro or batch))]]
    assert all(tuple(b) in single for b in dealt)


def test_shards_stay_length_bucketed():
    widths = _widths(2000, 1)
    one = LengthBucketSampler(widths, 16, seed=0)
    waste = [one.padding_waste(2)]
    for rank in range(4):
        s = LengthBucketSampler(widths, 16, seed=0)
        s.set_shard(rank, 4)
        waste.append(s.padding_waste(2))
    assert max(waste) < 0.05 and max(waste) < waste[0] + 0.02


def test_augmentation_seeds_follow_the_line_not_the_shard():
    widths = _widths(40)
    one = LengthBucketSampler(widths, 4, seed=1, with_seeds=True)
    seeds = dict(x for b in one for x in b)
    for rank in range(2):
        s = LengthBucketSampler(widths, 4, seed=1, with_seeds=True)
        s.set_shard(rank, 2)
        assert all(seeds[i] == k for b in s for i, k in b)


def test_validation_shards_are_the_single_process_batches():
    widths = _widths(23)
    one = [tuple(b) for b in LengthBucketSampler(widths, 4, shuffle=False)]
    parts = []
    for rank in range(3):
        s = LengthBucketSampler(widths, 4, shuffle=False)
        s.set_shard(rank, 3, equal_steps=False)
        parts.extend(tuple(b) for b in s)
        assert len(s) == len(list(s))
    assert sorted(parts) == sorted(one)


@pytest.mark.parametrize("old,new", [(2, 1), (1, 2), (2, 3)])
def test_resume_with_another_number_of_processes_misses_no_line(old, new):
    widths = _widths(96)
    consumed = []
    state = None
    for rank in range(old):
        s = LengthBucketSampler(widths, 4, seed=2)
        s.set_shard(rank, old) if old > 1 else None
        s.set_epoch(1)
        batches = list(s)[:5]
        consumed.extend(i for b in batches for i in b)
        s.consumed = 5
        state = s.state_dict()
    assert state["epoch"] == 1
    rest = []
    for rank in range(new):
        t = LengthBucketSampler(widths, 4, seed=2)
        t.set_shard(rank, new) if new > 1 else None
        t.load_state_dict(state)
        t.set_epoch(1)
        got = list(t)
        assert len(t) == len(got)
        rest.extend(i for b in got for i in b)
        if old != new:
            # the training loop goes on counting from the old position; a checkpoint two batches later
            t.consumed = 5 + 2
            again = LengthBucketSampler(widths, 4, seed=2)
            again.set_shard(rank, new) if new > 1 else None
            again.load_state_dict(t.state_dict())
            again.set_epoch(1)
            assert list(again) == got[2:]
    assert set(consumed) | set(rest) == set(range(96))
    assert len(rest) <= 96 - len(consumed) + 4 * old  # at most a batch per old process runs twice


# -- layouts ---------------------------------------------------------------------------------------------------


def test_layout_from_options():
    assert resolve_layout(None, 1, 1, env={}) == Layout(1, 1, "single")
    assert resolve_layout(2, 1, 1, env={}) == Layout(2, 1, "local")
    assert resolve_layout(None, 1, [0, 1], env={}) == Layout(2, 1, "local")  # one process per listed GPU
    with pytest.raises(UsageError, match="does not match the 2 devices"):
        resolve_layout(3, 1, [0, 1], env={})
    with pytest.raises(UsageError, match="srun.*torchrun"):
        resolve_layout(2, 2, 1, env={})


def test_layout_joins_torchrun_and_slurm_or_refuses():
    torchrun = {"TORCHELASTIC_RUN_ID": "x", "WORLD_SIZE": "4", "LOCAL_WORLD_SIZE": "2", "RANK": "3"}
    assert resolve_layout(None, 1, 1, env=torchrun) == Layout(2, 2, "torchrun")
    assert resolve_layout(2, 2, [0, 1], env=torchrun) == Layout(2, 2, "torchrun")
    with pytest.raises(UsageError, match="contradicts torchrun"):
        resolve_layout(4, 1, 1, env=torchrun)
    # torchrun with a single process: nothing to join
    assert resolve_layout(None, 1, 1, env={"TORCHELASTIC_RUN_ID": "x", "WORLD_SIZE": "1"}).launcher == "single"
    slurm = {"SLURM_NTASKS": "4", "SLURM_NNODES": "2", "SLURM_NTASKS_PER_NODE": "2(x2)", "SLURM_PROCID": "1"}
    assert resolve_layout(None, 2, 1, env=slurm) == Layout(2, 2, "slurm")
    with pytest.raises(UsageError, match="contradicts slurm"):
        resolve_layout(None, 3, 1, env=slurm)
    # an interactive shell in an allocation is not a launch
    assert resolve_layout(None, 1, 1, env=dict(slurm, SLURM_JOB_NAME="bash")).launcher == "single"
    child = {CHILD_ENV: "1", "LOCAL_WORLD_SIZE": "3", "RANK": "1"}
    assert resolve_layout(3, 1, 1, env=child) == Layout(3, 1, "child")


def test_two_gpus_make_a_ddp_trainer_without_a_gpu(monkeypatch):
    """-d cuda:0,cuda:1: the parsing, the layout and a real Lightning DDP trainer on two (pretended) GPUs."""
    from lightning.fabric.accelerators import cuda as fabric_cuda
    from lightning.pytorch.accelerators import CUDAAccelerator
    from lightning.pytorch.strategies import DDPStrategy

    from scriba.config import GlobalConfig, TrainConfig
    from scriba.trainer import runtime

    accelerator, devices = runtime.parse_device("cuda:0,cuda:1")
    assert (accelerator, devices) == ("gpu", [0, 1])
    procs = resolve_layout(None, 1, devices, env={})
    assert procs == Layout(2, 1, "local")
    child = Layout(2, 1, "child")
    kw = trainer_arguments(child, accelerator, devices, find_unused=True)
    assert kw["devices"] == [0, 1] and kw["num_nodes"] == 1
    assert isinstance(kw["strategy"], DDPStrategy)
    assert kw["strategy"]._ddp_kwargs["find_unused_parameters"] is True

    from lightning.fabric.utilities import rank_zero as fabric_rank_zero
    from lightning.pytorch.utilities import rank_zero

    # the trainer sets the process-wide rank of Lightning's rank-zero helpers: give it back afterwards
    monkeypatch.setattr(rank_zero.rank_zero_only, "rank", rank_zero.rank_zero_only.rank)
    monkeypatch.setattr(fabric_rank_zero.rank_zero_only, "rank", fabric_rank_zero.rank_zero_only.rank)
    monkeypatch.setattr(CUDAAccelerator, "is_available", staticmethod(lambda: True))
    monkeypatch.setattr(fabric_cuda, "num_cuda_devices", lambda: 2)
    monkeypatch.setattr("lightning.pytorch.accelerators.cuda.num_cuda_devices", lambda: 2)
    monkeypatch.setattr("lightning.fabric.utilities.device_parser.num_cuda_devices", lambda: 2, raising=False)
    monkeypatch.setenv("LOCAL_RANK", "1")
    cfg = TrainConfig(quit="fixed", epochs=1)
    trainer = runtime.build_trainer(cfg, GlobalConfig(device="cuda:0,cuda:1", precision="32-true"), Path("."), [],
                                    logger_name="t", min_epochs=None, accumulate_grad_batches=1, processes=child)
    assert isinstance(trainer.strategy, DDPStrategy)
    assert trainer.world_size == 2 and trainer.num_devices == 2
    assert [d.index for d in trainer.strategy.parallel_devices] == [0, 1]
    assert trainer.strategy.root_device.type == "cuda" and trainer.strategy.root_device.index == 1


def test_cli_options_and_experiment_file(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("x.png").write_bytes(b"")
    code, _, err = run_ketos(["--num-nodes", "2", "train", "-f", "path", "x.png"], capsys)
    assert code == 2 and "srun" in err and "Traceback" not in err
    exp = tmp_path / "exp.yml"
    exp.write_text("device: cuda:0,cuda:1\nprocesses: 3\n", encoding="utf-8")
    code, _, err = run_ketos(["--config", str(exp), "train", "-f", "path", "x.png"], capsys)
    assert code == 2 and "--processes 3 does not match the 2 devices" in err


def test_mps_refuses_several_processes():
    from scriba.config import GlobalConfig, TrainConfig
    from scriba.jobs.train.job import train

    with pytest.raises(UsageError, match="mps"):
        train(TrainConfig(training_data=["x"]), GlobalConfig(device="mps", processes=2))


def test_pretraining_refuses_several_processes():
    from scriba.config import GlobalConfig, PretrainConfig
    from scriba.jobs.pretrain.job import pretrain

    with pytest.raises(UsageError, match="one process"):
        pretrain(PretrainConfig(training_data=["x"]), GlobalConfig(device="cpu", processes=2))


@pytest.mark.filterwarnings("ignore:You are trying to `self.log")
def test_ctc_loss_stays_fp32_under_half_precision_autocast():
    import torch

    from scriba.codec import Codec
    from scriba.config import TrainConfig
    from scriba.jobs.train.module import RecognitionModule
    from scriba.vgsl import build_model

    torch.manual_seed(0)
    net = build_model("[1,16,0,1 Cr3,3,8 S1(1x0)1,3 Lbx16]", None)
    codec = Codec.from_spec(None, ["abc"])
    net.append_output(codec.max_label + 1)
    net.codec = codec
    module = RecognitionModule(net, TrainConfig())
    batch = {"images": torch.rand(2, 1, 16, 400), "seq_lens": torch.tensor([400, 380]),
             "labels": torch.tensor([1, 2, 3, 1, 2, 3, 1, 2]), "label_lens": torch.tensor([4, 4])}
    with torch.autocast("cpu", dtype=torch.float16):
        loss = module.training_step(batch, 0)
    assert loss.dtype == torch.float32 and torch.isfinite(loss)


# -- real runs (gloo) ------------------------------------------------------------------------------------------


def _froc_lists(tmp: Path, n_train: int, n_val: int) -> tuple[Path, Path]:
    if not (FROC / "splits" / "train.lst").is_file():
        pytest.skip("froc_mss is not in ../shared/data")
    out = []
    for name, n in (("train", n_train), ("val", n_val)):
        lines = (FROC / "splits" / f"{name}.lst").read_text(encoding="utf-8").split()[:n]
        p = tmp / f"{name}.lst"
        p.write_text("".join(f"{FROC / line}\n" for line in lines), encoding="utf-8")
        out.append(p)
    return out[0], out[1]


def _ketos(*args: str) -> list[str]:
    return [sys.executable, "-m", "scriba.cli.main", *args]


def _env() -> dict[str, str]:
    return dict(os.environ, PYTHONPATH=str(ROOT / "src") + os.pathsep + os.environ.get("PYTHONPATH", ""))


def _train_args(train: Path, val: Path, out: Path, epochs: int) -> list[str]:
    return ["train", "-f", "path", "-t", str(train), "-e", str(val), "-o", str(out), "-B", "4", "-q", "fixed",
            "-N", str(epochs), "-u", "NFD", "-s", SPEC]


def test_gloo_ddp_run_writes_one_set_of_files_and_validates_like_ketos_test(tmp_path):
    """Acceptance: two CPU processes over gloo on 64 froc_mss lines; ketos test agrees on the weights."""
    train, val = _froc_lists(tmp_path, 48, 16)
    out = tmp_path / "model"
    run = subprocess.run(
        _ketos("-d", "cpu", "--processes", "2", "--threads", "1", "--workers", "0", "-s", "1",
               *_train_args(train, val, out, 2)),
        capture_output=True, text=True, env=_env(), timeout=600,
    )
    assert run.returncode == 0, run.stderr
    assert "DDP: 2 processes" in run.stderr and "global batch 8" in run.stderr
    assert len(re.findall(r"^epoch \d", run.stderr, re.M)) == 2  # rank 0 reports, once per epoch
    files = sorted(p.name for p in out.iterdir())
    weights = [f for f in files if f.endswith(".safetensors")]
    assert len(weights) == 1 and files.count("checkpoint_last.ckpt") == 1
    assert sorted(f for f in files if f.endswith(".ckpt")) == sorted(
        ["checkpoint_last.ckpt", *(f for f in files if re.fullmatch(r"checkpoint_0[01]-0\.\d{4}\.ckpt", f))])
    assert len([f for f in files if f.endswith(".ckpt")]) == 3  # two epochs' checkpoints and the last one
    report = tmp_path / "report.json"
    test = subprocess.run(
        _ketos("-d", "cpu", "test", "-f", "path", "-m", str(out / weights[0]), "-e", str(val), "-u", "NFD",
               "--output-json", str(report)),
        capture_output=True, text=True, env=_env(), timeout=300,
    )
    assert test.returncode == 0, test.stderr
    best = float(re.search(r"best_(\d\.\d{4})\.safetensors", weights[0]).group(1))
    assert best > 0.01  # the network predicts characters: the comparison is not between two empty outputs
    from scriba.weights import load_model

    history = load_model(str(out / weights[0])).metadata["metrics"]
    assert max(m["val_accuracy"] for _, m in history) == pytest.approx(best, abs=5e-5)
    data = json.loads(report.read_text(encoding="utf-8"))
    tested = _char_accuracy(data)
    assert f"{tested:.4f}" == f"{best:.4f}" and f"{100 * tested:.2f}" in test.stdout


def _char_accuracy(report: dict) -> float:
    return 1.0 - report["summary"]["errors"] / report["summary"]["chars"]


def _children(pid: int) -> list[int]:
    out = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                stat = (d / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                out.append(int(d.name))
    return out


def _rank_of(pid: int) -> int | None:
    try:
        env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:
        return None
    for item in env:
        if item.startswith(b"RANK="):
            return int(item[5:])
    return None


def _wait_for(path: Path, proc: subprocess.Popen, timeout: float = 400) -> None:
    end = time.monotonic() + timeout
    while not path.exists():
        assert proc.poll() is None, proc.communicate()[1]
        assert time.monotonic() < end, f"{path} did not appear"
        time.sleep(0.2)


@pytest.mark.slow
def test_killed_rank_stops_the_run_and_resume_in_ddp_finishes(tmp_path):
    """Acceptance: SIGKILL of one rank ends the whole run (no hang, no stray process), --resume finishes."""
    train, val = _froc_lists(tmp_path, 96, 16)
    out = tmp_path / "model"
    proc = subprocess.Popen(
        _ketos("-d", "cpu", "--processes", "2", "--workers", "0", "-s", "1", *_train_args(train, val, out, 3)),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env(),
    )
    _wait_for(out / "checkpoint_last.ckpt", proc)
    ranks = {_rank_of(p): p for p in _children(proc.pid)}
    os.kill(ranks[1], signal.SIGKILL)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 1 and "process 1 of 2 failed (killed by SIGKILL)" in err
    assert not any(Path(f"/proc/{p}").exists() for p in ranks.values())
    resumed = subprocess.run(
        _ketos("-d", "cpu", "--processes", "2", "--workers", "0", "train", "--resume",
               str(out / "checkpoint_last.ckpt")),
        capture_output=True, text=True, env=_env(), timeout=600,
    )
    assert resumed.returncode == 0, resumed.stderr
    assert list(out.glob("best_*.safetensors"))
    assert "epoch 2" in resumed.stderr and "epoch 0" not in resumed.stderr


@pytest.mark.slow
def test_sigint_of_the_launcher_leaves_one_abort_checkpoint_that_resumes_in_one_process(tmp_path):
    """Acceptance: Ctrl-C of the launcher: every rank stops at the same batch, checkpoint_abort.ckpt, no strays."""
    train, val = _froc_lists(tmp_path, 96, 16)
    out = tmp_path / "model"
    proc = subprocess.Popen(
        _ketos("-d", "cpu", "--processes", "2", "--workers", "0", "-s", "1", *_train_args(train, val, out, 2)),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env(),
    )
    _wait_for(out / "checkpoint_last.ckpt", proc)
    ranks = _children(proc.pid)
    assert len(ranks) == 2
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=180)
    assert proc.returncode == 130, err
    assert (out / "checkpoint_abort.ckpt").is_file() and "--resume" in err
    assert not any(Path(f"/proc/{p}").exists() for p in ranks)
    assert not list(out.glob("best_*.safetensors"))
    # a DDP checkpoint continues in one process
    resumed = subprocess.run(
        _ketos("-d", "cpu", "--workers", "0", "train", "--resume", str(out / "checkpoint_abort.ckpt")),
        capture_output=True, text=True, env=_env(), timeout=600,
    )
    assert resumed.returncode == 0, resumed.stderr
    assert list(out.glob("best_*.safetensors"))


def test_a_failed_rank_does_not_leave_the_others_hanging(monkeypatch):
    from scriba.trainer import launch

    monkeypatch.setattr(launch, "FAIL_GRACE", 0.5)
    monkeypatch.setattr(launch, "KILL_GRACE", 0.5)
    stubborn = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(60)"
    procs = [subprocess.Popen([sys.executable, "-c", c]) for c in
             ("import time; time.sleep(60)", "import sys; sys.exit(3)", stubborn)]
    start = time.monotonic()
    assert launch._supervise(procs) == (1, 3)
    assert time.monotonic() - start < 20
    assert [p.returncode for p in procs] == [-signal.SIGTERM, 3, -signal.SIGKILL]


@pytest.mark.slow
def test_torchrun_processes_join_one_training(tmp_path):
    """Under torchrun the processes form one DDP run (one report, one set of files), not two trainings."""
    train, val = _froc_lists(tmp_path, 48, 16)
    out = tmp_path / "model"
    run = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "-m", "scriba.cli.main",
         "-d", "cpu", "--threads", "1", "--workers", "0", "-s", "1", *_train_args(train, val, out, 1)],
        capture_output=True, text=True, env=_env(), timeout=600, cwd=tmp_path,
    )
    assert run.returncode == 0, run.stderr
    assert "DDP: 2 processes" in run.stderr and "global batch 8" in run.stderr
    assert len(re.findall(r"^epoch 0", run.stderr, re.M)) == 1
    assert run.stderr.count("missing from the codec") <= 1  # the other rank keeps its warnings to itself
    assert len(list(out.glob("best_*.safetensors"))) == 1 and run.stdout.count("best model:") == 1


def test_unseeded_processes_agree_on_one_seed():
    from scriba.trainer.cluster import shared_seed

    run = {"TORCHELASTIC_RUN_ID": "abc", "MASTER_ADDR": "node1", "MASTER_PORT": "29500"}
    layout = Layout(2, 1, "torchrun")
    seeds = {shared_seed(layout, dict(run, RANK=str(r), LOCAL_RANK=str(r))) for r in range(2)}
    assert len(seeds) == 1
    assert shared_seed(layout, dict(run, TORCHELASTIC_RUN_ID="abd")) not in seeds
    slurm = {"SLURM_JOB_ID": "17", "SLURM_STEP_ID": "0"}
    assert shared_seed(Layout(2, 2, "slurm"), dict(slurm, SLURM_PROCID="0")) == shared_seed(
        Layout(2, 2, "slurm"), dict(slurm, SLURM_PROCID="3"))


def test_unseeded_local_run_hands_one_seed_to_its_processes(monkeypatch, tmp_path):
    from scriba.config import GlobalConfig, TrainConfig
    from scriba.jobs.train import job
    from scriba.trainer import launch

    seen = {}

    def fake(name, cfg, g, layout, progress=None):
        seen.update(name=name, seed=g.seed, layout=layout)
        return {"output_dir": str(tmp_path)}

    monkeypatch.setattr(launch, "run_processes", fake)
    result = job.train(TrainConfig(training_data=["x"]), GlobalConfig(device="cpu", processes=2))
    assert result.output_dir == str(tmp_path)
    assert seen["name"] == "scriba.jobs.train.job:train" and seen["layout"] == Layout(2, 1, "local")
    assert isinstance(seen["seed"], int)


def test_freeze_backbone_counts_the_lines_of_every_process_and_thaws_together():
    from types import SimpleNamespace

    import torch

    from scriba.trainer.callbacks import FreezeBackbone

    module = torch.nn.Module()
    module.net = SimpleNamespace(nn=[torch.nn.Linear(2, 2), torch.nn.Linear(2, 2)])
    module.body, module.head = module.net.nn
    decisions = []

    def any_rank(flag, all=True):
        decisions.append(flag)
        return True  # another process has crossed the threshold

    trainer = SimpleNamespace(world_size=2, strategy=SimpleNamespace(reduce_boolean_decision=any_rank))
    cb = FreezeBackbone(20)
    cb.on_train_start(trainer, module)
    assert not module.body.weight.requires_grad and module.head.weight.requires_grad
    cb.on_train_batch_end(trainer, module, None, {"seq_lens": [0] * 4}, 0)
    assert cb.seen == 8  # 4 lines here, as many on the other process
    assert decisions == [False] and module.body.weight.requires_grad  # thawed with the others

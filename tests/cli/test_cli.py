"""The ``ketos`` surface: options of the guide, experiment files, one-line errors, start-up time."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from shared_paths import SHARED_DATA, run_ketos

GUIDE = SHARED_DATA.parent / "spec" / "training-guide.rst"


def guide_options(command: str) -> list[str]:
    """Every long and short flag listed in the guide's option listing for ``command``."""
    text = GUIDE.read_text(encoding="utf-8")
    section = re.search(rf"\n{command}\n~+\n\n\.\. code-block::\n\n(.*?)(?:\n\S|\Z)", text, re.S)
    assert section, f"no option listing for {command} in the guide"
    flags = []
    for line in section.group(1).splitlines():
        if not re.match(r"\s{4}-", line):
            continue
        head = re.split(r"\s{2,}", line.strip())[0]
        for token in head.replace(",", " ").split():
            if token.startswith("-"):
                flags.extend(token.split("/"))
    return flags


@pytest.mark.parametrize("command", ["train", "test", "pretrain"])
def test_every_guide_option_is_in_help(command, capsys):
    if not GUIDE.exists():
        pytest.skip(f"specification not found at {GUIDE}")
    flags = guide_options(command)
    assert len(flags) > 12
    rc, out, _ = run_ketos([command, "--help"], capsys)
    assert rc == 0
    missing = [f for f in flags if not re.search(rf"(?<![\w-]){re.escape(f)}(?![\w-])", out)]
    assert not missing, f"options of the guide missing from `ketos {command} --help`: {missing}"


@pytest.mark.parametrize("command", ["compile", "convert"])
def test_other_commands_have_help(command, capsys):
    rc, out, _ = run_ketos([command, "--help"], capsys)
    assert rc == 0 and "--output" in out


def test_help_is_fast_and_does_not_import_torch():
    code = (
        "import sys, time; t = time.time()\n"
        "from scriba.cli.main import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit: pass\n"
        "print('TORCH' if 'torch' in sys.modules or 'lightning' in sys.modules else 'CLEAN', time.time() - t)\n"
    )
    start = time.time()
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert time.time() - start < 1.0
    assert out.strip().splitlines()[-1].startswith("CLEAN")


@pytest.fixture
def recorded_train(monkeypatch):
    """Replace the training job by a recorder so the test sees the configuration the CLI built."""
    import scriba.jobs.train.job as job

    calls = []
    def fake_train(cfg, g):
        calls.append((cfg, g))
        return job.TrainResult(output_dir=cfg.checkpoint_path)

    monkeypatch.setattr(job, "train", fake_train)
    return calls


GUIDE_YAML = """\
precision: 32-true
device: auto
num_workers: 32
num_threads: 1
train:
  # training data manifests
  training_data:
    - train.lst
  evaluation_data:
    - val.lst
  # format of the training data
  format_type: xml
  # directory to save checkpoints in
  checkpoint_path: checkpoints
  # change to `coreml` to save best model with kraken < 7 compatibility
  weights_format: safetensors
  # text transforms
  normalization: NFD
  normalize_whitespace: true
  # base configuration of training epochs and LR schedule
  quit: early
  epochs: 24
  lag: 10
  lrate: 1e-3
  schedule: constant
  warmup: 200
  augment: true
  # effective batch size params
  batch_size: 32
  accumulate_grad_batches: 1
  # codec definition
  # codec: null  # creates a codec automatically
  codec:
    'a': [1]
    'b': [22]
    'c': [23, 24]
"""


@pytest.fixture
def experiment(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for name in ("p1.xml", "p2.xml"):
        (tmp_path / name).write_text("<x/>")
    (tmp_path / "train.lst").write_text("p1.xml\n")
    (tmp_path / "val.lst").write_text("p2.xml\n")
    (tmp_path / "experiment.yml").write_text(GUIDE_YAML)
    return tmp_path


def test_guide_yaml_is_accepted(experiment, recorded_train, capsys):
    rc, _, err = run_ketos(["--config", "experiment.yml", "train"], capsys)
    assert rc == 0, err
    (cfg, g), = recorded_train
    assert g.num_workers == 32 and g.precision == "32-true" and g.device == "auto"
    assert cfg.lrate == pytest.approx(1e-3) and cfg.batch_size == 32 and cfg.warmup == 200
    assert cfg.checkpoint_path == "checkpoints" and cfg.normalization == "NFD" and cfg.augment is True
    assert cfg.codec == {"a": [1], "b": [22], "c": [23, 24]}
    assert [Path(p).name for p in cfg.training_data] == ["p1.xml"]
    assert [Path(p).name for p in cfg.evaluation_data] == ["p2.xml"]


def test_command_line_beats_file_beats_defaults(experiment, recorded_train, capsys):
    rc, _, err = run_ketos(["--workers", "3", "--config", "experiment.yml", "train", "--lrate", "0.05"], capsys)
    assert rc == 0, err
    (cfg, g), = recorded_train
    assert cfg.lrate == pytest.approx(0.05)  # command line
    assert cfg.batch_size == 32  # file
    assert cfg.min_epochs == 0 and cfg.optimizer == "AdamW"  # built-in defaults
    assert g.num_workers == 3


def test_unknown_key_suggests_closest(experiment, recorded_train, capsys):
    (experiment / "experiment.yml").write_text(GUIDE_YAML + "  lratee: 0.1\n")
    rc, _, err = run_ketos(["--config", "experiment.yml", "train"], capsys)
    assert rc == 0
    assert 'unknown key "lratee"' in err and 'Did you mean "lrate"?' in err
    assert recorded_train[0][0].lrate == pytest.approx(1e-3)


@pytest.mark.parametrize(
    "yaml_text, culprit",
    [
        ("train:\n  lrate: fast\n", "train.lrate"),
        ("train:\n  schedule: sometimes\n", "train.schedule"),
        ("train:\n  lrate: [1\n", "line"),
        ("precision: 7-bit\n", "precision"),
        ("- just\n- a list\n", "mapping"),
    ],
)
def test_bad_experiment_file_is_one_line_error(experiment, yaml_text, culprit, capsys):
    (experiment / "bad.yml").write_text(yaml_text)
    rc, _, err = run_ketos(["--config", "bad.yml", "train"], capsys)
    assert rc == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "bad.yml" in lines[0] and culprit in lines[0]
    assert "Traceback" not in err


@pytest.mark.parametrize(
    "args, culprit",
    [
        (["train", "-t", "missing.lst"], "missing.lst"),
        (["train", "--schedule", "sometimes"], "--schedule"),
        (["test", "-m", "nomodel.safetensors"], "nomodel.safetensors"),
        (["--device", "gpu7", "train"], "--device"),
        (["--config", "absent.yml", "train"], "absent.yml"),
    ],
)
def test_user_mistakes_are_one_line_errors(experiment, args, culprit, capsys):
    rc, _, err = run_ketos(args, capsys)
    assert rc == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and culprit in lines[0], err


def test_load_and_resume_are_exclusive(experiment, capsys):
    (experiment / "m.safetensors").write_bytes(b"x")
    rc, _, err = run_ketos(["train", "--load", "m.safetensors", "--resume", "m.safetensors", "p1.xml"], capsys)
    assert rc == 2 and "mutually exclusive" in err


def test_resize_aliases_are_deprecated(experiment, recorded_train, capsys, monkeypatch):
    import scriba.jobs.train.job as job

    rc, _, err = run_ketos(["train", "--resize", "add", "p1.xml"], capsys)
    assert rc == 0
    cfg = recorded_train[0][0]
    assert cfg.resize == "add"  # the CLI passes the value on; the library resolves it, once
    warned = []
    monkeypatch.setattr(job.logger, "warning", lambda msg, *args: warned.append(msg % args))
    assert job._check_config(cfg).resize == "union"
    assert len(warned) == 1 and "deprecated" in warned[0]


def test_interrupted_run_exits_130(experiment, monkeypatch, capsys):
    import scriba.jobs.train.job as job

    monkeypatch.setattr(job, "train", lambda cfg, g: job.TrainResult(
        output_dir="m", stopped="interrupted", abort_checkpoint="m/checkpoint_abort.ckpt"))
    rc, _, err = run_ketos(["train", "p1.xml"], capsys)
    assert rc == 130 and "Traceback" not in err


def test_options_given_with_resume_are_named_as_ignored(experiment, recorded_train, capsys):
    (experiment / "run.ckpt").write_bytes(b"x")
    rc, _, err = run_ketos(["--precision", "32-true", "--threads", "2", "train", "--resume", "run.ckpt",
                            "-N", "100", "-r", "0.1", "p1.xml"], capsys)
    assert rc == 0
    warning = [line for line in err.splitlines() if "--resume" in line]
    assert len(warning) == 1
    for name in ("-N/--epochs", "-r/--lrate", "--precision", "GROUND_TRUTH"):
        assert name in warning[0]
    assert "--threads" not in warning[0]  # the machine settings follow the caller
    rc, _, err = run_ketos(["train", "--resume", "run.ckpt"], capsys)
    assert rc == 0 and "ignored" not in err


def test_normalize_whitespace_help_names_its_default(capsys):
    rc, out, _ = run_ketos(["train", "--help"], capsys)
    assert rc == 0
    assert "[default: n]" not in " ".join(out.split())
    assert "[default: normalize-whitespace]" in " ".join(out.split())


def test_test_says_where_it_wrote_its_reports(experiment, monkeypatch, capsys):
    import scriba.jobs.evaluate.job as job
    import scriba.jobs.evaluate.report as report

    monkeypatch.setattr(job, "run_test", lambda cfg, g: object())
    monkeypatch.setattr(job, "write_reports", lambda result, cfg: None)
    monkeypatch.setattr(report, "render_text", lambda result: "REPORT")
    (experiment / "m.safetensors").write_bytes(b"x")
    rc, out, err = run_ketos(["test", "-m", "m.safetensors", "--output-html", "r.html", "--output-json", "r.json",
                              "p1.xml"], capsys)
    assert rc == 0 and out.strip() == "REPORT"
    assert "HTML report written to r.html" in err and "JSON report written to r.json" in err

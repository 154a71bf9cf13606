"""The guide's path through the command line: ``ketos pretrain``, then ``ketos train --load best --resize new``."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from scriba.cli.main import main
from scriba.weights import load_model


def _ketos(*args: str) -> None:
    try:
        main(list(args))
    except SystemExit as exc:  # main() exits only on failure
        raise AssertionError(f"ketos {' '.join(args)} exited with {exc.code}") from None


def test_pretrain_then_fine_tune(tiny_lines: list[str], tiny_spec: str, tmp_path: Path) -> None:
    manifest = tmp_path / "lines.lst"
    manifest.write_text("".join(f"{p}\n" for p in tiny_lines), encoding="utf-8")
    out = tmp_path / "pre"
    _ketos(
        "-d", "cpu", "--workers", "0", "-s", "1", "pretrain", "-f", "path", "-t", str(manifest), "-o", str(out),
        "-s", tiny_spec, "-q", "fixed", "-N", "2", "-B", "4", "-r", "1e-3", "--warmup", "8", "-mw", "2",
        "-mp", "0.4", "-nn", "5", "-lt", "0.2",
    )  # fmt: skip
    best = sorted(out.glob("best_*.safetensors"))
    assert len(best) == 1
    assert load_model(best[0]).codec.to_json() == {" ": [1]}  # type: ignore[union-attr]
    ft = tmp_path / "ft"
    _ketos(
        "-d", "cpu", "--workers", "0", "-s", "1", "train", "-f", "path", "-o", str(ft), "-i", str(best[0]),
        "--resize", "new", "-q", "fixed", "-N", "1", "-B", "4", *tiny_lines,
    )  # fmt: skip
    tuned = sorted(ft.glob("best_*.safetensors"))
    assert len(tuned) == 1
    assert set(load_model(tuned[0]).codec.c2l) == set(" abcdef")  # type: ignore[union-attr]


def test_experiment_file(tiny_lines: list[str], tiny_spec: str, tmp_path: Path) -> None:
    manifest = tmp_path / "lines.lst"
    manifest.write_text("".join(f"{p}\n" for p in tiny_lines), encoding="utf-8")
    conf = {
        "device": "cpu",
        "num_workers": 0,
        "seed": 2,
        "pretrain": {
            "training_data": [str(manifest)],
            "format_type": "path",
            "checkpoint_path": str(tmp_path / "pre"),
            "spec": tiny_spec,
            "batch_size": 4,
            "quit": "fixed",
            "epochs": 1,
            "lrate": 1e-3,
            "schedule": "cosine",
            "cos_t_max": 1,
            "cos_min_lr": 1e-5,
            "warmup": 8,
            "weight_decay": 0.01,
            "augment": True,
            "mask_width": 2,
            "mask_prob": 0.5,
            "num_negatives": 5,
            "logit_temp": 0.1,
        },
    }
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(conf), encoding="utf-8")
    _ketos("--config", str(path), "pretrain")
    ckpt = sorted((tmp_path / "pre").glob("checkpoint_00-*.ckpt"))
    assert ckpt
    import torch

    stored = torch.load(ckpt[0], map_location="cpu", weights_only=True)["scriba"]["pretrain_config"]
    assert (stored["mask_width"], stored["num_negatives"], stored["augment"], stored["warmup"]) == (2, 5, True, 8)


def test_bad_mask_probability_is_a_usage_error(tiny_lines: list[str], tmp_path: Path) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["pretrain", "-f", "path", "-o", str(tmp_path), "-mp", "1.5", *tiny_lines])
    assert exc.value.code == 2

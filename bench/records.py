"""The fields of a benchmark record, as ``results.json`` stores them (one JSON object per measurement).

Every record has ``name``, ``section`` and ``ok``; a measured command has the fields of
:class:`bench.harness.Measured`; each section adds its figures. Records stay plain dicts (so that every earlier
``results.json`` still loads) typed by :class:`Record`; the report reads a missing figure as ``None``.
"""

from __future__ import annotations

from typing import TypedDict


class Epoch(TypedDict, total=False):
    epoch: int
    t: float | None  # seconds from the command's start to the checkpoint's file
    val_accuracy: float | None  # from the checkpoint's name (kraken style: checkpoint_EE-0.XXXX.ckpt)
    val_accuracy_meta: float  # from the final weights' metrics


class Record(TypedDict, total=False):
    # every record
    name: str
    section: str  # a section name, "<section>_test", "prep" (datasets compiled for training) or "meta"
    ok: bool
    status: str  # "ok", "exit N", "timeout", "timeout (time budget)", "target reached", "not run ...", ...
    summary: dict  # what the progress line prints
    # a measured command (bench.harness.Measured, bench.session.Bench.run)
    cmd: str
    cwd: str
    log: str
    rc: int | None
    wall_s: float
    peak_rss_gib: float | None
    peak_pss_gib: float | None
    files_seen: dict[str, float]
    tail: str
    not_run: bool  # left out by the time box
    load_at_start: float  # 1-minute load average
    utc_start: str
    # what was measured
    tool: str  # "kraken" or "scriba": who ran (trained, compiled)
    tester: str  # who ran `ketos test` on `tool`'s model
    variant: str | None  # "fp32": scriba's equal-epochs run at --precision 32-true
    repeat: int
    batch: int
    job: str  # the compile or interop input: "cremma_alto", "froc_path"
    inputs: int
    workers: int
    data: str  # the training data's provenance ("kraken-compiled .arrow", ...); in machine_before the data folder
    train_lines: int
    val_lines: int
    test_lines: int
    epochs: int
    fixed_epochs: int | None
    spec: str | None
    lr: str | None
    load: str | None  # weights fine-tuned
    budget_s: float | None
    derived_from: str  # a defaults record that is the same run as this accuracy/scratch one
    # figures
    lines: int  # lines compiled
    lines_per_s: float | None
    lines_per_s_excl_startup: float
    epoch_flops: float | None
    gflops_per_s: float
    epochs_seen: list[Epoch]
    val_cer_per_epoch: list[float | None]
    last_val_cer: float | None
    best_val_cer: float | None
    tta_s: float | None  # seconds to the first checkpoint at the target accuracy
    weights: str | None
    outdir: str
    errors: int
    chars: int
    cer: float | None
    char_accuracy_pct: float
    # the matmul peak
    torch: str
    threads: int
    n: int
    bf16_native: bool
    fp32_gflops: float
    bf16_gflops: float
    python: str
    # meta: machine_before / machine_after (and their earlier_* copies under --keep)
    utc: str
    cpu: str
    cpu_flags: str
    ncpu: int
    loadavg: list[float]
    mem_total: str
    argv: str
    settings: dict  # bench.settings.Settings.as_record()
    section_budget: dict[str, int]
    elapsed_s: float

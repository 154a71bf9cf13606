"""Paths, the specs both tools train, and the settings of each profile (quick, short, full)."""

from __future__ import annotations

import argparse
import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path

from bench.flops import KRAKEN_SPEC
from bench.machine import native_bf16

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
WORK = BENCH / "work"
DATA = Path(os.environ.get("SCRIBA_DATA", ROOT.parent / "shared" / "data")).resolve()
KVENV = BENCH / ".venv-kraken"
TOOLS = ("kraken", "scriba")
SPEC = KRAKEN_SPEC  # kraken 7's default recognition spec, passed explicitly to both tools
KRAKEN_LRATE = "1e-3"  # kraken's default rate (scriba's is 3e-4), passed explicitly to both in the scratch runs
SMALL_SPEC = "[1,48,0,1 Cr3,3,32 Mp2,2 Cr3,3,64 Mp2,2 S1(1x0)1,3 Lbx128 Do0.2,2 Lbx128]"

# Per-section time budgets (s) of the time-boxed short profile; the whole run is also capped (--budget).
SHORT_BUDGET = 35 * 60  # the short profile's box on the whole run
SHORT_SECTION_BUDGET = {"peak": 60, "compile": 180, "eval": 240, "train": 540, "defaults": 120, "accuracy": 420,
                        "crosscer": 720, "interop": 90}


@dataclass
class Settings:
    """What a run measures and how; recorded with its results, so that the report describes the run it shows."""

    profile: str
    quick: bool
    short: bool
    repeats: int
    workers: int
    threads: int
    # compile inputs (None = whole split); compile uses --compile-workers
    compile_workers: int
    cremma_compile_pages: int | None
    cremma_compile_split: str
    froc_compile_lines: int | None
    froc_compile_split: str
    # training throughput (default spec)
    tp_train_lines: int
    tp_val_lines: int
    tp_epochs: int
    batch_sizes: list[int]
    bf16: bool
    bf16_batches: list[int]
    # accuracy at equal epochs
    acc_spec: str
    acc_load: str | None
    acc_train_lines: int | None
    acc_val_lines: int | None
    acc_test_lines: int | None
    acc_epochs: int
    acc_batch: int
    acc_lr: str | None
    # each tool's defaults: time to accuracy (full) or throughput only over fixed epochs (short)
    tta_train_lines: int | None
    tta_val_lines: int | None
    tta_budget: float | None
    tta_target_cer: float
    tta_full: bool
    tta_factor: float
    tta_tools: tuple[str, ...]
    acc_tools: tuple[str, ...]
    scratch_epochs: int
    defaults_epochs: int | None
    # evaluation
    eval_lines: int | None
    eval_batches: dict[str, list[int]]
    # cross-system CER
    cross_train_pages: int | None
    cross_val_pages: int | None
    cross_test_pages: int | None
    cross_epochs: int
    cross_spec: str
    cross_lr: str | None
    cross_compile: bool
    cross_load: str | None
    # interop: kraken trains one epoch on scriba-compiled files
    interop_froc_lines: int
    interop_cremma_pages: int
    mm_n: int  # matmul size for the peak
    timeout: float
    budget: float | None
    section_budget: dict[str, int]

    def as_record(self) -> dict:
        """The settings as the run's meta record stores them (``section_budget`` beside them)."""
        return {k: v for k, v in dataclasses.asdict(self).items() if k != "section_budget"}

    def recorded(self, meta: dict) -> Settings:
        """These settings with those a run recorded in its meta record (``--report-only`` shows that run)."""
        stored = {**meta.get("settings", {}), **({"section_budget": meta["section_budget"]}
                                                  if "section_budget" in meta else {})}
        names = {f.name for f in dataclasses.fields(self)}
        return dataclasses.replace(self, **{k: v for k, v in stored.items() if k in names})


def settings(a: argparse.Namespace) -> Settings:
    """Settings of a profile: quick (harness check), short (time-boxed, ~35 min) or full (hours)."""
    prof = a.profile
    quick, short = prof == "quick", prof == "short"

    def pick(q, sh, full):
        return q if quick else (sh if short else full)
    return Settings(
        profile=prof, quick=quick, short=short,
        repeats=a.repeats or pick(1, 2, 3),
        workers=a.workers, threads=a.threads,
        compile_workers=a.compile_workers,
        cremma_compile_pages=pick(2, None, None),
        cremma_compile_split=pick("test", "val", "train"),
        froc_compile_lines=pick(64, None, None),
        froc_compile_split=pick("val", "val", "train"),
        tp_train_lines=pick(16, 48, 300),
        tp_val_lines=pick(8, 8, 64),
        tp_epochs=pick(2, 2, 3),
        batch_sizes=[1, 16],
        # bf16 without AVX-512 BF16 or AMX is emulated (slower than fp32): scriba's default is fp32 there
        bf16=not a.no_bf16 and native_bf16(),
        bf16_batches=[1, 16],
        acc_spec=SPEC if a.acc_spec is None else a.acc_spec,
        # short: both tools fine-tune the published froc model the same way (a model trained from scratch
        # does not read after the few minutes this profile can spend: CER 100 % for both, nothing to compare)
        acc_load=(a.acc_load if a.acc_load is not None
                  else pick(None, str(DATA / "froc_mss" / "model_froc.mlmodel"), None)) or None,
        acc_train_lines=pick(16, 400, None),
        acc_val_lines=pick(8, 64, None),
        acc_test_lines=pick(8, None, None),
        acc_epochs=a.acc_epochs or pick(1, 2, 10),
        acc_batch=a.acc_batch or pick(1, 1, 1),
        acc_lr=a.acc_lr or pick(None, "1e-4", None),
        tta_train_lines=None if a.tta else pick(16, 32, None),
        tta_val_lines=None if a.tta else pick(8, 4, None),
        tta_budget=a.tta_budget or (3 * 3600 if a.tta else pick(100, None, 3 * 3600)),
        tta_target_cer=0.15,
        tta_full=a.tta_full,
        tta_factor=a.tta_factor,
        tta_tools=tuple(a.tta_tools.split(",")),
        acc_tools=tuple(a.acc_tools.split(",")),
        scratch_epochs=a.scratch_epochs,
        # short: `-q fixed -N 2`, throughput only, no time to accuracy (unless --tta)
        defaults_epochs=None if a.tta else pick(None, 2, None),
        eval_lines=pick(32, None, None),   # published_split/test.lst (356 lines)
        eval_batches={"kraken": pick([1, 16], [1], [1, 16]), "scriba": [1, 16]},
        cross_train_pages=pick(2, None, None),
        cross_val_pages=pick(1, 1, None),
        cross_test_pages=pick(1, 2, None),
        cross_epochs=pick(1, 6, a.cross_epochs),
        # short: the small spec (the froc model's architecture, ~10x cheaper than the default) learns to read
        # cremma in a few minutes; scriba compiles the ALTO pages once (its own line extraction) and trains on
        # the .arrow, so that epochs do not redo the extraction
        cross_spec=pick(SPEC, SMALL_SPEC, SPEC),
        cross_lr=pick(None, "2e-3", None),
        cross_compile=pick(False, True, False),
        cross_load=None,
        interop_froc_lines=pick(32, 16, 200),
        interop_cremma_pages=pick(1, 0, 2),
        mm_n=1024 if quick else 4096,
        timeout=a.timeout or pick(900, 900, 4 * 3600),
        # the short profile's 35-minute box does not apply to the hours-long runs asked for by name
        budget=a.budget or (None if a.tta or "scratch" in (a.only or "").split(",") else pick(None, SHORT_BUDGET, None)),
        section_budget=({k: v for k, v in SHORT_SECTION_BUDGET.items() if not (a.tta and k == "defaults")}
                        if short else {}),
    )

#!/usr/bin/env python3
"""scriba vs kraken 7.1.1 benchmark: one command, writes bench/RESULTS.md.

    python3 bench/run.py                   # = --profile short: time-boxed (~35 min on 2 cores) -> bench/RESULTS.md
    python3 bench/run.py --profile full    # full benchmark (hours; run it on an otherwise idle machine)
    python3 bench/run.py --profile quick   # harness smoke test: few lines, 1-2 epochs, 1 repeat
    python3 bench/run.py --only compile,eval --repeats 2     # a subset

It (re)builds kraken's venv with bench/setup_kraken.sh, then runs kraken (bench/.venv-kraken/bin/ketos) and
scriba (.venv/bin/ketos, or $SCRIBA_KETOS) on the same data with the same spec, batch size, `--workers` and
`--threads`, alternating tools inside each repeat (the tool that goes first alternates between repeats), and
reports min/median over repeats and the ratio scriba/kraken. Every measurement is its own subprocess with a
timeout; a failure is recorded in RESULTS.md (with the log file's tail) and the run goes on. Raw records are
kept in bench/work/<profile>/results.json, logs in bench/work/<profile>/logs/. The short profile is time-boxed:
each section has a budget (SHORT_SECTION_BUDGET) and the whole run --budget seconds (2100); a command gets at
most the time left and one that would start after the box is recorded as not run.

Sections (--only): peak, compile, train, defaults (throughput + time to accuracy at each tool's own
defaults), accuracy (val/test CER at equal epochs, and kraken testing scriba's weights), eval, crosscer
(issue 3: scriba model trained from ALTO pages, tested by kraken extracting the lines), interop (kraken
trains on a scriba-compiled .arrow).

How things are measured
* wall times are of the whole command (interpreter and model start-up included);
* training lines/s per epoch = training lines / interval between consecutive epoch checkpoints (epoch >= 2,
  so start-up is excluded; the interval includes the per-epoch validation on a small fixed validation set);
* peak memory = peak over time of the summed RSS (and PSS) of the command's whole process tree, polled from
  /proc every 0.2 s (no psutil);
* CER = errors / characters from each tool's `ketos test` report; val CER per epoch = 1 - the score in
  kraken-style checkpoint names (`checkpoint_EE-0.XXXX.ckpt`) or the `metrics` in the final weights;
* FLOP/s = network FLOPs of the lines processed (bench/flops.py, 3x forward for a training step, unpadded
  line widths) / time; the machine peak is a large fp32 / bf16 matrix product with the same thread count.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script: the bench package beside it

from bench.harness import setup_kraken  # noqa: E402
from bench.machine import machine_info, wait_for_quiet  # noqa: E402
from bench.report import Results, write_results  # noqa: E402
from bench.sections import SECTIONS  # noqa: E402
from bench.sections.accuracy import acc_key  # noqa: E402
from bench.session import Bench  # noqa: E402
from bench.settings import BENCH, DATA, TOOLS, WORK, Settings  # noqa: E402


def load_records(path: Path) -> list[dict]:
    """The records of an earlier run; a missing or broken file ends the program with a one-line message."""
    try:
        records = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        sys.exit(f"{path}: no results to report (run the benchmark with this --profile first)")
    except (OSError, UnicodeDecodeError, ValueError) as e:
        sys.exit(f"{path}: cannot read the results: {e}")
    if not (isinstance(records, list) and all(isinstance(r, dict) and "name" in r for r in records)):
        sys.exit(f"{path}: not a list of benchmark records")
    return records


def report(b: Bench, out: Path) -> None:
    """RESULTS.md from the run's records, described by the settings their latest run recorded."""
    write_results(Results.recorded(b.results, b.s, b.tag), out)


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", choices=("short", "full", "quick"), default="short",
                    help="short (default): time-boxed (~35 min on 2 cores), writes bench/RESULTS.md; full: hours; "
                         "quick: harness check on tiny subsets")
    ap.add_argument("--quick", action="store_true", help="same as --profile quick")
    ap.add_argument("--budget", type=int, default=None,
                    help="time box of the whole run in seconds (short: 2100); measurements that would start "
                         "after it are recorded as not run")
    ap.add_argument("--wait-load", type=float, default=1.5,
                    help="before each section wait (up to 2 min) while other processes keep this many tasks "
                         "runnable (0: never wait)")
    ap.add_argument("--compile-workers", type=int, default=2, help="--workers for the compile section (2)")
    ap.add_argument("--only", default=None,
                    help="comma-separated sections: " + ",".join(SECTIONS) + " (default: all; short and quick "
                         "leave out scratch, which takes hours, and full leaves out accuracy, which in that "
                         "profile would repeat scratch)")
    ap.add_argument("--skip", default="", help="comma-separated sections to skip")
    ap.add_argument("--repeats", type=int, default=None)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--no-bf16", action="store_true", help="skip scriba's bf16-mixed training runs")
    ap.add_argument("--acc-epochs", type=int, default=None, help="epochs for the equal-epochs accuracy runs (10)")
    ap.add_argument("--acc-batch", type=int, default=None, help="batch size for the accuracy runs (full 1, short 4)")
    ap.add_argument("--acc-lr", default=None, help="learning rate for the accuracy runs (short 1e-3)")
    ap.add_argument("--acc-spec", default=None, help="spec for the accuracy runs trained from scratch (default spec; a small one: SMALL_SPEC in bench/settings.py)")
    ap.add_argument("--acc-load", default=None,
                    help="weights both tools fine-tune in the accuracy runs (short: froc_mss/model_froc.mlmodel; "
                         "'' = train from scratch)")
    ap.add_argument("--acc-tools", default="kraken,scriba,scriba_fp32",
                    help="accuracy runs to make (kraken, scriba, scriba_fp32); with --keep the others are kept from "
                         "an earlier run, so that the full profile's long runs can be split over several sittings")
    ap.add_argument("--scratch-epochs", type=int, default=10,
                    help="epochs of the scratch section (issue 5: both tools from scratch on all of froc)")
    ap.add_argument("--cross-epochs", type=int, default=10, help="epochs for the cross-system CER model (full)")
    ap.add_argument("--tta-budget", type=int, default=None, help="seconds per tool for time-to-accuracy")
    ap.add_argument("--tta-full", action="store_true",
                    help="give kraken the whole --tta-budget (default: capped at --tta-factor x scriba's time)")
    ap.add_argument("--tta-factor", type=float, default=4.0,
                    help="kraken's time-to-accuracy budget as a multiple of scriba's time to target (4)")
    ap.add_argument("--tta-tools", default="scriba,kraken",
                    help="tools the defaults section runs; 'kraken' alone re-runs kraken against the scriba result "
                         "kept from an earlier run (with --keep)")
    ap.add_argument("--tta", action="store_true",
                    help="the defaults section measures the time to accuracy on the whole froc train/val sets in "
                         "any profile (short: merge it into RESULTS.md with --keep)")
    ap.add_argument("--timeout", type=int, default=None, help="per-command timeout (s)")
    ap.add_argument("--out", default=None, help="output markdown (default bench/RESULTS.md; quick: bench/work/RESULTS-quick.md)")
    ap.add_argument("--no-setup", action="store_true", help="do not run bench/setup_kraken.sh")
    ap.add_argument("--keep", action="store_true",
                    help="keep earlier results of the sections not re-run (merge into results.json)")
    ap.add_argument("--report-only", action="store_true",
                    help="rewrite the markdown from bench/work/<quick|full>/results.json without running anything")
    return ap


def kept_records(old: list[dict], todo: list[str], s: Settings) -> list[dict]:
    """The records of an earlier run that ``--keep`` merges: sections not re-run, and its meta records renamed
    ``earlier_*`` (the report names both invocations)."""
    kept_tools = set(TOOLS) - set(s.tta_tools)

    def kept(r: dict) -> bool:
        sec = str(r.get("section", ""))
        if sec in ("prep", "meta"):
            return False
        if sec.split("_")[0] not in todo:
            return True
        if sec == "defaults":
            # a throughput-only run (fixed epochs on a subset) is no time-to-accuracy run, nor the reverse
            same_kind = bool(r.get("fixed_epochs")) == bool(s.defaults_epochs)
            return r.get("tool") in kept_tools and same_kind
        if sec in ("accuracy", "accuracy_test", "scratch", "scratch_test"):
            return acc_key(r.get("tool", ""), r.get("variant")) not in s.acc_tools
        return False
    return [r for r in old if kept(r)] + [{**r, "name": "earlier_" + r["name"]} for r in old
                                          if r.get("section") == "meta" and not r["name"].startswith("earlier_")]


def main(argv: list[str] | None = None) -> None:
    a = parser().parse_args(argv)
    if a.quick:
        a.profile = "quick"
    out = Path(a.out) if a.out else (BENCH / "RESULTS.md" if a.profile != "quick" else WORK / "RESULTS-quick.md")
    if a.report_only:
        b = Bench(a)
        b.results = load_records(b.wdir / "results.json")
        report(b, out)
        return

    if not a.no_setup:
        err = setup_kraken()
        if err is not None:
            print(err, file=sys.stderr)
            sys.exit("kraken venv setup failed")
    b = Bench(a)
    for t in TOOLS:
        if not b.have(t):
            print(f"warning: {t} ketos not found at {b.ketos[t]}; its side is skipped", file=sys.stderr)
    skip = set(filter(None, a.skip.split(",")))
    only = a.only or ",".join(x for x in SECTIONS if x != ("accuracy" if a.profile == "full" else "scratch"))
    todo = [x for x in only.split(",") if x and x not in skip]
    if a.keep and (b.wdir / "results.json").exists():
        b.results = kept_records(load_records(b.wdir / "results.json"), todo, b.s)
    else:
        b.results = []
    b.record({"name": "machine_before", "section": "meta", "ok": True, **machine_info(),
              "argv": " ".join(sys.argv[1:] if argv is None else argv), "settings": b.s.as_record(), "section_budget": b.s.section_budget,
              "data": str(DATA)})
    for name in todo:
        if name in skip:
            continue
        if name not in SECTIONS:
            sys.exit(f"unknown section {name}; choose from {','.join(SECTIONS)}")
        b.section_deadline = None
        if b.remaining() is None or b.remaining() > 60:
            waited = wait_for_quiet(a.wait_load, max_wait=min(120, (b.remaining() or 1e9) - 60))
        else:
            waited = 0.0
        sb = b.s.section_budget.get(name)
        b.section_deadline = time.time() + sb if sb else None
        rem = b.remaining()
        if rem is not None and rem < 30:
            b.record({"name": f"section_{name}", "section": name, "ok": False, "not_run": True,
                      "status": "not run (time budget spent)"})
            continue
        print(f"== {name} (load {os.getloadavg()[0]:.2f}, waited {waited:.0f} s for a quiet machine)", flush=True)
        try:
            SECTIONS[name](b)
        except Exception as e:  # a broken section must not lose the others
            import traceback
            b.record({"name": f"section_{name}", "section": name, "ok": False,
                      "status": f"harness error: {type(e).__name__}: {e}", "tail": traceback.format_exc()})
        report(b, out)
    b.section_deadline = None
    b.record({"name": "machine_after", "section": "meta", "ok": True, **machine_info(),
              "elapsed_s": time.time() - b.t_start})
    report(b, out)


if __name__ == "__main__":
    main()

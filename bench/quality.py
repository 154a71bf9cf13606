#!/usr/bin/env python3
"""Quality section: test CER after a fixed wall-clock training budget, one arm (a recipe) against another.

    python bench/quality.py --mode screen --datasets froc_pages --arms defaults,b16
    python bench/quality.py --mode confirm --datasets froc_published --arms defaults
    python bench/quality.py --mode screen --datasets cremma --arms defaults --lm   # and CER with a 6-gram LM
    python bench/quality.py --smoke                                              # harness check (CI)

Every arm trains from scratch through the ``ketos`` command line with ``--max-time`` (screen: 12 min,
confirm: 60 min; ``--budget`` overrides) on the dataset's whole training split, validates on its validation
split, and the best weights are scored by ``ketos test`` on the test split with greedy decoding (``-u NFD``
everywhere, as the data's reference figures). With ``--lm`` a character 6-gram built from the training
transcriptions (``ketos lm build``) decodes the same test lines too. ``--kraken`` scores the weights with
kraken 7.1.1's ``ketos test`` as well (``bench/.venv-kraken``, see ``bench/setup_kraken.sh``).

Results go to ``--keep`` (default ``bench/work/quality``), one folder per dataset/arm/budget/seed with its
``result.json``: a finished arm is not trained again, so an interrupted run continues where it stopped.
The table (``quality.md`` there) is what ``bench/RESULTS.md`` quotes. The arms compete for the same cores:
run on an otherwise idle machine, one arm after the other.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from flops import KRAKEN_SPEC  # the standard-library part of bench/flops.py (this script's folder)

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
DATA = Path(os.environ.get("SCRIBA_SHARED_DATA", ROOT.parent / "shared" / "data")).resolve()
KRAKEN = BENCH / ".venv-kraken" / "bin" / "ketos"
BUDGETS = {"screen": 12.0, "confirm": 60.0}
TINY_SPEC = "[1,24,0,1 Cr3,3,8 Mp2,2 S1(1x0)1,3 Lbx16]"
# kraken's default network with the height-to-channels reshape replaced by a max pool over the 15 rows left
COLPOOL_SPEC = KRAKEN_SPEC.replace("S1(1x0)1,3", "Mp15,1 S1(1x0)1,3")

# cheaper networks for a CPU budget: 3x3 convolutions instead of kraken's 3x13/3x9 ones (which cost most of
# its FLOPs) and a max pool over the remaining rows; 64 or 96 pixel lines
SMALL64_SPEC = ("[1,64,0,1 Cr3,3,32 Mp2,2 Cr3,3,64 Mp2,2 Cr3,3,96 Mp2,2 Cr3,3,96 Mp8,1 S1(1x0)1,3 "
                "Lbx200 Do0.2,2 Lbx200 Do0.2,2 Lbx200 Do0.2]")
# the network of froc_mss's published kraken model (7.83 % test CER after a long training): 48-pixel lines, two
# 3x3 convolutions, one BiLSTM of 100; a fifteenth of kraken's network's FLOPs for the same line image
PUB48_SPEC = "[1,48,0,1 Cr3,3,32 Do0.1,2 Mp2,2 Cr3,3,64 Do0.1,2 Mp2,2 S1(1x0)1,3 Lbx100 Do]"
SMALL96_SPEC = SMALL64_SPEC.replace("[1,64,", "[1,96,").replace("Mp8,1", "Mp12,1")

# dataset: (folder, split folder, format of its manifests)
DATASETS = {
    "froc_published": ("froc_mss", "published_split", "path"),
    "froc_pages": ("froc_mss", "splits", "path"),
    "cremma": ("cremma_medieval", "splits", "xml"),
    "openiti": ("openiti_arabic", "splits", "path"),
}

# arm: options added to ``ketos train`` (the defaults arm adds none: today's defaults; no_aux: the defaults
# until 2026-12-01, kraken's network without the auxiliary CTC head; aux: kraken's network with it, the
# defaults of 2026-12-02 until the small network became the default the same day)
ARMS: dict[str, list[str]] = {
    "defaults": [],
    "no_aux": ["-s", KRAKEN_SPEC, "--aux-ctc", "0"],
    "b16": ["-B", "16", "-r", "1e-3"],
    "colpool": ["-s", COLPOOL_SPEC],
    "colpool_b16": ["-s", COLPOOL_SPEC, "-B", "16", "-r", "1e-3"],
    "colpool_b16_no_aux": ["-s", COLPOOL_SPEC, "-B", "16", "-r", "1e-3", "--aux-ctc", "0"],
    "small64": ["-s", SMALL64_SPEC],
    "small64_no_aux": ["-s", SMALL64_SPEC, "--aux-ctc", "0"],
    "small64_b4": ["-s", SMALL64_SPEC, "-B", "4", "-r", "6e-4"],
    "small96": ["-s", SMALL96_SPEC],
    "pub48": ["-s", PUB48_SPEC],
    "small64_ema": ["-s", SMALL64_SPEC, "--ema", "0.999"],
    "aux": ["-s", KRAKEN_SPEC, "--aux-ctc", "0.1"],
    "ema": ["--ema", "0.999"],  # the default since 2026-12-02 (third session); no_ema: the defaults before
    "no_ema": ["--ema", "0"],
    "augment": ["--augment"],
    "freq4": ["-F", "0.25"],
    "lr6e-4": ["-r", "6e-4"],
    # cosine from the rate to 1e-6 over the epochs the 12-minute screen reaches on openiti (3) with a short
    # linear warm-up, instead of reduceonplateau (which at 3 epochs barely lowers the rate)
    "cosine3": ["--schedule", "cosine", "--cos-max", "3", "--warmup", "500"],
    # cosine from the rate to 1e-6 over the --max-time budget itself (--cos-max 0), whatever epochs it reaches
    "cosine_run": ["--schedule", "cosine", "--cos-max", "0"],
    # dropout after the recurrent layers: none, and 0.5 instead of the default network's 0.2
    "do0": ["-s", SMALL64_SPEC.replace(" Do0.2,2", "").replace(" Do0.2", "")],
    "do05": ["-s", SMALL64_SPEC.replace("Do0.2", "Do0.5")],
    # the README's batch rule (rate up with the square root of the batch, a few hundred warm-up steps) from
    # -B 1 at 6e-4: -B 4 at 1.2e-3 and -B 16 at 2.4e-3 (b16, at 1e-3 without warm-up, stayed on the plateau)
    "b4_sqrt": ["-B", "4", "-r", "1.2e-3", "--warmup", "200"],  # the default since 2026-12-04; b1: before
    "b1": ["-B", "1", "-r", "6e-4", "--warmup", "0"],
    "b16_sqrt": ["-B", "16", "-r", "2.4e-3", "--warmup", "200"],
    "scratch300": [],
    "pretrained300": ["--resize", "new"],
}
# arms that learn from the first 300 transcribed training lines only (the guide's case for pretraining:
# little labelled data); "pretrained300" first runs ``ketos pretrain`` on every training line, transcriptions
# unused, for the same budget as its fine-tuning, with these options (pretraining's own defaults, lr 1e-6
# after a 32000-line warm-up, are meant for days, not minutes), then fine-tunes with ``--load``
LABELLED_LINES = {"scratch300": 300, "pretrained300": 300}
PRETRAIN = {"pretrained300": ["-r", "1e-4", "--warmup", "500", "--schedule", "constant"]}


def ketos() -> list[str]:
    return [os.environ["SCRIBA_KETOS"]] if os.environ.get("SCRIBA_KETOS") else [sys.executable, "-m", "scriba.cli.main"]


def env() -> dict[str, str]:
    e = dict(os.environ, PYTHONWARNINGS="ignore", TERM="dumb", COLUMNS="120", PYTHONUNBUFFERED="1",
             CUDA_VISIBLE_DEVICES="")
    e["PYTHONPATH"] = str(ROOT / "src") + os.pathsep + os.environ.get("PYTHONPATH", "")
    return e


def absolute_manifest(keep: Path, ds: str, split: str, limit: int | None) -> Path:
    """The dataset's manifest with absolute paths (its own are relative to the dataset folder)."""
    folder, splits, _ = DATASETS[ds]
    base = DATA / folder
    names = (base / splits / f"{split}.lst").read_text(encoding="utf-8").split()
    if limit:
        names = names[:limit]
    path = keep / "manifests" / f"{ds}-{split}{f'-{limit}' if limit else ''}.lst"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{base / n}\n" for n in names), encoding="utf-8")
    return path


def run(cmd: list[str], log: Path, timeout: float) -> tuple[int, float, str]:
    t0 = time.perf_counter()
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "w", encoding="utf-8") as fh:
        fh.write(" ".join(cmd) + "\n")
        fh.flush()
        proc = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT, text=True, env=env(), timeout=timeout)
    return proc.returncode, time.perf_counter() - t0, log.read_text(encoding="utf-8", errors="replace")


def data_inputs(a: argparse.Namespace, keep: Path, ds: str) -> dict[str, tuple[str, Path]]:
    """(format, path) of each split; XML pages are compiled to ``.arrow`` once (their line extraction would
    otherwise be paid inside every arm's budget)."""
    fmt = DATASETS[ds][2]
    limits = {"train": a.train_lines, "val": a.val_lines, "test": a.test_lines}
    out = {}
    for split in ("train", "val", "test"):
        lst = absolute_manifest(keep, ds, split, limits[split])
        if fmt != "xml":
            out[split] = ("path", lst)
            continue
        arrow = lst.with_suffix(".arrow")
        if not arrow.exists():
            cmd = [*ketos(), "--workers", str(a.threads), "compile", "-f", "xml", "-o", str(arrow),
                   *lst.read_text(encoding="utf-8").split()]
            rc, _, text = run(cmd, lst.with_suffix(".compile.log"), 3600)
            if rc != 0:
                raise SystemExit(f"compiling {ds} {split} failed:\n{text[-2000:]}")
        listed = arrow.with_suffix(".arrow.lst")
        listed.write_text(f"{arrow}\n", encoding="utf-8")
        out[split] = ("binary", listed)
    return out


def test_json(path: Path) -> dict[str, Any]:
    rep = json.loads(path.read_text(encoding="utf-8"))
    s = rep["summary"]
    chars, errors = int(s["chars"]), int(s["errors"])
    return {"chars": chars, "errors": errors, "cer": errors / chars if chars else None,
            "lines_per_s": rep["timing"]["lines_per_second"]}


KRAKEN_REPORT = re.compile(r"^\s*(\d+)\s+Characters\s*$.*?^\s*(\d+)\s+Errors\s*$", re.M | re.S)
EPOCH = re.compile(r"^epoch (\d+) .*?val_accuracy ([0-9.]+)", re.M)
RATE = re.compile(r"([0-9.]+) lines/s")


def one_arm(a: argparse.Namespace, keep: Path, ds: str, arm: str, inputs: dict[str, tuple[str, Path]]) -> dict:
    budget = a.budget or BUDGETS[a.mode]
    folder = keep / ds / f"{arm}-{budget:g}min-seed{a.seed}"
    done = folder / "result.json"
    if done.exists() and not a.force:
        return json.loads(done.read_text(encoding="utf-8"))
    folder.mkdir(parents=True, exist_ok=True)
    glob = ["--device", "cpu", "--workers", "0", "--threads", str(a.threads), "-s", str(a.seed)]
    # each stage leaves its result beside the model, so an interrupted arm resumes at the stage it was in
    trained = folder / "train.json"
    if trained.exists() and not a.force:
        rec = json.loads(trained.read_text(encoding="utf-8"))
    else:
        rec = train_arm(a, folder, ds, arm, glob, inputs)
        if rec.get("error"):
            return rec
        trained.write_text(json.dumps(rec, indent=1) + "\n", encoding="utf-8")
    tfmt, test = inputs["test"]
    greedy = folder / "test.json"
    if a.force or not greedy.exists():
        cmd = [*ketos(), *glob, "test", "-m", rec["weights"], "-f", tfmt, "-e", str(test), "-u", "NFD", "-B", "16",
               "--output-json", str(greedy)]
        rc, _, text = run(cmd, folder / "test.log", 3600)
        if rc != 0:
            rec["error"] = text[-1500:]
            return rec
    rec["greedy"] = test_json(greedy)
    if a.lm:
        rec["lm"] = with_lm(a, folder, glob, rec["weights"], inputs)
    if a.kraken and KRAKEN.exists():
        rec["kraken"] = kraken_test(a, folder, rec["weights"], tfmt, test)
    done.write_text(json.dumps(rec, indent=1) + "\n", encoding="utf-8")
    return rec


def train_arm(a: argparse.Namespace, folder: Path, ds: str, arm: str, glob: list[str],
              inputs: dict[str, tuple[str, Path]]) -> dict[str, Any]:
    budget = a.budget or BUDGETS[a.mode]
    fmt, train = inputs["train"]
    _, val = inputs["val"]
    extra = list(ARMS[arm])
    if a.smoke:  # the tiny network on 16 lines validates often: only the budget may end it
        extra = [*extra, "-s", TINY_SPEC, "--lag", "100000"]
    rec: dict[str, Any] = {"dataset": ds, "arm": arm, "budget_min": budget, "seed": a.seed, "threads": a.threads,
                           "options": ARMS[arm]}
    if arm in PRETRAIN:
        pre = pretrain_stage(a, folder, glob, inputs, budget, PRETRAIN[arm])
        rec["pretrain"] = pre
        if "weights" not in pre:
            rec["error"] = pre.get("error", "pretraining left no weights")
            return rec
        extra = ["-i", pre["weights"], *extra]
    if arm in LABELLED_LINES:
        if fmt != "path":
            rec["error"] = f"{arm} takes the first {LABELLED_LINES[arm]} lines of a line-image dataset, not {ds}"
            return rec
        lines = train.read_text(encoding="utf-8").split()[: LABELLED_LINES[arm]]
        train = folder / "train_subset.lst"
        train.write_text("".join(f"{n}\n" for n in lines), encoding="utf-8")
    cmd = [*ketos(), *glob, "train", "-f", fmt, "-t", str(train), "-e", str(val), "-o", str(folder / "model"),
           "-u", "NFD", "--max-time", f"{budget:g}", *extra]
    rc, wall, text = run(cmd, folder / "train.log", budget * 60 * 1.5 + 600)
    rec.update(train_command=" ".join(["ketos", *cmd[len(ketos()):]]), train_wall_s=round(wall, 1))
    rec.update(parse_train_log(text))
    if rc != 0 or "weights" not in rec:
        rec["error"] = text[-1500:]
    return rec


def pretrain_stage(a: argparse.Namespace, folder: Path, glob: list[str], inputs: dict[str, tuple[str, Path]],
                   budget: float, options: list[str]) -> dict[str, Any]:
    done = folder / "pretrain.json"
    if done.exists() and not a.force:
        return dict(json.loads(done.read_text(encoding="utf-8")))
    fmt, train = inputs["train"]
    _, val = inputs["val"]
    extra = ["-s", TINY_SPEC] if a.smoke else []
    cmd = [*ketos(), *glob, "pretrain", "-f", fmt, "-t", str(train), "-e", str(val), "-o", str(folder / "pretrain"),
           "--max-time", f"{budget:g}", *options, *extra]
    rc, wall, text = run(cmd, folder / "pretrain.log", budget * 60 * 1.5 + 600)
    rec: dict[str, Any] = {"command": " ".join(["ketos", *cmd[len(ketos()):]]), "wall_s": round(wall, 1)}
    weights = parse_train_log(text).get("weights")
    if rc != 0 or not weights:
        rec["error"] = text[-1500:]
    else:
        rec["weights"] = weights
        done.write_text(json.dumps(rec, indent=1) + "\n", encoding="utf-8")
    return rec


def parse_train_log(text: str) -> dict[str, Any]:
    weights = re.findall(r"^best model: (.+)$", text, re.M)
    epochs = EPOCH.findall(text)
    rates = [float(r) for r in RATE.findall(text)]
    rec: dict[str, Any] = {
        "epochs": len(epochs), "best_val_accuracy": max((float(v) for _, v in epochs), default=None),
        "train_lines_per_s": rates[-1] if rates else None,
        "stopped": (re.findall(r"^stopped: (.+)$", text, re.M) or [None])[-1]}
    if weights:
        rec["weights"] = weights[-1].strip()
    return rec


def kraken_test(a: argparse.Namespace, folder: Path, weights: str, tfmt: str, test: Path) -> dict[str, Any]:
    log = folder / "kraken_test.log"
    m = KRAKEN_REPORT.findall(log.read_text(encoding="utf-8", errors="replace")) if log.exists() else []
    if a.force or not m:
        kcmd = [str(KRAKEN), "-d", "cpu", "test", "-m", weights, "-f", tfmt, "-u", "NFD", "-B", "1",
                *test.read_text(encoding="utf-8").split()]
        rc, _, text = run(kcmd, log, 3600)
        m = KRAKEN_REPORT.findall(text) if rc == 0 else []
    if not m:
        return {"error": f"kraken's ketos test gave no report: see {log}"}
    chars, errors = map(int, m[-1])
    return {"chars": chars, "errors": errors, "cer": errors / chars}


def with_lm(a: argparse.Namespace, folder: Path, glob: list[str], weights: str, inputs: dict) -> dict:
    fmt, train = inputs["train"]
    tfmt, test = inputs["test"]
    lm = folder / "chars.arpa"
    out = folder / "test_lm.json"
    if out.exists() and not a.force:
        return test_json(out)
    cmd = [*ketos(), *glob, "lm", "build", "-m", weights, "-f", fmt, "-t", str(train), "-u", "NFD", "-o", str(lm)]
    rc, _, text = run(cmd, folder / "lm_build.log", 3600)
    if rc != 0:
        return {"error": text[-1500:]}
    cmd = [*ketos(), *glob, "test", "-m", weights, "-f", tfmt, "-e", str(test), "-u", "NFD", "-B", "16",
           "--lm", str(lm), "--output-json", str(out)]
    rc, _, text = run(cmd, folder / "test_lm.log", 3600)
    return test_json(out) if rc == 0 else {"error": text[-1500:]}


def pct(x: float | None) -> str:
    return "—" if x is None else f"{100 * x:.2f}"


def table(rows: list[dict]) -> str:
    head = ("| dataset | arm | budget | epochs | train lines/s | best val acc | test CER % (errors/chars) "
            "| with LM | kraken 7.1.1 CER % |\n|---|---|---|---|---|---|---|---|---|\n")
    body = []
    for r in rows:
        g = r.get("greedy") or {}
        lm, kr = r.get("lm") or {}, r.get("kraken") or {}
        lm_speed = f" at {lm['lines_per_s']:.1f} lines/s" if lm.get("cer") is not None else ""
        body.append(
            f"| {r['dataset']} | {r['arm']} | {r['budget_min']:g} min | {r.get('epochs', '—')} "
            f"| {r.get('train_lines_per_s') or '—'} | {pct(r.get('best_val_accuracy'))} "
            f"| {pct(g.get('cer'))} ({g.get('errors', '—')}/{g.get('chars', '—')}) "
            f"| {pct(lm.get('cer'))}{lm_speed} "
            f"| {pct(kr.get('cer'))} |"
            + (" failed" if r.get("error") else "")
        )
    return head + "\n".join(body) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--mode", choices=sorted(BUDGETS), default="screen")
    p.add_argument("--budget", type=float, default=None, help="minutes of training per arm (overrides --mode)")
    p.add_argument("--datasets", default="froc_pages")
    p.add_argument("--arms", default="defaults")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    p.add_argument("--train-lines", type=int, default=None, help="first N training lines only")
    p.add_argument("--val-lines", type=int, default=None)
    p.add_argument("--test-lines", type=int, default=None)
    p.add_argument("--lm", action="store_true", help="also decode the test split with a 6-gram LM")
    p.add_argument("--kraken", action="store_true", help="also score the weights with kraken 7.1.1")
    p.add_argument("--keep", type=Path, default=BENCH / "work" / "quality")
    p.add_argument("--force", action="store_true", help="train arms again that have a result")
    p.add_argument("--smoke", action="store_true", help="tiny network, 16 lines, a few seconds per arm")
    a = p.parse_args(argv)
    if a.smoke:
        a.budget, a.train_lines, a.val_lines, a.test_lines = a.budget or 0.1, 16, 8, 8
    for name in a.arms.split(","):
        if name not in ARMS:
            p.error(f"unknown arm {name!r} (known: {', '.join(ARMS)})")
    a.keep.mkdir(parents=True, exist_ok=True)
    rows = []
    for ds in a.datasets.split(","):
        if ds not in DATASETS:
            p.error(f"unknown dataset {ds!r} (known: {', '.join(DATASETS)})")
        if not (DATA / DATASETS[ds][0]).is_dir():
            print(f"skipping {ds}: {DATA / DATASETS[ds][0]} is absent", file=sys.stderr)
            continue
        inputs = data_inputs(a, a.keep, ds)
        for arm in a.arms.split(","):
            rec = one_arm(a, a.keep, ds, arm, inputs)
            rows.append(rec)
            print(table([rec]).splitlines()[-1], flush=True)
    # the table holds every finished arm in --keep, this run's and earlier ones'
    kept = [json.loads(f.read_text(encoding="utf-8")) for f in sorted(a.keep.glob("*/*/result.json"))]
    report = a.keep / "quality.md"
    report.write_text(table(kept), encoding="utf-8")
    print(table(kept))
    return 1 if any(r.get("error") for r in rows) else 0


if __name__ == "__main__":
    raise SystemExit(main())

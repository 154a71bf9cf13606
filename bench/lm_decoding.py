#!/usr/bin/env python3
"""Language-model decoding section: greedy against beam search with a label 6-gram, on the same network outputs.

    .venv/bin/python bench/lm_decoding.py --model ../shared/data/froc_mss/model_froc.mlmodel \\
        --root ../shared/data/froc_mss --split published_split -u NFD --processes 2 --json bench/work/lm_froc.json

The network runs once over the validation and test lines (``--split`` holds ``train.lst``, ``val.lst``,
``test.lst``, relative to ``--root``, line images with ``.gt.txt``). The LM is ``--lm`` or, by default, one
built by ``ketos lm build`` from the training transcriptions. The weight and label bonus are chosen on the
validation lines over ``--weights`` x ``--bonuses``; the test lines are then decoded greedily and with the LM at
that point. Decoding speed is timed on the test lines alone (the network excluded) with one worker process
and with ``--processes``: lines/s per core is the one-process figure. Run it on an idle machine.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent


def manifest(root: Path, split: str, name: str, tmp: Path, limit: int | None) -> Path:
    names = (root / split / f"{name}.lst").read_text(encoding="utf-8").split()[:limit]
    out = tmp / f"{name}.lst"
    out.write_text("".join(f"{root / n}\n" for n in names), encoding="utf-8")
    return out


def outputs(model, lst: Path, normalization: str | None):
    """Each line's (T, C) natural-log posteriors and its reference, in manifest order."""
    from scriba.data.sources import iter_records, resolve_inputs
    from scriba.recognizer import Recognizer
    from scriba.text import TextTransform

    rec = Recognizer(model, batch_size=16)
    records = list(iter_records(resolve_inputs([str(lst)]), "path"))
    lines: dict[int, tuple] = {}
    with rec.session():
        for batch, _bad in rec.iter_batches(rec.dataset(records, TextTransform(normalization=normalization)),
                                            require_text=True):
            if batch is None:
                continue
            for i, lp, text in zip(batch["indices"], rec.log_posteriors(batch), batch["texts"]):
                lines[i] = (lp, text)
    return [lines[i] for i in sorted(lines)]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True)
    p.add_argument("--root", type=Path, required=True)
    p.add_argument("--split", default="splits")
    p.add_argument("-u", "--normalization", default=None)
    p.add_argument("--lm", default=None, help="an LM from `ketos lm build` (default: built from train.lst)")
    p.add_argument("--processes", type=int, default=os.cpu_count() or 1)
    p.add_argument("--weights", default="0.3,0.6,1.0,1.5,2.0,2.5")
    p.add_argument("--bonuses", default="0,0.75,1.5,2.5,3.5")
    p.add_argument("--beam-size", type=int, default=16)
    p.add_argument("--limit", type=int, default=None, help="first N lines of each split only")
    p.add_argument("--json", type=Path, default=None)
    a = p.parse_args(argv)
    weights, bonuses = [float(x) for x in a.weights.split(",")], [float(x) for x in a.bonuses.split(",")]

    import torch

    from scriba.lm.beam import BeamSettings, ParallelBeamDecoder
    from scriba.lm.lmfile import check_language_model
    from scriba.lm.tune import greedy_tally, score_decoded, tune_lm
    from scriba.metrics import prediction_normalizer
    from scriba.weights import load_model

    torch.set_num_threads(a.processes)
    model = load_model(a.model)
    codec = model.codec
    normalize = prediction_normalizer(a.normalization)
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        lm = a.lm
        t0 = time.perf_counter()
        if lm is None:
            lm = str(tmp / "chars.arpa")
            train = manifest(a.root, a.split, "train", tmp, a.limit)
            cmd = [sys.executable, "-m", "scriba.cli.main", "lm", "build", "-m", a.model, "-f", "path", "-t",
                   str(train), "-o", lm, *(["-u", a.normalization] if a.normalization else [])]
            subprocess.run(cmd, check=True, env=dict(os.environ, PYTHONPATH=str(ROOT / "src")))
        build_s = time.perf_counter() - t0
        labels = check_language_model(lm, codec)
        val = outputs(model, manifest(a.root, a.split, "val", tmp, a.limit), a.normalization)
        test = outputs(model, manifest(a.root, a.split, "test", tmp, a.limit), a.normalization)

        def greedy(lines):
            return greedy_tally([lp for lp, _ in lines], [r for _, r in lines], codec, normalize)

        base = BeamSettings(lm, labels, beam_size=a.beam_size)
        grid = tune_lm([lp for lp, _ in val], [r for _, r in val], codec, base,
                       weights=weights, bonuses=bonuses, processes=a.processes, normalize=normalize)
        best = grid[0]
        settings = BeamSettings(lm, labels, lm_weight=best.lm_weight, token_bonus=best.token_bonus,
                                beam_size=a.beam_size)
        speeds = {}
        decoded = None
        for procs in sorted({1, a.processes}):
            with ParallelBeamDecoder(settings, procs) as dec:
                dec.decode_all([lp for lp, _ in test[:4]])  # workers started and warm
                t0 = time.perf_counter()
                decoded = dec.decode_all([lp for lp, _ in test])
                speeds[procs] = len(test) / (time.perf_counter() - t0)
        with_lm = score_decoded(decoded, [r for _, r in test], codec, normalize)
        g_val, g_test = greedy(val), greedy(test)
    rec = {
        "model": a.model, "split": str(a.root / a.split), "lm_build_s": round(build_s, 1),
        "best": {"lm_weight": best.lm_weight, "token_bonus": best.token_bonus},
        "edge": best.lm_weight == max(weights) or best.token_bonus == max(bonuses),
        "val": {"lines": len(val), "chars": g_val.chars, "greedy_errors": g_val.errors, "lm_errors": best.errors},
        "test": {"lines": len(test), "chars": g_test.chars, "greedy_errors": g_test.errors,
                 "lm_errors": with_lm.errors},
        "decode_lines_per_s": {str(k): round(v, 1) for k, v in speeds.items()},
    }
    t = rec["test"]
    print(f"test: greedy {t['greedy_errors']}/{t['chars']} ({100 * t['greedy_errors'] / t['chars']:.2f} %), "
          f"LM {t['lm_errors']} ({100 * t['lm_errors'] / t['chars']:.2f} %; "
          f"{100 * (t['lm_errors'] / max(1, t['greedy_errors']) - 1):+.1f} % errors) at weight {best.lm_weight}, "
          f"bonus {best.token_bonus}{' (grid edge)' if rec['edge'] else ''}; decoding "
          + ", ".join(f"{v:.1f} lines/s with {k} process(es)" for k, v in speeds.items()))
    if a.json:
        a.json.parent.mkdir(parents=True, exist_ok=True)
        a.json.write_text(json.dumps(rec, indent=1) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

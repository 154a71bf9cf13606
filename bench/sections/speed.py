"""Speed sections: the machine's matmul peak, `ketos compile`, training throughput and `ketos test`."""

from __future__ import annotations

import json
import time

from bench.figures import epoch_rate, rnd
from bench.machine import native_bf16
from bench.session import Bench
from bench.settings import DATA, SPEC, TOOLS

PEAK_CODE = r"""
import sys, time, json, torch
n, threads, native_bf16 = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3] == "1"
torch.set_num_threads(threads)
res = {"torch": torch.__version__, "threads": threads, "n": n, "bf16_native": native_bf16}
for name, dt in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
    # emulated bf16 is tens of times slower: a smaller product, measured once, shows it
    m, reps = (n, 5) if name == "fp32" or native_bf16 else (min(n, 1024), 1)
    try:
        a = torch.randn(m, m, dtype=dt); b = torch.randn(m, m, dtype=dt)
        for _ in range(2 if reps > 1 else 1): a @ b
        best = float("inf")
        for _ in range(reps):
            t = time.perf_counter(); a @ b; best = min(best, time.perf_counter() - t)
        res[name + "_gflops"] = 2 * m ** 3 / best / 1e9
    except Exception as e:
        res[name + "_error"] = str(e)
print(json.dumps(res))
"""


def section_peak(b: Bench) -> None:
    tool = "scriba" if b.py["scriba"].exists() else "kraken"
    t0 = time.time()
    try:
        out = b.pyhelper(PEAK_CODE, b.s.mm_n, b.s.threads, "1" if native_bf16() else "0", tool=tool)
        r = json.loads(out.strip().splitlines()[-1])
        rec = {"name": "peak_matmul", "section": "peak", "ok": True, **r, "python": tool}
    except Exception as e:
        rec = {"name": "peak_matmul", "section": "peak", "ok": False, "status": str(e)[-500:]}
    rec["wall_s"] = time.time() - t0
    rec["summary"] = {k: round(v, 1) for k, v in rec.items() if k.endswith("gflops")}
    b.record(rec)


def section_compile(b: Bench) -> None:
    s = b.s
    cm_split = s.cremma_compile_split
    cm = b.manifest(f"cremma_{cm_split}_c", "cremma_medieval", f"splits/{cm_split}.lst", s.cremma_compile_pages)
    fr_split = s.froc_compile_split
    fr = b.manifest(f"froc_{fr_split}_c", "froc_mss", f"splits/{fr_split}.lst", s.froc_compile_lines)
    jobs = [("cremma_alto", "alto", cm), ("froc_path", "path", fr)]
    for r in range(s.repeats):
        for name, fmt, man in jobs:
            for tool in b.order(r):
                if not b.have(tool):
                    continue
                _, rec = b.compile_arrow(tool, f"bench_{name}_r{r}", fmt, man, workers=s.compile_workers)
                rec.update(section="compile", job=name, tool=tool, repeat=r, inputs=b.count_lines(man),
                           workers=s.compile_workers)
                if rec.get("lines"):
                    rec["lines_per_s"] = rec["lines"] / rec["wall_s"]
                rec["summary"] = {"lines": rec.get("lines"), "lines/s": rnd(rec.get("lines_per_s"))}
                b.record(rec)


def section_train(b: Bench) -> None:
    s = b.s
    tr, va, _ = b.froc_sets(s.tp_train_lines, s.tp_val_lines, 1, "tp")
    n = b.count_lines(tr)
    fl = b.train_flops(SPEC, tr)
    data = {t: (b.train_data(t, "froc_train_tp", "path", tr), b.train_data(t, "froc_val_tp", "path", va))
            for t in TOOLS if b.have(t)}
    for r in range(s.repeats):
        for bs in s.batch_sizes:
            for tool in b.order(r):
                if tool not in data:
                    continue
                (trd, fmt, prov), (vad, _, _) = data[tool]
                # fp32 named explicitly: scriba's default precision (auto) is bf16-mixed on CPUs with native bf16
                rec = b.train(tool, f"train_B{bs}_{tool}_r{r}", trd, vad, fmt,
                              ["-s", SPEC, "-B", str(bs), "-u", "NFD"], s.tp_epochs,
                              glob_extra=["--precision", "32-true"])
                rec.update(section="train", tool=tool, batch=bs, repeat=r, train_lines=n, data=prov,
                           epoch_flops=fl)
                rec["lines_per_s"] = epoch_rate(rec, n)
                if rec["lines_per_s"] and fl:
                    rec["gflops_per_s"] = fl / (n / rec["lines_per_s"]) / 1e9
                rec["summary"] = {"B": bs, "lines/s": rnd(rec["lines_per_s"]), "GFLOP/s": rnd(rec.get("gflops_per_s")),
                                  "peakGiB": rnd(rec["peak_pss_gib"], 2)}
                b.record(rec)
            # scriba in bf16 autocast (kraken's fp32 is the reference; issue 7 asks >= 3x kraken -B 1 in bf16)
            if "scriba" in data and s.bf16 and bs in s.bf16_batches:
                (trd, fmt, prov), (vad, _, _) = data["scriba"]
                rec = b.train("scriba", f"train_B{bs}_scriba_bf16_r{r}", trd, vad, fmt,
                              ["-s", SPEC, "-B", str(bs), "-u", "NFD"], s.tp_epochs,
                              glob_extra=["--precision", "bf16-mixed"])
                rec.update(section="train_bf16", tool="scriba", batch=bs, repeat=r, train_lines=n, data=prov,
                           epoch_flops=fl)
                rec["lines_per_s"] = epoch_rate(rec, n)
                vals = [e.get("val_accuracy") for e in rec["epochs_seen"] if e.get("val_accuracy") is not None]
                rec["last_val_cer"] = 1 - vals[-1] if vals else None
                if rec["lines_per_s"] and fl:
                    rec["gflops_per_s"] = fl / (n / rec["lines_per_s"]) / 1e9
                rec["summary"] = {"B": bs, "lines/s": rnd(rec["lines_per_s"]), "GFLOP/s": rnd(rec.get("gflops_per_s"))}
                b.record(rec)


def section_eval(b: Bench) -> None:
    s = b.s
    te = b.manifest("froc_published_test", "froc_mss", "published_split/test.lst", s.eval_lines)
    n = b.count_lines(te)
    one = b.manifest("froc_published_test_1", "froc_mss", "published_split/test.lst", 1)
    model = DATA / "froc_mss" / "model_froc.mlmodel"
    for r in range(s.repeats):
        for tool in b.order(r):  # start-up cost: the same command on one line
            if b.have(tool):
                rec = b.test(tool, f"eval_startup_{tool}_r{r}", model, one, "path", ["-u", "NFD"])
                rec.update(section="eval_startup", tool=tool, repeat=r, summary={"startup_s": rnd(rec["wall_s"])})
                b.record(rec)
        for bs in sorted({x for v in s.eval_batches.values() for x in v}):
            for tool in b.order(r):
                if not b.have(tool) or bs not in s.eval_batches[tool]:
                    continue
                rec = b.test(tool, f"eval_B{bs}_{tool}_r{r}", model, te, "path", ["-u", "NFD", "-B", str(bs)])
                rec.update(section="eval", tool=tool, batch=bs, repeat=r, lines=n)
                rec["lines_per_s"] = n / rec["wall_s"] if rec["ok"] else None
                st = b.by("eval_startup", tool=tool, repeat=r)
                if rec["ok"] and st and st[0].get("ok") and rec["wall_s"] > st[0]["wall_s"] and n > 1:
                    rec["lines_per_s_excl_startup"] = (n - 1) / (rec["wall_s"] - st[0]["wall_s"])
                rec["summary"] = {"B": bs, "lines/s": rnd(rec["lines_per_s"]),
                                  "excl.startup": rnd(rec.get("lines_per_s_excl_startup")), "errors": rec.get("errors"),
                                  "chars": rec.get("chars")}
                b.record(rec)

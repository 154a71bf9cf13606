"""Interoperability sections: a scriba model tested by kraken on ALTO pages (issue 3's cross-system CER), and
kraken training on scriba-compiled .arrow files."""

from __future__ import annotations

from pathlib import Path

from bench.figures import rnd
from bench.session import Bench
from bench.settings import SPEC, TOOLS


def section_crosscer(b: Bench) -> None:
    """Issue 3: scriba trains from ALTO pages; kraken tests it extracting lines itself; compare CERs."""
    s = b.s
    if not b.have("scriba"):
        b.record({"name": "crosscer", "section": "crosscer", "ok": False, "status": "scriba ketos not found"})
        return
    tr = b.manifest("cremma_train_x", "cremma_medieval", "splits/train.lst", s.cross_train_pages)
    va = b.manifest("cremma_val_x", "cremma_medieval", "splits/val.lst", s.cross_val_pages)
    te = b.manifest("cremma_test_x", "cremma_medieval", "splits/test.lst", s.cross_test_pages)
    opts = ["--load", s.cross_load, "--resize", "union"] if s.cross_load else ["-s", s.cross_spec]
    if s.cross_lr:
        opts += ["-r", s.cross_lr]
    trd, vad, fmt = tr, va, "alto"
    if s.cross_compile:
        trc = b.dataset_arrow("scriba", "cremma_train_x", "alto", tr)
        vac = b.dataset_arrow("scriba", "cremma_val_x", "alto", va)
        if trc and vac:
            trd, vad, fmt = trc, vac, "binary"
    rec = b.train("scriba", "cross_scriba_alto", trd, vad, fmt, [*opts, "-B", "16", "-u", "NFD"],
                  s.cross_epochs)
    if not rec.get("weights"):  # stopped by the time box: test the last epoch checkpoint
        ck = sorted(Path(rec["outdir"]).glob("checkpoint_*-*.ckpt"))
        rec["weights"] = str(ck[-1]) if ck else None
    rec.update(section="crosscer", tool="scriba", summary={"weights": rec.get("weights")},
               train_pages=b.count_lines(tr), test_pages=b.count_lines(te), epochs=s.cross_epochs,
               load=s.cross_load, spec=s.cross_spec, data=fmt,
               val_cer_per_epoch=[None if e.get("val_accuracy") is None else 1 - e["val_accuracy"]
                                  for e in rec["epochs_seen"]])
    b.record(rec)
    if not rec.get("weights"):
        return
    res = {}
    for tester in TOOLS:
        if not b.have(tester):
            continue
        t = b.test(tester, f"cross_test_by_{tester}", rec["weights"], te, "alto", ["-u", "NFD"])
        t.update(section="crosscer_test", tester=tester, summary={"cer": rnd(t.get("cer"), 4)})
        b.record(t)
        res[tester] = t.get("cer")


def section_interop(b: Bench) -> None:
    """kraken trains one epoch on a scriba-compiled .arrow (froc path and cremma ALTO)."""
    if not (b.have("scriba") and b.have("kraken")):
        return
    s = b.s
    jobs = [("froc_path", "path", b.manifest("froc_interop", "froc_mss", "splits/val.lst", s.interop_froc_lines))]
    if s.interop_cremma_pages:
        jobs.append(("cremma_alto", "alto", b.manifest("cremma_interop", "cremma_medieval", "splits/val.lst",
                                                        s.interop_cremma_pages)))
    for name, fmt, man in jobs:
        arrow, crec = b.compile_arrow("scriba", f"interop_{name}", fmt, man)
        crec.update(section="interop_compile", summary={"lines": crec.get("lines")})
        b.record(crec)
        if not arrow:
            continue
        rec = b.train("kraken", f"interop_kraken_trains_on_scriba_{name}", arrow, arrow, "binary",
                      ["-s", SPEC, "-B", "16"], 1)
        rec.update(section="interop", job=name, summary={"weights": bool(rec.get("weights"))})
        b.record(rec)


# accuracy and scratch before defaults: kraken's 10-epoch run at its defaults can then serve as its
# time-to-accuracy run too (see _accuracy_run_at_defaults)

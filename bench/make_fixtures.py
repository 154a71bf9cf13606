#!/usr/bin/env python3
"""Generate kraken 7.1.1 reference facts as JSON fixtures for scriba's tests.

These fixtures are *facts observed by running kraken* (in its own venv, bench/.venv-kraken, built by
bench/setup_kraken.sh). They are committed under tests/fixtures/ so that CI, which has no kraken, can compare
scriba's behaviour against kraken's. Nothing of kraken's code is committed.

Usage (from the repository root; the script re-executes itself in the kraken venv if needed):

    python bench/make_fixtures.py all              # everything below, sequentially
    python bench/make_fixtures.py predictions      # tests/fixtures/kraken_predictions.json
    python bench/make_fixtures.py texts            # tests/fixtures/kraken_texts.json
    python bench/make_fixtures.py counts           # tests/fixtures/kraken_compile_counts.json
    python bench/make_fixtures.py sizes            # only the cremma first-20 line sizes in kraken_compile_counts.json
    python bench/make_fixtures.py report           # tests/fixtures/kraken_test_report.txt (+ .json timing)

How each fixture is made:

* kraken_predictions.json -- kraken's Python recognition API (``kraken.tasks.RecognitionTaskModel.predict``
  with ``RecognitionInferenceConfig()`` defaults: pad 16, greedy CTC decoding, bidi reordering on,
  temperature 1), exactly what ``kraken -i IN OUT ocr -m MODEL`` does: XML pages are parsed with
  ``kraken.lib.xml.XMLPage(..., linetype=<model seg_type>)`` and their base direction (if any) passed on;
  plain line images are treated as one bbox line covering the whole image (``ocr -s``). Lines that kraken
  cannot extract appear with ``"prediction": null`` and the error text.
* kraken_texts.json -- ``ketos compile`` (default options, ``--workers 1``) of each input, read back with
  pyarrow: ``raw`` is the text stored in the .arrow (kraken stores untransformed text); line ids come from
  ``XMLPage`` (lines kraken skipped at compile time are listed with ``"compiled": false``). ``transformed``
  variants apply kraken's own text transform functions in kraken's order
  (``kraken.lib.functional_im_transforms``: ``text_normalize`` (-u) -> ``text_whitespace_normalize`` ->
  ``text_reorder`` (bidi, base_dir auto / L / R)), i.e. what ``ketos train/test`` feed the codec.
* kraken_compile_counts.json -- number of rows in the .arrow written by ``ketos --workers 2 compile`` for the
  dataset splits (run in the dataset's folder, since manifests are relative to it), plus wall time and the
  pixel sizes (width, height) of the first 20 line images of the cremma_medieval test split. The .arrow files
  stay in bench/work/kraken_arrow/ (gitignored) for interop tests.
* kraken_test_report.txt -- stdout of ``ketos --workers 1 --threads 2 test -f path -u NFD -m
  model_froc.mlmodel -e published_split/test.lst`` run in ../shared/data/froc_mss, timed (lines/s in
  kraken_test_report.json).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
FIXTURES = ROOT / "tests" / "fixtures"
WORK = BENCH / "work"
ARROW_DIR = WORK / "kraken_arrow"
DATA = Path(os.environ.get("SCRIBA_DATA", ROOT.parent / "shared" / "data")).resolve()
KDATA = DATA / "kraken"
KVENV = BENCH / ".venv-kraken"
KPY = KVENV / "bin" / "python"
KETOS = KVENV / "bin" / "ketos"
THREADS = 2


def _ensure_kraken_venv() -> None:
    """Re-exec this script inside the kraken venv (building it first if needed)."""
    if Path(sys.prefix).resolve() == KVENV.resolve():
        return
    subprocess.run(["bash", str(BENCH / "setup_kraken.sh")], check=True, stdout=subprocess.DEVNULL)
    os.execv(str(KPY), [str(KPY), __file__, *sys.argv[1:]])


def _env() -> dict:
    env = dict(os.environ)
    env.update(OMP_NUM_THREADS=str(THREADS), MKL_NUM_THREADS=str(THREADS), PYTHONWARNINGS="ignore",
               CUDA_VISIBLE_DEVICES="")
    return env


def _kraken_version() -> str:
    import importlib.metadata as md
    return md.version("kraken")


def _meta(**extra) -> dict:
    import importlib.metadata as md
    return {"generator": "bench/make_fixtures.py", "kraken": _kraken_version(), "torch": md.version("torch"),
            **extra}


def _write_json(name: str, obj) -> None:
    FIXTURES.mkdir(parents=True, exist_ok=True)
    p = FIXTURES / name
    p.write_text(json.dumps(obj, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {p.relative_to(ROOT)}", file=sys.stderr)


def _rel(p: Path) -> str:
    """Path relative to the shared data folder (as tests should name it)."""
    try:
        return str(Path(p).resolve().relative_to(DATA))
    except ValueError:
        return str(p)


# --------------------------------------------------------------------------------------------------------
# a. predictions
# --------------------------------------------------------------------------------------------------------

def _predict(model_path: Path, inputs: list[Path], batch_note: str = "") -> list[dict]:
    import uuid

    import torch
    from kraken.configs import RecognitionInferenceConfig
    from kraken.containers import BBoxLine, Segmentation
    from kraken.lib.util import open_image
    from kraken.lib.xml import XMLPage
    from kraken.tasks import RecognitionTaskModel

    torch.set_num_threads(THREADS)
    model = RecognitionTaskModel.load_model(str(model_path))
    linetype = model.seg_type or "baselines"
    out = []
    for inp in inputs:
        config = RecognitionInferenceConfig(num_line_workers=0)
        if inp.suffix == ".xml":
            doc = XMLPage(inp, linetype=linetype)
            if doc.base_dir and config.bidi_reordering is True:
                config.bidi_reordering = doc.base_dir
            seg = doc.to_container()
            im = open_image(doc.imagename)
            mode = f"xml ({linetype})"
        else:
            im = open_image(inp)
            seg = Segmentation(type="bbox", text_direction="horizontal-tb", imagename=str(inp),
                               script_detection=False,
                               lines=[BBoxLine(id=f"_{uuid.uuid4()}", bbox=(0, 0, im.width, im.height))])
            mode = "line image (ocr -s)"
        line_ids = [line.id for line in seg.lines]
        gts = [line.text for line in seg.lines]
        if inp.suffix != ".xml":
            gt_file = inp.parent / (inp.name.split(".")[0] + ".gt.txt")
            gts = [gt_file.read_text(encoding="utf-8").strip("\r\n") if gt_file.exists() else None]
            line_ids = [None]
        # predict one line at a time so that one failing line does not hide the others
        for i, line in enumerate(seg.lines):
            rec = {"model": _rel(model_path), "input": _rel(inp), "mode": mode,
                   "line_id": line_ids[i], "ground_truth": gts[i]}
            try:
                sub = Segmentation(**{**seg.__dict__, "lines": [line]})
                preds = list(model.predict(im=im, segmentation=sub, config=config))
                rec["prediction"] = preds[0].prediction if preds else None
                if not preds:
                    rec["error"] = "no record returned"
            except Exception as e:  # record kraken's failure as a fact
                rec["prediction"] = None
                rec["error"] = f"{type(e).__name__}: {e}"
            out.append(rec)
    return out


def make_predictions() -> None:
    K = KDATA
    jobs = [
        (K / "overfit_bl.safetensors", [K / "170025120000003,0074-lite.xml", K / "170025120000003,0074.xml"]),
        (K / "overfit_bl_newpoly.safetensors", [K / "170025120000003,0074-lite.xml",
                                                K / "170025120000003,0074.xml"]),
        (K / "overfit.mlmodel", [K / "000236.png"]),
        (K / "overfit_newpoly.mlmodel", [K / "000236.png"]),
        (K / "merge_tests" / "merge_codec_nfd.mlmodel",
         [K / "merge_tests" / f for f in ("0006.jpg", "0007.jpg", "0008.jpg", "0021.jpg", "0014.xml")]),
    ]
    froc = DATA / "froc_mss"
    froc_lines = [froc / ln.strip() for ln in (froc / "published_split" / "test.lst").read_text().splitlines()
                  if ln.strip()][:20]
    jobs.append((froc / "model_froc.mlmodel", froc_lines))
    records = []
    for model, inputs in jobs:
        t0 = time.perf_counter()
        recs = _predict(model, inputs)
        print(f"{model.name}: {len(recs)} lines in {time.perf_counter() - t0:.1f}s", file=sys.stderr)
        records.extend(recs)
    _write_json("kraken_predictions.json", {
        "_meta": _meta(how="kraken.tasks.RecognitionTaskModel.predict with RecognitionInferenceConfig() "
                           "defaults (pad 16, greedy decoder, bidi_reordering True), one line per call, "
                           "as `kraken -i IN OUT ocr -m MODEL` (XML) / `ocr -s` (line images)",
                       paths="relative to ../shared/data"),
        "predictions": records})


# --------------------------------------------------------------------------------------------------------
# b. texts
# --------------------------------------------------------------------------------------------------------

def _ketos(args: list[str], cwd: Path, workers: int = 1, timeout: int = 3600) -> tuple[subprocess.CompletedProcess, float]:
    cmd = [str(KETOS), "--device", "cpu", "--workers", str(workers), "--threads", str(THREADS), *args]
    t0 = time.perf_counter()
    cp = subprocess.run(cmd, cwd=cwd, env=_env(), capture_output=True, text=True, timeout=timeout)
    dt = time.perf_counter() - t0
    if cp.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} (cwd {cwd}) failed rc={cp.returncode}:\n{cp.stderr[-3000:]}")
    return cp, dt


def _read_arrow(path: Path):
    import pyarrow as pa
    with pa.memory_map(str(path)) as src:
        table = pa.ipc.open_file(src).read_all()
    meta = json.loads(table.schema.metadata[b"lines"])
    lines = table.column("lines").to_pylist()
    return meta, lines


def _transform_variants(raw: str, *, bidi_dirs=("auto",), norms=(None, "NFD")) -> dict:
    from kraken.lib import functional_im_transforms as F_t
    out = {}
    for norm in norms:
        for bd in bidi_dirs:
            t = raw
            if norm:
                t = F_t.text_normalize(t, norm)
            t = F_t.text_whitespace_normalize(t)
            t = F_t.text_reorder(t, base_dir=None if bd == "auto" else bd)
            out[f"u={norm or 'none'},base_dir={bd}"] = t
        # also: -u only, no whitespace/reorder (for -n/--no-reorder checks)
        if norm:
            out[f"u={norm},raw"] = F_t.text_normalize(raw, norm)
    return out


def _compile_texts(name: str, inputs: list[str], fmt: str, cwd: Path, bidi_dirs=("auto",)) -> dict:
    from kraken.lib.xml import XMLPage
    ARROW_DIR.mkdir(parents=True, exist_ok=True)
    out_arrow = ARROW_DIR / f"texts_{name}.arrow"
    _ketos(["compile", "-f", fmt, "-o", str(out_arrow), *inputs], cwd=cwd, workers=1)
    meta, rows = _read_arrow(out_arrow)
    compiled = [r["text"] for r in rows]
    entry = {"format": fmt, "inputs": [_rel(cwd / i) for i in inputs], "arrow_type": meta["type"],
             "arrow_counts": meta["counts"], "n_compiled": len(compiled), "lines": []}
    if fmt in ("xml", "alto", "page"):
        # align XMLPage line order (document order) with the compiled rows (kraken keeps order with 1 worker)
        j = 0
        for inp in inputs:
            doc = XMLPage(cwd / inp)
            for line in doc.to_container().lines:
                was = j < len(compiled) and compiled[j] == line.text
                rec = {"input": _rel(cwd / inp), "line_id": line.id, "raw": line.text, "compiled": was,
                       "language": line.language, "base_dir": line.base_dir}
                if was:
                    rec["image_size"] = list(_png_size(rows[j]["im"]))
                    j += 1
                rec["transformed"] = _transform_variants(line.text or "", bidi_dirs=bidi_dirs)
                entry["lines"].append(rec)
        if j != len(compiled):
            entry["alignment_warning"] = f"only {j} of {len(compiled)} compiled rows matched XMLPage lines"
    else:
        for inp, row in zip(inputs, rows):
            entry["lines"].append({"input": _rel(cwd / inp), "line_id": None, "raw": row["text"], "compiled": True,
                                   "image_size": list(_png_size(row["im"])),
                                   "transformed": _transform_variants(row["text"], bidi_dirs=bidi_dirs)})
        if len(rows) != len(inputs):
            entry["alignment_warning"] = f"{len(inputs)} inputs but {len(rows)} compiled rows"
    return entry


def _png_size(b: bytes) -> tuple[int, int]:
    import io

    from PIL import Image
    with Image.open(io.BytesIO(b)) as im:
        return im.size


def make_texts() -> None:
    K = KDATA
    cm = DATA / "cremma_medieval"
    cremma_page = (cm / "splits" / "test.lst").read_text().split()[0]
    ar = DATA / "openiti_arabic"
    ar_lines = [ln for ln in (ar / "splits" / "test.lst").read_text().split()][:20]
    sets = {
        "kraken_0074_lite": _compile_texts("0074_lite", ["170025120000003,0074-lite.xml"], "xml", K),
        "kraken_0074": _compile_texts("0074", ["170025120000003,0074.xml"], "xml", K),
        "kraken_merge_0014": _compile_texts("merge_0014", ["0014.xml"], "xml", K / "merge_tests"),
        "cremma_test_page1": _compile_texts("cremma_page1", [cremma_page], "alto", cm),
        "openiti_arabic_test20": _compile_texts("openiti20", ar_lines, "path", ar,
                                                bidi_dirs=("auto", "L", "R")),
    }
    _write_json("kraken_texts.json", {
        "_meta": _meta(how="raw = text stored by `ketos --workers 1 compile` (default options) read back with "
                           "pyarrow; transformed = kraken.lib.functional_im_transforms applied in kraken's order: "
                           "text_normalize(-u) -> text_whitespace_normalize -> text_reorder(base_dir); "
                           "keys 'u=<norm>,base_dir=<auto|L|R>'; 'u=NFD,raw' = normalisation only. "
                           "image_size = (width, height) of kraken's extracted line PNG.",
                       paths="relative to ../shared/data"),
        "sets": sets})


# --------------------------------------------------------------------------------------------------------
# c. compile counts
# --------------------------------------------------------------------------------------------------------

def make_counts() -> None:
    ARROW_DIR.mkdir(parents=True, exist_ok=True)
    results = []
    plan = []
    for split in ("train", "val", "test"):
        plan.append(("cremma_medieval", split, "alto"))
        plan.append(("cremma_medieval", split, "xml"))
    for ds in ("froc_mss", "openiti_arabic"):
        for split in ("train", "val", "test"):
            plan.append((ds, split, "path"))
    for ds, split, fmt in plan:
        cwd = DATA / ds
        out = ARROW_DIR / f"{ds}_{split}_{fmt}.arrow"
        rec = {"dataset": ds, "manifest": f"splits/{split}.lst", "format": fmt, "workers": 2,
               "arrow": str(out.relative_to(ROOT))}
        try:
            cp, dt = _ketos(["compile", "-f", fmt, "-o", str(out), "-F", f"splits/{split}.lst"], cwd=cwd, workers=2)
            meta, rows = _read_arrow(out)
            n_in = len([x for x in (cwd / "splits" / f"{split}.lst").read_text().split() if x])
            rec.update(lines=len(rows), manifest_entries=n_in, seconds=round(dt, 2),
                       lines_per_s=round(len(rows) / dt, 2), arrow_type=meta["type"], im_mode=meta.get("im_mode"),
                       legacy_polygons=meta.get("legacy_polygons"), alphabet_size=len(meta["alphabet"]),
                       summary=_last_lines(cp.stdout + cp.stderr))
        except Exception as e:
            rec["error"] = str(e)[-2000:]
        print(json.dumps({k: v for k, v in rec.items() if k != "summary"}), file=sys.stderr)
        results.append(rec)
    _write_json("kraken_compile_counts.json", {
        "_meta": _meta(how="`ketos --device cpu --workers 2 --threads 2 compile -f FMT -o OUT -F splits/SPLIT.lst` "
                           "run in the dataset folder; lines = rows in the written .arrow. seconds = wall time of "
                           "the whole command (incl. ~startup) on a shared 2-core machine."),
        "compiles": results})
    make_sizes()


def make_sizes() -> None:
    """Line-image sizes of the first 20 lines of the cremma_medieval test split, from a 1-worker compile
    (with several workers kraken writes pages in completion order, so row order is not deterministic)."""
    cm = DATA / "cremma_medieval"
    out = ARROW_DIR / "cremma_medieval_test_alto_w1.arrow"
    _ketos(["compile", "-f", "alto", "-o", str(out), "-F", "splits/test.lst"], cwd=cm, workers=1)
    _, rows = _read_arrow(out)
    p = FIXTURES / "kraken_compile_counts.json"
    d = json.loads(p.read_text(encoding="utf-8"))
    d["cremma_test_alto_first20"] = {
        "how": "`ketos --workers 1 compile -f alto -F splits/test.lst` (cwd cremma_medieval); rows 0-19 in file "
               "order = manifest order, document order; [text, width, height] of kraken's line PNG",
        "lines": [[r["text"], *_png_size(r["im"])] for r in rows[:20]],
        "total_lines": len(rows)}
    d.pop("cremma_test_alto_first20_image_sizes", None)
    d.pop("cremma_test_alto_first20_texts", None)
    _write_json("kraken_compile_counts.json", d)


def _last_lines(s: str, n: int = 6) -> list[str]:
    lines = [ln.rstrip() for ln in s.splitlines() if ln.strip() and "Warning" not in ln]
    return lines[-n:]


# --------------------------------------------------------------------------------------------------------
# d. ketos test report
# --------------------------------------------------------------------------------------------------------

def make_report() -> None:
    froc = DATA / "froc_mss"
    n = len([x for x in (froc / "published_split" / "test.lst").read_text().split() if x])
    args = ["test", "-f", "path", "-u", "NFD", "-m", "model_froc.mlmodel", "-e", "published_split/test.lst"]
    cp, dt = _ketos(args, cwd=froc, workers=1)
    FIXTURES.mkdir(parents=True, exist_ok=True)
    WORK.mkdir(parents=True, exist_ok=True)
    (WORK / "kraken_test_stdout_full.txt").write_text(cp.stdout + "\n--- stderr ---\n" + cp.stderr, encoding="utf-8")
    # keep the report itself (progress bar and time-stamped log lines dropped: they change on every run)
    i = cp.stdout.find("=== report")
    (FIXTURES / "kraken_test_report.txt").write_text(cp.stdout[i:] if i >= 0 else cp.stdout, encoding="utf-8")
    _write_json("kraken_test_report.json", {
        "_meta": _meta(how="ketos --device cpu --workers 1 --threads 2 " + " ".join(args) +
                           " (cwd ../shared/data/froc_mss); stdout saved in kraken_test_report.txt"),
        "lines": n, "seconds": round(dt, 2), "lines_per_s": round(n / dt, 2),
        "note": "wall time of the whole command incl. interpreter/model start-up, on a shared 2-core machine"})
    print(cp.stdout[-1500:], file=sys.stderr)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("what", nargs="*", default=["all"],
                    choices=["all", "predictions", "texts", "counts", "sizes", "report"])
    a = ap.parse_args()
    _ensure_kraken_venv()
    what = a.what
    if "all" in what:
        what = ["predictions", "texts", "report", "counts"]
    for w in what:
        {"predictions": make_predictions, "texts": make_texts, "counts": make_counts, "sizes": make_sizes,
         "report": make_report}[w]()


if __name__ == "__main__":
    main()

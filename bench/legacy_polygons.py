#!/usr/bin/env python3
"""How close scriba's ``--legacy-polygons`` line images are to kraken 7.1.1's legacy extractor.

kraken cuts every line of the CREMMA validation pages twice (``extract_polygons(..., legacy=True)`` and
``legacy=False``, one line per call as its training dataset does) in its own venv, as a subprocess; scriba
cuts the same lines with ``extract_line(..., legacy_polygons=True)``. For the lines where kraken's two images
differ, it counts the share where scriba's image is closer to kraken's legacy one than to kraken's new one.

Distance: mean absolute difference of the pixel values (all channels) after padding both images with 0 (the
extractors' background) at the right and bottom to the larger width and height; a line counts as "closer"
when the distance to kraken's legacy image is strictly smaller than to the new one.

    python bench/legacy_polygons.py                              # CREMMA val split, prints the figures
    python bench/legacy_polygons.py --fixture tests/fixtures/kraken_legacy_lines.json

``--fixture`` also writes kraken's legacy image size and mean pixel value for the first 5 lines with a
multi-point baseline and the first 2 straight ones on an RGB and on a bitonal page (for
tests/data/test_legacy_extract.py). ``--reuse --work DIR`` compares again without re-running kraken.
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
DATA = Path(os.environ.get("SCRIBA_DATA", ROOT.parent / "shared" / "data")).resolve()
CREMMA = DATA / "cremma_medieval"


def kraken_worker(pages: list[str], out_dir: str) -> None:
    """Runs in kraken's venv: both kraken images of every line, as PNG, and an index of them."""
    import numpy as np
    from kraken.containers import BaselineLine, Segmentation
    from kraken.lib.segmentation import extract_polygons
    from kraken.lib.util import open_image
    from kraken.lib.xml import XMLPage

    index = []
    for p, page in enumerate(pages):
        seg = XMLPage(page).to_container()
        im = open_image(seg.imagename)
        for k, line in enumerate(seg.lines):
            entry = {"page": page, "n": k, "id": line.id, "baseline": line.baseline, "boundary": line.boundary}
            one = Segmentation(type="baselines", imagename=seg.imagename, text_direction="horizontal-lr",
                               lines=[BaselineLine("id_0", baseline=line.baseline, boundary=line.boundary)],
                               script_detection=True, regions={}, line_orders=[])
            for legacy in (True, False):
                key = "legacy" if legacy else "new"
                try:
                    line_im, _ = next(extract_polygons(im, one, legacy=legacy))
                except Exception as e:  # noqa: BLE001 - recorded and compared as a failure
                    entry[key] = None
                    entry[key + "_error"] = f"{type(e).__name__}: {e}"
                    continue
                name = f"{p}_{k}_{key}.png"
                line_im.save(os.path.join(out_dir, name))
                entry[key] = name
                entry[key + "_mean"] = float(np.asarray(line_im, dtype=np.float64).mean())
            index.append(entry)
    with open(os.path.join(out_dir, "index.json"), "w") as f:
        json.dump(index, f)


def distance(a, b) -> float:
    import numpy as np

    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.ndim == 2:
        a = a[..., None]
    if b.ndim == 2:
        b = b[..., None]
    h, w, c = max(a.shape[0], b.shape[0]), max(a.shape[1], b.shape[1]), max(a.shape[2], b.shape[2])
    pa = np.zeros((h, w, c))
    pb = np.zeros((h, w, c))
    pa[: a.shape[0], : a.shape[1], :] = a
    pb[: b.shape[0], : b.shape[1], :] = b
    return float(np.abs(pa - pb).mean())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--pages", default=str(CREMMA / "splits" / "val.lst"), help="manifest of ALTO pages")
    ap.add_argument("--kraken-python", default=os.environ.get("KRAKEN_PYTHON", str(BENCH / ".venv-kraken/bin/python")))
    ap.add_argument("--work", default=None, help="folder for kraken's images (default: a temporary one)")
    ap.add_argument("--reuse", action="store_true", help="reuse kraken's images already in --work")
    ap.add_argument("--fixture", default=None, help="also write the test fixture to this JSON file")
    ap.add_argument("--worker", nargs=2, metavar=("PAGES_JSON", "OUT_DIR"), help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.worker:
        kraken_worker(json.loads(Path(a.worker[0]).read_text()), a.worker[1])
        return 0

    import numpy as np
    from PIL import Image

    sys.path.insert(0, str(ROOT / "src"))
    from scriba.data.extract import LineError, extract_line, open_page
    from scriba.data.xml import parse_page

    manifest = Path(a.pages)
    pages = [str((manifest.parent.parent / p.strip()).resolve()) for p in manifest.read_text().split() if p.strip()]
    work = Path(a.work or tempfile.mkdtemp(prefix="legacy_polygons_"))
    work.mkdir(parents=True, exist_ok=True)
    (work / "pages.json").write_text(json.dumps(pages))
    t0 = time.time()
    if not (a.reuse and (work / "index.json").exists()):
        subprocess.run([a.kraken_python, __file__, "--worker", str(work / "pages.json"), str(work)], check=True)
    t_kraken = time.time() - t0
    index = json.loads((work / "index.json").read_text())

    records = {}
    records_image = {}
    for page in pages:
        image, lines = parse_page(page)
        records_image[page] = image
        for rec in lines:
            records[(page, rec.id)] = rec
    pages_cache: dict[str, Image.Image] = {}
    rows = []
    t_scriba = 0.0
    for e in index:
        rec = records.get((e["page"], e["id"]))
        row = {"page": Path(e["page"]).name, "id": e["id"], "points": len(e["baseline"])}
        if rec is None or e["legacy"] is None or e["new"] is None:
            row["status"] = "kraken failed" if rec is not None else "not read by scriba"
            rows.append(row)
            continue
        legacy = Image.open(work / e["legacy"])
        new = Image.open(work / e["new"])
        page_im = pages_cache.setdefault(rec.image, open_page(rec.image))
        t1 = time.time()
        try:
            ours = extract_line(page_im, rec, legacy_polygons=True)
        except LineError as err:
            row["status"] = f"scriba failed: {err.reason}"
            rows.append(row)
            continue
        t_scriba += time.time() - t1
        row["kraken_differ"] = legacy.size != new.size or not np.array_equal(np.asarray(legacy), np.asarray(new))
        row["identical"] = ours.size == legacy.size and np.array_equal(np.asarray(ours), np.asarray(legacy))
        row["same_size"] = ours.size == legacy.size
        row["d_legacy"] = distance(ours, legacy)
        row["d_new"] = distance(ours, new)
        row["closer"] = row["d_legacy"] < row["d_new"]
        row["status"] = "ok"
        rows.append(row)

    ok = [r for r in rows if r["status"] == "ok"]
    differ = [r for r in ok if r["kraken_differ"]]
    closer = sum(r["closer"] for r in differ)
    print(f"pages: {len(pages)} ({manifest}), lines: {len(rows)}, compared: {len(ok)}")
    for r in rows:
        if r["status"] != "ok":
            print(f"  not compared: {r['page']} {r['id']}: {r['status']}")
    print(f"kraken's legacy and new images differ on {len(differ)} lines")
    print(f"scriba --legacy-polygons closer to kraken's legacy image: {closer} of {len(differ)} "
          f"({100 * closer / max(1, len(differ)):.1f} %)")
    for kind, sel in (("straight (2-point)", lambda r: r["points"] == 2), ("curved (>2 points)", lambda r: r["points"] > 2)):
        part = [r for r in differ if sel(r)]
        same = [r for r in ok if sel(r)]
        print(f"  {kind}: {sum(r['closer'] for r in part)} of {len(part)}; "
              f"bit-identical {sum(r['identical'] for r in same)} of {len(same)}")
    for page in dict.fromkeys(r["page"] for r in ok):
        part = [r for r in differ if r["page"] == page]
        print(f"  {page}: {sum(r['closer'] for r in part)} of {len(part)} differing lines closer, "
              f"{sum(r['identical'] for r in ok if r['page'] == page)} of "
              f"{sum(1 for r in ok if r['page'] == page)} lines bit-identical")
    print(f"bit-identical to kraken's legacy image: {sum(r['identical'] for r in ok)} of {len(ok)} lines; "
          f"same size: {sum(r['same_size'] for r in ok)}")
    d = np.array([r["d_legacy"] for r in ok])
    print(f"mean abs difference to kraken's legacy image: median {np.median(d):.3f}, max {d.max():.3f} "
          f"(to kraken's new image: median {np.median([r['d_new'] for r in ok]):.3f})")
    worst = sorted(ok, key=lambda r: -r["d_legacy"])[:5]
    print("largest differences: " + ", ".join(f"{r['page']} {r['id']} ({r['points']} pts) {r['d_legacy']:.2f}"
                                              for r in worst))
    print(f"time: kraken (both extractors) {t_kraken:.1f} s, scriba legacy {t_scriba:.1f} s")

    if a.fixture:
        modes = {page: Image.open(records_image[page]).mode for page in pages}
        usable = [e for e in index if e["legacy"]]
        chosen = (
            [e for e in usable if len(e["baseline"]) > 2][:5]
            + [e for e in usable if len(e["baseline"]) == 2 and modes[e["page"]] == "RGB"][:2]
            + [e for e in usable if len(e["baseline"]) == 2 and modes[e["page"]] == "1"][:2]
        )
        fixture = {
            "about": "kraken 7.1.1 extract_polygons(legacy=True) on CREMMA val lines (bench/legacy_polygons.py): "
                     "size (width, height) and mean pixel value of each line image; page mode of its image",
            "lines": [
                {"page": str(Path(e["page"]).relative_to(CREMMA)), "id": e["id"], "page_mode": modes[e["page"]],
                 "baseline_points": len(e["baseline"]), "size": list(Image.open(work / e["legacy"]).size),
                 "mean": round(e["legacy_mean"], 4)}
                for e in chosen
            ],
        }
        lines = ",\n".join("  " + json.dumps(line) for line in fixture["lines"])
        Path(a.fixture).write_text(f'{{"about": {json.dumps(fixture["about"])},\n "lines": [\n{lines}\n ]\n}}\n')
        print(f"wrote {a.fixture}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

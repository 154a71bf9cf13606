"""One benchmark run: the tools, its settings and records, the time box, and the ketos commands it measures."""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import struct
import subprocess
import time
from pathlib import Path

from bench.figures import select
from bench.harness import CKPT_RE, Measured, run_measured
from bench.machine import recorded_flags
from bench.records import Record
from bench.settings import BENCH, DATA, KVENV, ROOT, TOOLS, WORK, settings


class Bench:
    def __init__(self, a: argparse.Namespace) -> None:
        self.a = a
        self.s = settings(a)
        self.results: list[Record] = []
        self.ketos = {"kraken": KVENV / "bin" / "ketos",
                      "scriba": Path(os.environ.get("SCRIBA_KETOS", ROOT / ".venv" / "bin" / "ketos"))}
        self.py = {"kraken": KVENV / "bin" / "python",
                   "scriba": Path(os.environ.get("SCRIBA_PYTHON", ROOT / ".venv" / "bin" / "python"))}
        self.tag = self.s.profile
        self.wdir = WORK / self.tag
        self.wdir.mkdir(parents=True, exist_ok=True)
        self.logs = self.wdir / "logs"
        self.mdir = self.wdir / "manifests"
        self.mdir.mkdir(exist_ok=True)
        self.t_start = time.time()
        self.deadline = self.t_start + self.s.budget if self.s.budget else None
        self.section_deadline: float | None = None
        self.not_run: list[str] = []   # measurements left out by the time box

    # ---- environment
    def env(self) -> dict:
        e = dict(os.environ)
        t = str(self.s.threads)
        e.update(OMP_NUM_THREADS=t, MKL_NUM_THREADS=t, OPENBLAS_NUM_THREADS=t, CUDA_VISIBLE_DEVICES="",
                 PYTHONWARNINGS="ignore", TERM="dumb", COLUMNS="120", PYTHONUNBUFFERED="1")
        return e

    def glob_opts(self, workers: int | None = None) -> list[str]:
        return ["--device", "cpu", "--workers", str(self.s.workers if workers is None else workers),
                "--threads", str(self.s.threads)]

    def order(self, r: int) -> tuple[str, ...]:
        return TOOLS if r % 2 == 0 else TOOLS[::-1]

    def machine_flags(self) -> str:
        return recorded_flags(self.results)

    def have(self, tool: str) -> bool:
        return self.ketos[tool].exists()

    def by(self, section: str, **kw) -> list[dict]:
        return select(self.results, section, **kw)

    def record(self, rec: dict) -> dict:
        self.results.append(rec)
        (self.wdir / "results.json").write_text(json.dumps(self.results, indent=1, ensure_ascii=False))
        state = "ok" if rec.get("ok") else f"FAILED ({rec.get('status')})"
        print(f"[{time.time() - self.t_start:7.0f}s] {rec['name']}: {state} wall {rec.get('wall_s', 0):.1f}s "
              + " ".join(f"{k}={v}" for k, v in rec.get("summary", {}).items()), flush=True)
        return rec

    def remaining(self) -> float | None:
        """Seconds left in the time box (the section's or the whole run's, whichever ends first)."""
        ends = [x for x in (self.deadline, self.section_deadline) if x]
        return min(ends) - time.time() if ends else None

    def run(self, name, cmd, cwd=None, timeout=None, **kw) -> dict:
        to = timeout or self.s.timeout
        rem = self.remaining()
        if rem is not None:
            if rem < 20:
                self.not_run.append(name)
                return {**Measured(name, " ".join(map(str, cmd)), str(cwd or self.wdir), log="",
                                   status="not run (time budget spent)").as_record(), "not_run": True}
            to = min(to, rem)
        load = os.getloadavg()[0]
        rec = run_measured(name, cmd, cwd or self.wdir, to, self.logs, env=self.env(), **kw).as_record()
        rec["load_at_start"] = round(load, 2)
        rec["utc_start"] = time.strftime("%H:%M:%S", time.gmtime(time.time() - rec["wall_s"]))
        if rec["status"] == "timeout" and to < (timeout or self.s.timeout):
            rec["status"] = "timeout (time budget)"
        return rec

    def pyhelper(self, code: str, *args, tool="kraken", timeout=600) -> str:
        """Run a small helper snippet with a venv python that has pyarrow/torch (not importing kraken)."""
        py = self.py[tool] if self.py[tool].exists() else self.py["kraken"]
        cp = subprocess.run([str(py), "-c", code, *map(str, args)], capture_output=True, text=True,
                            timeout=timeout, env=self.env())
        if cp.returncode != 0:
            raise RuntimeError(cp.stderr[-1500:])
        return cp.stdout

    def train_flops(self, spec: str, manifest: Path) -> float | None:
        """Training FLOPs of one epoch over a path-format manifest, counted on scriba's own network."""
        if not self.py["scriba"].exists():
            return None
        cp = subprocess.run([str(self.py["scriba"]), str(BENCH / "flops.py"), spec, "--manifest", str(manifest)],
                            capture_output=True, text=True, timeout=600, env=self.env())
        if cp.returncode != 0:
            print(f"FLOP count failed: {cp.stderr[-500:]}", flush=True)
            return None
        return float(json.loads(cp.stdout.strip().splitlines()[-1])["train_flops"])

    # ---- data
    def manifest(self, name: str, ds: str, lst: str, n: int | None) -> Path:
        """Absolute-path manifest from a dataset's relative manifest, optionally its first n entries."""
        base = DATA / ds
        entries = [ln.strip() for ln in (base / lst).read_text().splitlines() if ln.strip()]
        if n:
            entries = entries[:n]
        p = self.mdir / f"{name}.lst"
        p.write_text("".join(str(base / e) + "\n" for e in entries))
        return p

    def froc_sets(self, ntr: int | None, nva: int | None, nte: int | None, tag: str) -> tuple[Path, Path, Path]:
        """Manifests of the first lines of froc's train, val and test splits (all of a split for None)."""
        tr = self.manifest(f"froc_train_{tag}", "froc_mss", "splits/train.lst", ntr)
        va = self.manifest(f"froc_val_{tag}", "froc_mss", "splits/val.lst", nva)
        te = self.manifest(f"froc_test_{tag}", "froc_mss", "splits/test.lst", nte)
        return tr, va, te

    @staticmethod
    def count_lines(p: Path) -> int:
        return len([x for x in p.read_text().splitlines() if x.strip()])

    def arrow_rows(self, path: Path) -> int:
        code = ("import sys,pyarrow as pa\n"
                "t=pa.ipc.open_file(pa.memory_map(sys.argv[1])).read_all(); print(t.num_rows)")
        return int(self.pyhelper(code, path).strip())

    def compile_arrow(self, tool: str, name: str, fmt: str, manifest: Path, workers: int | None = None,
                      extra: list[str] | None = None) -> tuple[Path | None, dict]:
        out = self.wdir / "arrow" / tool / f"{name}.arrow"
        out.parent.mkdir(parents=True, exist_ok=True)
        if out.exists():
            out.unlink()
        rec = self.run(f"compile_{name}_{tool}",
                       [self.ketos[tool], *self.glob_opts(workers), "compile", "-f", fmt, "-o", out,
                        "-F", manifest, *(extra or [])])
        if rec["ok"] and out.exists():
            try:
                rec["lines"] = self.arrow_rows(out)
            except Exception as e:
                rec["ok"], rec["status"] = False, f"cannot read output: {e}"
                return None, rec
            return out, rec
        rec["ok"] = False
        return None, rec

    def dataset_arrow(self, tool: str, name: str, fmt: str, manifest: Path) -> Path | None:
        """Compiled dataset for training, built once per tool (falls back to the other tool's file)."""
        out = self.wdir / "arrow" / tool / f"{name}.arrow"
        src = out.with_suffix(".src")  # the manifest it was built from: rebuild when the subset changes
        if out.exists() and src.exists() and src.read_text() == manifest.read_text():
            return out
        if not self.have(tool):
            return None
        p, rec = self.compile_arrow(tool, name, fmt, manifest, workers=max(1, self.s.workers))
        rec["section"] = "prep"
        self.record(rec)
        if p:
            src.write_text(manifest.read_text())
        return p

    def train_data(self, tool: str, name: str, fmt: str, manifest: Path) -> tuple[Path, str, str]:
        """(file/manifest, format, provenance) for tool; prefer the tool's own compiled .arrow."""
        own = self.dataset_arrow(tool, name, fmt, manifest)
        if own:
            return own, "binary", f"{tool}-compiled .arrow"
        other = "kraken" if tool == "scriba" else "scriba"
        oth = self.dataset_arrow(other, name, fmt, manifest)
        if oth:
            return oth, "binary", f"{other}-compiled .arrow (own compile failed)"
        return manifest, fmt, f"{fmt} files"

    # ---- training
    def train(self, tool: str, name: str, train_arg, val_arg, fmt: str, opts: list[str], epochs: int | None,
              timeout=None, stop_at_score=None, glob_extra: list[str] | None = None) -> dict:
        out = self.wdir / "models" / name
        if out.exists():
            shutil.rmtree(out)
        out.mkdir(parents=True)
        train_arg, val_arg = self.as_manifest(train_arg), self.as_manifest(val_arg)
        cmd = [self.ketos[tool], *self.glob_opts(), *(glob_extra or []), "train", "-f", fmt, "-t", train_arg,
               "-e", val_arg,
               "-o", out, *opts]
        if epochs:
            cmd += ["-q", "fixed", "-N", str(epochs)]
        rec = self.run(name, cmd, timeout=timeout, watch=out, stop_at_score=stop_at_score)
        rec["outdir"] = str(out)
        rec["epochs_seen"] = self.epoch_scores(out, rec)
        rec["weights"] = self.best_weights(out)
        return rec

    def as_manifest(self, p) -> Path:
        """`-t/-e` take manifests: wrap a single .arrow file in one."""
        p = Path(p)
        if p.suffix == ".arrow":
            m = self.mdir / (p.parent.name + "_" + p.stem + ".arrowlist")
            m.write_text(str(p) + "\n")
            return m
        return p

    @staticmethod
    def epoch_scores(out: Path, rec: dict) -> list[dict]:
        """[{epoch, t (s since start), val_accuracy}] from checkpoint names; completed from weights metadata."""
        eps = {}
        for fname, t in rec.get("files_seen", {}).items():
            m = CKPT_RE.search(fname)
            if m:
                e = int(m[1])
                eps[e] = {"epoch": e, "t": t, "val_accuracy": float(m[2])}
        w = Bench.best_weights(out)
        if w:
            meta = read_weights_meta(Path(w))
            for e, vals in (meta.get("metrics") or []):
                if isinstance(vals, dict) and "val_accuracy" in vals:
                    eps.setdefault(int(e), {"epoch": int(e), "t": None})["val_accuracy_meta"] = vals["val_accuracy"]
        # checkpoints without kraken-style names: use their times in order
        if not eps:
            ck = sorted((t, f) for f, t in rec.get("files_seen", {}).items() if f.endswith(".ckpt")
                        and "abort" not in f and "last" not in f)
            for i, (t, f) in enumerate(ck):
                eps[i] = {"epoch": i, "t": t, "val_accuracy": None, "file": f}
        return [eps[k] for k in sorted(eps)]

    @staticmethod
    def best_weights(out: Path) -> str | None:
        cands = sorted(out.glob("best*.safetensors")) + sorted(out.glob("*.safetensors")) + \
            sorted(out.glob("best*.mlmodel"))
        return str(cands[0]) if cands else None

    # ---- testing
    def test(self, tool: str, name: str, model, test_arg, fmt: str, extra=None, timeout=None) -> dict:
        cmd = [self.ketos[tool], *self.glob_opts(), "test", "-m", model, "-f", fmt, "-e", self.as_manifest(test_arg),
               *(extra or [])]
        rec = self.run(name, cmd, timeout=timeout)
        rep = parse_report(Path(ROOT / rec["log"]).read_text(errors="replace") if rec.get("log") else "")
        rec.update(rep)
        return rec


def read_weights_meta(p: Path) -> dict:
    """kraken_meta of a safetensors file (first model), values JSON-decoded where possible (stdlib only)."""
    try:
        with open(p, "rb") as fh:
            (n,) = struct.unpack("<Q", fh.read(8))
            head = json.loads(fh.read(n))
        km = json.loads(head.get("__metadata__", {}).get("kraken_meta", "{}"))
        meta = next(iter(km.values())) if km else {}
        out = {}
        for k, v in meta.items():
            try:
                out[k] = json.loads(v) if isinstance(v, str) else v
            except ValueError:
                out[k] = v
        return out
    except Exception:
        return {}


def parse_report(text: str) -> dict:
    out = {}
    m1 = re.findall(r"^\s*(\d+)\s+Characters\s*$", text, re.M)
    m2 = re.findall(r"^\s*(\d+)\s+Errors\s*$", text, re.M)
    if m1 and m2:
        out["chars"], out["errors"] = int(m1[-1]), int(m2[-1])
        out["cer"] = out["errors"] / out["chars"] if out["chars"] else None
    m3 = re.findall(r"^\s*([\d.]+)%\s+Character Accuracy\s*$", text, re.M)
    if m3:
        out["char_accuracy_pct"] = float(m3[-1])
    return out

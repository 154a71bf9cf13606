#!/usr/bin/env bash
# Build (idempotently) the kraken 7.1.1 environment used ONLY for interoperability tests and benchmarks:
#   bench/.venv-kraken  (gitignored; never imported by scriba or its tests)
#
# - torch 2.13.0 CPU build (the wheel lies in /opt/wheels on these machines; a bare `torch` from PyPI would
#   pull a multi-GB CUDA build), pinned by a constraints file so that no later install can replace it;
# - kraken==7.1.1 and its declared requirements;
# - torchvision from PyPI registers fake kernels for `torchvision::nms`/`qnms`, which fail beside the CPU torch
#   ("operator torchvision::nms does not exist"); we skip those two registrations in this venv only.
#
# Usage: bash bench/setup_kraken.sh        (prints the venv path on success; re-running is cheap)
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
VENV="${KRAKEN_VENV:-$HERE/.venv-kraken}"
PY="${PYTHON:-python3}"
TORCH_VERSION=2.13.0
KRAKEN_VERSION=7.1.1

if [ -x "$VENV/bin/python" ] && "$VENV/bin/python" - <<PYEOF 2>/dev/null
import importlib.metadata as m, sys
ok = m.version("kraken") == "$KRAKEN_VERSION" and m.version("torch").split("+")[0] == "$TORCH_VERSION"
import torchvision, kraken.lib.vgsl  # noqa: F401  (import check, incl. the nms patch)
sys.exit(0 if ok else 1)
PYEOF
then
    echo "kraken $KRAKEN_VERSION venv ready: $VENV" >&2
    echo "$VENV"
    exit 0
fi

[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check -q)
# the global pip config on these machines names local index folders that may be absent: hide that noise
pip_quiet() { "${PIP[@]}" "$@" 2> >(grep -v 'is ignored: it is neither a file nor a directory' >&2); }
"${PIP[@]}" install -U pip >/dev/null 2>&1 || true

# torch: prefer the local CPU wheel, else the CPU index
TORCH_WHL="$(ls /opt/wheels/torch-${TORCH_VERSION}+cpu-*.whl 2>/dev/null | head -n1 || true)"
if ! "$VENV/bin/python" -c "import torch,sys; sys.exit(0 if torch.__version__.split('+')[0]=='$TORCH_VERSION' else 1)" 2>/dev/null; then
    if [ -n "$TORCH_WHL" ]; then
        pip_quiet install "$TORCH_WHL"
    else
        pip_quiet install "torch==${TORCH_VERSION}" --index-url https://download.pytorch.org/whl/cpu
    fi
fi
TV="$("$VENV/bin/python" -c 'import torch; print(torch.__version__)')"

CONSTRAINTS="$VENV/constraints-bench.txt"
echo "torch==${TV}" > "$CONSTRAINTS"
# -c is additive to any global pip constraint file; the pin keeps torch at the CPU build.
pip_quiet install -c "$CONSTRAINTS" "kraken==${KRAKEN_VERSION}"

# Patch torchvision's fake-kernel registrations of nms/qnms (venv only)
"$VENV/bin/python" - <<'PYEOF'
import importlib.util, pathlib, re
spec = importlib.util.find_spec("torchvision")
p = pathlib.Path(spec.submodule_search_locations[0]) / "_meta_registrations.py"
src = p.read_text()
if "BENCH-PATCH" in src:
    print("torchvision already patched:", p)
else:
    lines = src.splitlines(keepends=True)
    out, n = [], 0
    for line in lines:
        m = re.match(r'^(\s*)@torch\.library\.register_fake\("torchvision::(nms|qnms)"\)', line)
        if m:
            # replace the decorator by a no-op so the function is defined but not registered
            out.append(f'{m.group(1)}@(lambda f: f)  # BENCH-PATCH: was {line.strip()}\n')
            n += 1
        else:
            out.append(line)
    if n == 0:
        raise SystemExit(f"pattern not found in {p}; inspect it by hand")
    p.write_text("".join(out))
    print(f"patched {n} registrations in {p}")
PYEOF

"$VENV/bin/python" -c "import torch, torchvision, kraken.lib.vgsl; print('torch', torch.__version__, 'torchvision', torchvision.__version__)" >&2
"$VENV/bin/ketos" --version >&2
echo "$VENV"

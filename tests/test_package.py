"""Shape of the package: no import cycles, small modules."""

from __future__ import annotations

import ast
import os
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "scriba"


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path, name: str) -> set[str]:
    """scriba modules imported anywhere in the file (module level and inside functions)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    # Imports under `if TYPE_CHECKING:` never run, so they cannot form a cycle.
    typing_only = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If)
                   and getattr(node.test, "id", getattr(node.test, "attr", None)) == "TYPE_CHECKING"
                   for n in ast.walk(node)}
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("scriba"))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            if mod.startswith("scriba"):
                found.add(mod)
                found.update(f"{mod}.{a.name}" for a in node.names)
    return found


def test_no_import_cycles():
    modules = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    # imports under `if TYPE_CHECKING:` count too: a cycle hidden there is still a cycle between the modules
    graph = {m: {i for i in imports_of(p, m) | typing_imports_of(p, m) if i in modules and i != m}
             for m, p in modules.items()}
    # A package importing its own submodules is not a cycle of concern; a submodule importing its
    # package's __init__ (which imports nothing heavy here) is fine too. Everything else must be acyclic.
    for m in graph:
        graph[m] = {i for i in graph[m] if not (m.startswith(i + ".") or i.startswith(m + "."))}
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> None:
        state[m] = 1
        stack.append(m)
        for n in sorted(graph[m]):
            if state.get(n) == 1:
                raise AssertionError("import cycle: " + " -> ".join(stack[stack.index(n):] + [n]))
            if n not in state:
                visit(n)
        stack.pop()
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m)


MAX_LINES = 500
BENCH = PACKAGE.parents[1] / "bench"


def _bench_modules() -> list[Path]:
    """bench/'s Python files, not those of kraken's venv or the benchmark's outputs beside them."""
    found = []
    for top, dirs, names in os.walk(BENCH):
        dirs[:] = [d for d in dirs if not d.startswith(".") and d not in ("work", "__pycache__")]
        found += [Path(top) / n for n in names if n.endswith(".py")]
    return found


def test_modules_are_small():
    files = [*PACKAGE.rglob("*.py"), *_bench_modules()]
    assert any(p.name == "run.py" for p in files)
    big = {str(p.relative_to(PACKAGE.parents[1])): n for p in files
           if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_LINES}
    assert not big, f"modules over {MAX_LINES} lines: {big}"


# Each module's layer (DESIGN.md): imports only point down, and no job imports another job.
LAYERS = [
    ("scriba.cli", 1),
    ("scriba.jobs", 2),
    ("scriba.trainer", 3),
    ("scriba.recognizer", 3),
    ("scriba.machine", 3),
    ("scriba.config", 5),
    ("scriba.errors", 5),
    ("scriba.console", 5),
]


def layer_of(module: str) -> int:
    for prefix, layer in LAYERS:
        if module == prefix or module.startswith(prefix + "."):
            return layer
    return 4 if module != "scriba" else 0  # the parts: vgsl, weights, data, codec, decode, metrics, text, ...


def job_of(module: str) -> str | None:
    parts = module.split(".")
    return parts[2] if len(parts) > 2 and parts[1] == "jobs" else None


def test_imports_point_down_and_jobs_stand_alone():
    modules = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    wrong = []
    for m, p in sorted(modules.items()):
        if m == "scriba":
            continue  # the public API's lazy table names the jobs by string
        for i in sorted(imports_of(p, m) | typing_imports_of(p, m)):
            if i not in modules or i == "scriba":
                continue
            if layer_of(i) < layer_of(m):
                wrong.append(f"{m} (layer {layer_of(m)}) imports {i} (layer {layer_of(i)})")
            elif job_of(m) and job_of(i) and job_of(m) != job_of(i):
                wrong.append(f"job {m} imports another job's {i}")
    assert not wrong, "\n".join(wrong)


def typing_imports_of(path: Path, name: str) -> set[str]:
    """scriba modules imported under ``if TYPE_CHECKING:`` (they count for layering all the same)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and getattr(node.test, "id", getattr(node.test, "attr", None)) == "TYPE_CHECKING":
            for n in ast.walk(node):
                if isinstance(n, ast.ImportFrom) and (n.module or "").startswith("scriba"):
                    found.add(n.module)
                    found.update(f"{n.module}.{a.name}" for a in n.names)
    return found


def test_public_api_names_are_functions_not_subpackages():
    import scriba

    for name in ("train", "evaluate", "pretrain", "compile_dataset", "load_model"):
        obj = getattr(scriba, name)
        assert callable(obj), f"scriba.{name} is {obj!r}, not a function"
    # `from scriba import train` gives the function too, even after the job's modules were imported
    import scriba.jobs.train.job  # noqa: F401
    from scriba import train

    assert callable(train) and train.__module__ == "scriba.jobs.train.job"

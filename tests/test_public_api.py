"""The public API as a Python user meets it: every public name has a docstring example, the examples run, and so
does README's Python section.

The examples run in a temporary folder that holds ``examples/`` (the example dataset), so that what they write
(``model/``, ``test.arrow``) goes there. The examples that need weights get those that ``train``'s own example
wrote, as ``weights``.
"""

from __future__ import annotations

import ast
import doctest
import importlib
import re
from pathlib import Path

import pytest

import scriba
from shared_paths import ROOT

# train's example runs first: its weights are the others' `weights`
MODULES = [
    "scriba.jobs.train.job",
    "scriba.weights.load",
    "scriba.jobs.evaluate.job",
    "scriba.recognizer",
    "scriba.jobs.compile",
    "scriba.jobs.pretrain.job",
]
FLAGS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE


@pytest.fixture
def example_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    (tmp_path / "examples").symlink_to(ROOT / "examples", target_is_directory=True)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _public_objects() -> dict[str, object]:
    return {name: getattr(scriba, name) for name in scriba.__all__ if name != "__version__"}


def test_every_public_name_has_an_example_in_a_module_that_is_run():
    for name, obj in _public_objects().items():
        assert ">>> " in (obj.__doc__ or ""), f"scriba.{name} has no docstring example"
        assert obj.__module__ in MODULES, f"the example of scriba.{name} ({obj.__module__}) is not run"


def test_docstring_examples_run(example_folder: Path):
    runner = doctest.DocTestRunner(optionflags=FLAGS)
    finder = doctest.DocTestFinder()
    extra: dict[str, object] = {}
    ran = 0
    report: list[str] = []
    for name in MODULES:
        module = importlib.import_module(name)
        for test in finder.find(module, name, extraglobs=extra):
            if not test.examples:
                continue
            runner.run(test, out=report.append, clear_globs=False)
            ran += 1
            if test.name == "scriba.jobs.train.job.train" and "result" in test.globs:
                extra["weights"] = test.globs["result"].weights
    assert runner.failures == 0, "".join(report)
    assert ran >= len(_public_objects())


def _readme_python() -> str:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = re.search(r"\n## Python\n(.*?)(?=\n## )", text, re.S)
    assert section, "README.md has no 'Python' section"
    blocks = re.findall(r"```python\n(.*?)```", section.group(1), re.S)
    assert len(blocks) == 1, "README's Python section should hold one python code block"
    return blocks[0]


def test_readme_python_section_is_short():
    code = [ln for ln in _readme_python().splitlines() if ln.strip()]
    assert len(code) < 15, f"README's Python example has {len(code)} lines"


def test_readme_python_section_names_what_exists():
    """The fast half of the check below: the names it imports exist and the configurations take its fields."""
    from scriba import config

    tree = ast.parse(_readme_python())
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("scriba"):
            module = importlib.import_module(node.module)
            assert all(hasattr(module, a.name) for a in node.names), ast.unparse(node)
        if isinstance(node, ast.Call) and getattr(node.func, "id", "").endswith("Config"):
            fields = config.field_names(getattr(config, node.func.id))
            unknown = {k.arg for k in node.keywords if k.arg is not None} - fields
            assert not unknown, f"{node.func.id} has no field(s) {unknown}"
        if isinstance(node, ast.Call) and getattr(node.func, "id", "") == "dict":  # options both configs take
            shared = config.field_names(config.TrainConfig) & config.field_names(config.TestConfig)
            assert {k.arg for k in node.keywords} <= shared, ast.unparse(node)


@pytest.mark.slow
def test_readme_python_section_runs(example_folder: Path, capsys: pytest.CaptureFixture[str]):
    exec(compile(_readme_python(), "README.md", "exec"), {"__name__": "__readme__"})
    out = capsys.readouterr().out.splitlines()
    # how far ten unseeded epochs get varies from run to run: the run is checked, not the accuracy
    assert re.fullmatch(r"\d+\.\d% of 1829 characters right", out[0]), out
    assert len(out) == 4  # then the three lines read


# -- the library checks what the CLI used to check ---------------------------------------------------------------


@pytest.mark.parametrize("job", ["train", "pretrain"])
def test_load_with_resume_is_refused_by_the_library(tmp_path: Path, job: str):
    from scriba import config
    from scriba.errors import UsageError

    ckpt = tmp_path / "checkpoint_last.ckpt"
    ckpt.write_bytes(b"not read: the options are refused first")
    cls = config.TrainConfig if job == "train" else config.PretrainConfig
    with pytest.raises(UsageError, match="mutually exclusive"):
        getattr(scriba, job)(cls(load=str(ckpt), resume=str(ckpt)))


def test_codec_file_is_read_by_the_library(example_folder: Path):
    from scriba.config import TrainConfig
    from scriba.errors import CodecError

    (example_folder / "codec.json").write_text("[1, 2]", encoding="utf-8")
    for codec, message in (("missing.json", "missing.json"), ("codec.json", "JSON object")):
        cfg = TrainConfig(training_data=["examples/froc_sample/train/*_0180_*.png"], format_type="path",
                          codec=codec, checkpoint_path="model")
        with pytest.raises(CodecError, match=message):
            scriba.train(cfg)


def test_evaluate_needs_no_cli_fields_and_run_test_names_what_is_missing():
    from scriba.config import TestConfig
    from scriba.errors import UsageError
    from scriba.jobs.evaluate.job import run_test

    assert TestConfig().model is None and TestConfig().test_data == []  # what evaluate() is happy with
    with pytest.raises(UsageError, match="-m/--model"):
        run_test(TestConfig(test_data=["x.png"]))
    with pytest.raises(UsageError, match="-e/--test-data"):
        run_test(TestConfig(model="m.safetensors"))

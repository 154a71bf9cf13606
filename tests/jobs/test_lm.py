"""``ketos lm build``: the model's codec, the training text transforms, and a file that names its codec."""

from __future__ import annotations

import pytest
import torch

from scriba.codec import Codec
from scriba.lm.lmfile import check_language_model, codec_hash, read_header
from scriba.vgsl import build_model
from scriba.weights import save_weights
from shared_paths import EXAMPLE_DATA, run_ketos


def _model(tmp_path, chars: str):
    torch.manual_seed(0)
    codec = Codec(chars)
    spec = f"[1,16,0,1 Cr3,3,4 S1(1x0)1,3 Lbx8 O1c{codec.max_label + 1}]"
    return save_weights(build_model(spec, codec, seg_type="bbox", one_channel_mode="L"), tmp_path / "m.safetensors")


def _example_texts() -> list[str]:
    return [(EXAMPLE_DATA / p.strip()).with_suffix(".gt.txt").read_text(encoding="utf-8").strip()
            for p in (EXAMPLE_DATA / "train.lst").read_text().splitlines() if p.strip()]


def test_build_writes_a_model_in_the_codec_s_labels(tmp_path, capsys):
    texts = _example_texts()
    chars = sorted(set("".join(texts)))
    model = _model(tmp_path, "".join(chars))
    out = tmp_path / "chars.arpa"
    code, stdout, stderr = run_ketos(["lm", "build", "-m", str(model), "-o", str(out), "--order", "3",
                                      "-t", str(EXAMPLE_DATA / "train.lst")], capsys)
    assert code == 0, stderr
    assert f"order 3, {len(texts)} lines" in stdout
    header = read_header(str(out))
    codec = Codec("".join(chars))
    assert header["codec-sha256"] == codec_hash(codec) and header["order"] == "3"
    assert check_language_model(str(out), codec) == codec.max_label
    text = out.read_text()
    # the words are labels: the first character of the first line follows <s> as a bigram
    first = str(codec.encode(texts[0])[0])
    assert f"\t<s> {first}" in text
    assert not list(tmp_path.glob(".*partial*"))


def test_characters_missing_from_the_codec_are_named(tmp_path, capsys):
    model = _model(tmp_path, "aeiou ")
    code, stdout, _ = run_ketos(["lm", "build", "-m", str(model), "-o", str(tmp_path / "v.arpa"),
                                 "-t", str(EXAMPLE_DATA / "train.lst")], capsys)
    assert code == 0
    texts = "".join(_example_texts())
    missing = set(texts) - set("aeiou ")
    assert f"{len(missing)} characters missing from the codec were left out" in stdout
    top = max(missing, key=texts.count)
    assert f"{top!r} (U+{ord(top):04X}) x{texts.count(top)}" in stdout


def test_a_model_built_for_another_codec_is_refused(tmp_path, capsys):
    model = _model(tmp_path, "abc ")
    out = tmp_path / "abc.arpa"
    assert run_ketos(["lm", "build", "-m", str(model), "-o", str(out), "-t", str(EXAMPLE_DATA / "train.lst")],
                     capsys)[0] == 0
    from scriba.errors import UsageError

    with pytest.raises(UsageError, match="another codec"):
        check_language_model(str(out), Codec("abd "))
    with pytest.raises(UsageError, match="not a scriba language model"):
        check_language_model(str(EXAMPLE_DATA / "train.lst"), Codec("abc "))


def test_build_needs_a_model_and_data(tmp_path, capsys):
    code, _, err = run_ketos(["lm", "build", "-t", str(EXAMPLE_DATA / "train.lst")], capsys)
    assert code == 2 and "-m/--model" in err and "Error" not in err.split(":")[0]
    model = _model(tmp_path, "abc ")
    code, _, err = run_ketos(["lm", "build", "-m", str(model)], capsys)
    assert code == 2 and "no transcriptions" in err


def test_ketos_test_refuses_a_language_model_of_another_codec(tmp_path, capsys):
    pytest.importorskip("flashlight.lib.text.decoder", reason="flashlight-text (scriba[lm]) not installed")
    model = _model(tmp_path, "abc ")
    lm = tmp_path / "other.arpa"
    from scriba.lm.lmfile import write_language_model

    write_language_model(["abd abd"], Codec("abd "), str(lm), order=2)
    code, _, err = run_ketos(["-d", "cpu", "test", "-m", str(model), "-f", "path", "--lm", str(lm),
                              "-e", str(EXAMPLE_DATA / "test.lst")], capsys)
    assert code == 2 and "built for another codec" in err and "Traceback" not in err


def test_language_model_decoding_lowers_the_error_count_on_froc(shared_data, tmp_path, capsys, monkeypatch):
    pytest.importorskip("flashlight.lib.text.decoder", reason="flashlight-text (scriba[lm]) not installed")
    import json

    root = shared_data / "froc_mss"
    monkeypatch.chdir(root)  # the manifests list paths relative to the dataset's folder
    lm = tmp_path / "froc.arpa"
    assert run_ketos(["lm", "build", "-m", "model_froc.mlmodel", "-u", "NFD", "-o", str(lm),
                      "-t", "published_split/train.lst"], capsys)[0] == 0
    test = tmp_path / "test.lst"
    test.write_text("\n".join((root / "published_split" / "test.lst").read_text().splitlines()[:80]) + "\n")
    errors = {}
    for name, extra in (("greedy", []), ("lm", ["--lm", str(lm)])):
        out = tmp_path / f"{name}.json"
        code, _, err = run_ketos(["-d", "cpu", "test", "-m", "model_froc.mlmodel", "-B", "16", "-f", "path",
                                  "-u", "NFD", "-e", str(test), "--output-json", str(out), *extra], capsys)
        assert code == 0, err
        report = json.loads(out.read_text())
        errors[name] = report["errors"] if "errors" in report else report["summary"]["errors"]
        assert report["settings"]["decoding"].startswith("beam" if extra else "greedy")
    assert errors["lm"] < 0.92 * errors["greedy"], errors


def test_a_damaged_language_model_is_one_line(tmp_path, capsys):
    pytest.importorskip("flashlight.lib.text.decoder", reason="flashlight-text (scriba[lm]) not installed")
    model = _model(tmp_path, "abc ")
    lm = tmp_path / "cut.arpa"
    assert run_ketos(["lm", "build", "-m", str(model), "-o", str(lm), "-t", str(EXAMPLE_DATA / "train.lst")],
                     capsys)[0] == 0
    lm.write_text(lm.read_text()[:400])  # cut short: the header is intact, the n-grams are not
    code, _, err = run_ketos(["-d", "cpu", "test", "-m", str(model), "-f", "path", "--lm", str(lm),
                              "-e", str(EXAMPLE_DATA / "test.lst")], capsys)
    assert code == 2 and "cannot read the language model" in err and str(lm) in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_tune_agrees_with_ketos_test_at_its_best_point(shared_data, tmp_path, capsys, monkeypatch):
    pytest.importorskip("flashlight.lib.text.decoder", reason="flashlight-text (scriba[lm]) not installed")
    import json

    root = shared_data / "froc_mss"
    monkeypatch.chdir(root)  # the manifests list paths relative to the dataset's folder
    split = root / "published_split"
    train = tmp_path / "train.lst"
    train.write_text("\n".join(str(root / p) for p in (split / "train.lst").read_text().split()[:600]) + "\n")
    val = tmp_path / "val.lst"
    val.write_text("\n".join(str(root / p) for p in (split / "val.lst").read_text().split()[:40]) + "\n")
    lm = tmp_path / "froc.arpa"
    assert run_ketos(["lm", "build", "-m", "model_froc.mlmodel", "-u", "NFD", "-o", str(lm), "-t", str(train)],
                     capsys)[0] == 0
    grid = tmp_path / "grid.json"
    # NFC: the model writes decomposed accents, so a prediction left unnormalised would count errors here
    code, out, err = run_ketos(["-d", "cpu", "--threads", "2", "lm", "tune", "-m", "model_froc.mlmodel", "--lm",
                                str(lm), "-f", "path", "-u", "NFC", "-B", "16", "-e", str(val),
                                "--lm-weights", "0.3,1.5", "--lm-bonuses", "0,2.5", "--output-json", str(grid)],
                               capsys)
    assert code == 0, err
    report = json.loads(grid.read_text())
    points = report["grid"]
    assert len(points) == 4 and [p["errors"] for p in points] == sorted(p["errors"] for p in points)
    best = report["best"]
    assert (best["lm_weight"], best["lm_bonus"]) == (points[0]["lm_weight"], points[0]["lm_bonus"])
    assert f"best: --lm-weight {best['lm_weight']:g} --lm-bonus {best['lm_bonus']:g}" in out

    def ketos_test_errors(*extra: str) -> int:
        out_json = tmp_path / "test.json"
        code, _, err = run_ketos(["-d", "cpu", "test", "-m", "model_froc.mlmodel", "-B", "16", "-f", "path", "-u",
                                  "NFC", "-e", str(val), "--output-json", str(out_json), *extra], capsys)
        assert code == 0, err
        return json.loads(out_json.read_text())["summary"]["errors"]

    # the tuned counts are ketos test's (one process there, two here): greedy, the best point and the worst
    assert ketos_test_errors() == report["greedy_errors"]
    for p in (points[0], points[-1]):
        assert ketos_test_errors("--lm", str(lm), "--lm-weight", str(p["lm_weight"]),
                                 "--lm-bonus", str(p["lm_bonus"])) == p["errors"]
    assert points[0]["errors"] < report["greedy_errors"]  # a 6-gram of froc's lines helps its model


def test_tune_report_names_the_grid_edges_and_a_useless_language_model():
    from scriba.jobs.evaluate.lm_tune import TuneResult
    from scriba.lm.tune import GridPoint

    grid = [GridPoint(2.0, 0.0, 90, 1000), GridPoint(1.0, 0.0, 95, 1000), GridPoint(2.0, 1.0, 99, 1000)]
    helps = TuneResult("x.arpa", 10, 1000, 100, grid)
    assert helps.edges == ["largest --lm-weights", "smallest --lm-bonuses"]
    text = helps.render()
    assert "best: --lm-weight 2 --lm-bonus 0 (10.0 % fewer errors than greedy decoding)" in text
    assert "grid's edge (largest --lm-weights, smallest --lm-bonuses)" in text and "does not help" not in text
    useless = TuneResult("x.arpa", 10, 1000, 80, [GridPoint(0.5, 1.0, 85, 1000), GridPoint(0.5, 2.0, 88, 1000)])
    assert useless.edges == ["smallest --lm-bonuses"]  # one weight tried: no edge on that axis
    assert "(6.2 % more errors than greedy decoding)" in useless.render()
    assert "does not help on these lines" in useless.render()


@pytest.mark.parametrize("args, message", [
    (["--lm-weights", ""], "--lm-weights is empty"),
    (["--lm-weights", "1,x"], "comma-separated"),
    (["--lm-weights", "-1"], ">= 0"),
    (["--lm-bonuses", "nan"], "finite"),
])
def test_tune_grid_values_are_checked(tmp_path, capsys, args, message):
    model = _model(tmp_path, "abc ")
    lm = tmp_path / "x.arpa"
    lm.write_text("")
    code, _, err = run_ketos(["lm", "tune", "-m", str(model), "--lm", str(lm), "-f", "path",
                              "-e", str(EXAMPLE_DATA / "val.lst"), *args], capsys)
    assert code == 2 and message in err and "Traceback" not in err


def test_tune_refuses_what_ketos_test_refuses(tmp_path, capsys):
    pytest.importorskip("flashlight.lib.text.decoder", reason="flashlight-text (scriba[lm]) not installed")
    from PIL import Image

    from scriba.lm.lmfile import write_language_model

    model = _model(tmp_path, "abc ")
    val = ["-f", "path", "-e", str(EXAMPLE_DATA / "val.lst")]
    code, _, err = run_ketos(["lm", "tune", "-m", str(model), *val], capsys)
    assert code == 2 and "--lm" in err and "ketos lm build" in err
    lm = tmp_path / "x.arpa"
    code, _, err = run_ketos(["lm", "tune", "-m", str(model), "--lm", str(EXAMPLE_DATA / "README.md")], capsys)
    assert code == 2 and "no validation lines" in err
    write_language_model(["abd abd"], Codec("abd "), str(lm), order=2)
    code, _, err = run_ketos(["-d", "cpu", "lm", "tune", "-m", str(model), "--lm", str(lm), *val], capsys)
    assert code == 2 and "built for another codec" in err and "Traceback" not in err
    assert run_ketos(["lm", "build", "-m", str(model), "-o", str(lm), "-t", str(EXAMPLE_DATA / "train.lst")],
                     capsys)[0] == 0
    lm.write_text(lm.read_text()[:400])  # the header intact, the n-grams cut short
    code, _, err = run_ketos(["-d", "cpu", "lm", "tune", "-m", str(model), "--lm", str(lm), *val], capsys)
    assert code == 2 and "cannot read the language model" in err and len(err.strip().splitlines()) == 1
    # lines without transcriptions cannot be scored: one line that says so, not an empty grid
    empty = tmp_path / "empty"
    empty.mkdir()
    for name in ("a", "b"):
        Image.new("L", (60, 16), 255).save(empty / f"{name}.png")
        (empty / f"{name}.gt.txt").write_text("")
    (tmp_path / "empty.lst").write_text(f"{empty / 'a.png'}\n{empty / 'b.png'}\n")
    build = run_ketos(["lm", "build", "-m", str(model), "-o", str(lm), "-t", str(EXAMPLE_DATA / "train.lst")], capsys)
    assert build[0] == 0
    code, _, err = run_ketos(["-d", "cpu", "lm", "tune", "-m", str(model), "--lm", str(lm), "-f", "path",
                              "-e", str(tmp_path / "empty.lst")], capsys)
    assert code != 0 and "Traceback" not in err and len(err.strip().splitlines()) == 1, err

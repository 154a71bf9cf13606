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

"""Weights files: kraken safetensors and CoreML read/write, checkpoints, conversion, bad files."""

from __future__ import annotations

import json

import pytest
import torch

from scriba.codec import Codec
from scriba.errors import ModelError, UsageError
from scriba.vgsl import build_model
from scriba.weights import convert, load_model, load_models, save_weights
from scriba.weights.checkpoint import checkpoint_entry

SPEC = "[1,16,0,1 Cr3,3,8 Gn4 Mp2,2 S1(1x0)1,3 Lbx6 Do0.1 O1c4]"


def _model():
    torch.manual_seed(1)
    return build_model(SPEC, Codec("abc"), seg_type="bbox", one_channel_mode="L").eval()


def _same_output(a, b):
    x = torch.rand(2, 1, 16, 30)
    lens = torch.tensor([30, 17])
    with torch.no_grad():
        return torch.allclose(a.eval()(x, lens)[0], b.eval()(x, lens)[0], atol=1e-5)


def test_safetensors_layout_and_roundtrip(tmp_path):
    from safetensors import safe_open

    m = _model()
    path = save_weights(m, tmp_path / "m.safetensors")
    with safe_open(str(path), "pt") as fh:
        meta = json.loads(fh.metadata()["kraken_meta"])
        keys = list(fh.keys())
    (uid, entry), = meta.items()
    assert f"{uid}.nn.C_0.co.weight" in keys and f"{uid}.nn.L_4.layer.weight_hh_l0_reverse" in keys
    assert f"{uid}.nn.Gn_1.layer.weight" in keys and f"{uid}.nn.O_6.lin.bias" in keys
    assert entry["_tasks"] == ["recognition"] and entry["_model"] == "TorchVGSLModel"
    assert entry["_kraken_min_version"] == "5.0.0"
    assert entry["codec"] == {"a": [1], "b": [2], "c": [3]}
    assert entry["vgsl"] == m.spec
    assert list(entry)[:10] == ["_kraken_min_version", "_tasks", "_model", "accuracy", "metrics", "seg_type",
                                "one_channel_mode", "model_type", "legacy_polygons", "codec"]
    back = load_model(path)
    assert back.spec == m.spec and back.codec == m.codec and back.seg_type == "bbox"
    assert _same_output(m, back)


def test_several_models_in_one_file(tmp_path):
    a, b = _model(), build_model("[1,8,0,1 Cr3,3,2 S1(1x0)1,3 O1c3]", Codec("xy"))
    path = save_weights([a, b], tmp_path / "two.safetensors")
    assert [m.spec for m in load_models(path)] == [a.spec, b.spec]


def test_coreml_roundtrip(tmp_path):
    pytest.importorskip("coremltools")
    m = _model()
    path = save_weights(m, tmp_path / "m.safetensors", "coreml")
    assert path.suffix == ".mlmodel"
    back = load_model(path)
    assert back.spec == m.spec and back.codec == m.codec
    assert back.metadata["seg_type"] == "bbox"
    assert _same_output(m, back)


def test_checkpoint_weights_only(tmp_path):
    m = _model()
    ckpt = {"epoch": 1, "state_dict": {f"net.{k}": v for k, v in m.state_dict().items()},
            "scriba": checkpoint_entry(m)}
    torch.save(ckpt, tmp_path / "c.ckpt")
    torch.load(tmp_path / "c.ckpt", weights_only=True)
    back = load_model(tmp_path / "c.ckpt")
    assert _same_output(m, back)
    out = convert([tmp_path / "c.ckpt"], tmp_path / "w.safetensors")
    assert _same_output(m, load_model(out))


@pytest.mark.parametrize("content", [b"", b"hello world, not a model", b"\x00" * 64])
@pytest.mark.parametrize("suffix", [".safetensors", ".mlmodel", ".ckpt"])
def test_foreign_files_raise_model_error(tmp_path, content, suffix):
    p = tmp_path / f"bad{suffix}"
    p.write_bytes(content)
    with pytest.raises(ModelError, match="bad"):
        load_model(p)


def test_truncated_safetensors_writes_nothing(tmp_path):
    good = save_weights(_model(), tmp_path / "m.safetensors")
    bad = tmp_path / "t.safetensors"
    bad.write_bytes(good.read_bytes()[:-100])
    with pytest.raises(ModelError):
        load_model(bad)
    with pytest.raises(ModelError):
        convert([good, bad], tmp_path / "out.safetensors")
    assert not (tmp_path / "out.safetensors").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.safetensors", "t.safetensors"]


def test_convert_needs_inputs(tmp_path):
    with pytest.raises(UsageError):
        convert([], tmp_path / "x.safetensors")


def test_coreml_io_does_not_import_coremltools(tmp_path):
    # importing coremltools (its converters) took ~2 s of every `ketos test` start; only its protobuf classes
    # are needed, and they must still agree with coremltools' own once that is imported
    pytest.importorskip("coremltools")
    import subprocess
    import sys

    path = save_weights(_model(), tmp_path / "m.mlmodel", "coreml")
    code = (
        "import sys\n"
        "from scriba.weights import load_model\n"
        f"m = load_model({str(path)!r})\n"
        "assert 'coremltools' not in sys.modules, 'coremltools imported'\n"
        "from coremltools.proto import Model_pb2\n"
        f"spec = Model_pb2.Model.FromString(open({str(path)!r}, 'rb').read())\n"
        "assert spec.description.metadata.userDefined['vgsl'] == m.spec\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=300)


@pytest.mark.parametrize("fmt", ["safetensors", "coreml"])
def test_written_weights_get_the_umask_mode_not_0600(tmp_path, fmt):
    if fmt == "coreml":
        pytest.importorskip("coremltools")
    import os
    import stat

    old = os.umask(0o022)
    try:
        path = save_weights(_model(), tmp_path / "m", weights_format=fmt)
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644

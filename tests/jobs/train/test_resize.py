"""``--load`` with ``--resize fail|union|new`` on kraken's merge test model and data."""

from __future__ import annotations

import unicodedata

import pytest
import torch

from scriba.config import TrainConfig
from scriba.errors import UsageError
from scriba.jobs.train.job import train
from train_helpers import tiny_global


@pytest.fixture(scope="module")
def merge(kraken_data):
    d = kraken_data / "merge_tests"
    if not (d / "merge_codec_nfd.mlmodel").exists():
        pytest.skip("kraken merge test resources missing")
    return d


def _cfg(merge, out, resize):
    return TrainConfig(
        load=str(merge / "merge_codec_nfd.mlmodel"),
        resize=resize,
        training_data=[str(merge / "merger.arrow")],
        evaluation_data=[str(merge / "merger.arrow")],
        format_type="binary",
        normalization="NFD",
        quit="fixed",
        epochs=1,
        batch_size=2,
        checkpoint_path=str(out),
    )


def _data_alphabet(merge):
    from scriba.data.arrow import ArrowDataset
    from scriba.text import TextTransform

    ds = ArrowDataset(str(merge / "merger.arrow"))
    tt = TextTransform(normalization="NFD")
    return set("".join(tt(ds.text(i)) for i in range(len(ds))))


def test_fail_names_missing_characters(merge, tmp_path):
    from scriba.weights import load_model

    old = load_model(str(merge / "merge_codec_nfd.mlmodel")).codec
    missing = _data_alphabet(merge) - set(old.c2l)
    assert missing
    with pytest.raises(UsageError) as exc:
        train(_cfg(merge, tmp_path, "fail"), tiny_global(), progress=False)
    for c in missing:
        assert repr(c) in str(exc.value)
    assert not list(tmp_path.glob("*.ckpt"))


@pytest.mark.parametrize("resize", ["union", "add"])
def test_union_keeps_old_outputs_and_adds_rows(merge, tmp_path, resize):
    from scriba.weights import load_model

    old_model = load_model(str(merge / "merge_codec_nfd.mlmodel"))
    old = old_model.codec
    r = train(_cfg(merge, tmp_path, resize), tiny_global(), progress=False)
    ck = torch.load(f"{tmp_path}/checkpoint_last.ckpt", map_location="cpu", weights_only=True)
    c2l = ck["scriba"]["codec"]
    assert all(c2l[k] == v for k, v in old.c2l.items())
    added = set(c2l) - set(old.c2l)
    assert added == _data_alphabet(merge) - set(old.c2l)
    assert sorted(lab for k in added for lab in c2l[k]) == list(
        range(old.max_label + 1, old.max_label + 1 + len(added))
    )
    w = [v for k, v in ck["state_dict"].items() if k.endswith("lin.weight")][-1]
    assert w.shape[0] == old.max_label + 1 + len(added)
    assert r.weights


@pytest.mark.parametrize("resize", ["new", "both"])
def test_new_matches_data_alphabet(merge, tmp_path, resize):
    r = train(_cfg(merge, tmp_path, resize), tiny_global(), progress=False)
    from scriba.weights import load_model

    model = load_model(r.weights)
    assert set(model.codec.c2l) == _data_alphabet(merge)
    assert model.nn[-1].lin.weight.shape[0] == model.codec.max_label + 1
    assert all(unicodedata.is_normalized("NFD", k) for k in model.codec.c2l)


def test_union_keeps_trained_rows_before_training(merge):
    from scriba.jobs.train.job import _fit_codec
    from scriba.weights import load_model

    model = load_model(str(merge / "merge_codec_nfd.mlmodel"))
    old_w = model.nn[-1].lin.weight.detach().clone()
    old_b = model.nn[-1].lin.bias.detach().clone()
    cfg = TrainConfig(resize="union", normalization="NFD")
    _fit_codec(model, cfg, sorted(_data_alphabet(merge)))
    n_old = old_w.shape[0]
    assert model.nn[-1].lin.weight.shape[0] == model.codec.max_label + 1 > n_old
    assert torch.equal(model.nn[-1].lin.weight[:n_old], old_w)
    assert torch.equal(model.nn[-1].lin.bias[:n_old], old_b)

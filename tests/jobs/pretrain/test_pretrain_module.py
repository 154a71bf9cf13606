from __future__ import annotations

import pytest
import torch

from scriba.config import PretrainConfig
from scriba.errors import SpecError
from scriba.jobs.pretrain.module import PretrainModule, RelativeEarlyStopping
from scriba.jobs.pretrain.network import DUMMY_CODEC, build_pretrain_model, find_split, prepare_loaded
from scriba.vgsl import build_model


def _run(stopper: RelativeEarlyStopping, values: list[float]) -> list[tuple[bool, int]]:
    out = []
    for v in values:
        stop, _ = stopper._evaluate_stopping_criteria(torch.tensor(v))
        out.append((stop, stopper.wait_count))
    return out


def test_min_delta_is_relative_to_the_best_loss() -> None:
    es = RelativeEarlyStopping("val_loss", relative_delta=0.1, patience=2)
    # 10 -> 9.5 is only 5% better: no improvement; 8.9 is 11% better than 10
    assert _run(es, [10.0, 9.5, 8.9, 8.5, 8.2]) == [(False, 0), (False, 1), (False, 0), (False, 1), (True, 2)]
    assert float(es.best_score) == pytest.approx(8.9)


def test_min_delta_zero_accepts_any_decrease() -> None:
    es = RelativeEarlyStopping("val_loss", relative_delta=0.0, patience=1)
    assert _run(es, [3.0, 2.999, 2.999]) == [(False, 0), (False, 0), (True, 1)]


def test_small_losses_use_a_small_delta() -> None:
    # an absolute delta of 0.01 would stop a run whose loss is 0.005; a relative one still sees progress
    es = RelativeEarlyStopping("val_loss", relative_delta=0.01, patience=1)
    assert _run(es, [0.005, 0.0049, 0.0048]) == [(False, 0), (False, 0), (False, 0)]


def test_split_at_the_first_recurrent_layer() -> None:
    net = build_pretrain_model("[1,16,0,1 Cr3,3,8 Mp2,2 S1(1x0)1,3 Lbx16 Do Lfx12]")
    split = find_split(net)
    assert (split.start, split.stop) == (3, 6)
    assert (split.feature_dim, split.context_dim) == (64, 12)
    assert net.codec is not None and net.codec.to_json() == DUMMY_CODEC
    assert net.spec.endswith("O{O_6}1c2]")


def test_spec_ending_in_an_output_layer_gets_no_second_one() -> None:
    net = build_pretrain_model("[1,16,0,1 Cr3,3,8 Mp2,2 S1(1x0)1,3 Lbx16 O1c5]")
    assert net.spec.count("O{") == 1 and net.spec.endswith("1c2]")
    assert find_split(net).stop == len(net.nn) - 1


def test_loaded_model_keeps_its_output_layer_and_codec() -> None:
    net = build_model("[1,16,0,1 Cr3,3,8 Mp2,2 S1(1x0)1,3 Lbx16 O1c4]", {"a": [1], "b": [2], "c": [3]})
    same = prepare_loaded(net)
    assert same.codec is not None and same.codec.to_json() == {"a": [1], "b": [2], "c": [3]}
    assert same.spec.endswith("1c4]")


@pytest.mark.parametrize(
    ("spec", "match"),
    [
        ("[1,16,0,1 Cr3,3,8 Mp2,2 S1(1x0)1,3]", "recurrent"),
        ("[1,1,0,16 Lbx8]", "convolutional"),
        ("[1,16,0,1 Cr3,3,8 Lbx8]", "1 high"),
    ],
)
def test_unsuitable_specs(spec: str, match: str) -> None:
    with pytest.raises(SpecError, match=match):
        find_split(build_pretrain_model(spec))


def test_module_step_shapes_follow_the_options() -> None:
    torch.manual_seed(0)
    net = build_pretrain_model("[1,16,0,1 Cr3,3,8 Mp2,2 S1(1x0)1,3 Lbx16]")
    mod = PretrainModule(net, PretrainConfig(), mask_width=2, mask_prob=0.5, num_negatives=9, logit_temp=0.1)
    assert mod.mask.mask_emb.shape == (64,)
    assert mod.mask.project_q.weight.shape == (32, 64)
    batch = {"images": torch.rand(3, 1, 16, 120), "seq_lens": torch.tensor([120, 90, 40])}
    loss, frames = mod._step(batch, torch.Generator().manual_seed(0))
    assert loss is not None and loss.ndim == 0 and frames > 0
    # the output layer takes no part: no gradient reaches it
    loss.backward()
    assert all(p.grad is None for p in net.nn[-1].parameters())
    assert net.nn[0].co.weight.grad is not None


def test_validation_draws_the_same_task_every_run() -> None:
    net = build_pretrain_model("[1,16,0,1 Cr3,3,8 Mp2,2 S1(1x0)1,3 Lbx16]")
    mod = PretrainModule(net, PretrainConfig(), mask_width=2, mask_prob=0.5, num_negatives=5, logit_temp=0.1)
    mod.eval()
    batch = {"images": torch.rand(2, 1, 16, 80), "seq_lens": torch.tensor([80, 50])}
    with torch.no_grad():
        a, _ = mod._step(batch, torch.Generator().manual_seed(42))
        b, _ = mod._step(batch, torch.Generator().manual_seed(42))
        c, _ = mod._step(batch, torch.Generator().manual_seed(7))
    assert a is not None and b is not None and c is not None
    assert a.item() == b.item() and a.item() != c.item()

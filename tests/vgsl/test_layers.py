"""Every VGSL block kind: output shapes, sequence lengths and padding invariance."""

from __future__ import annotations

import pytest
import torch

from scriba.vgsl import build_model

torch.manual_seed(0)


def close_at_scale(a: torch.Tensor, b: torch.Tensor, rel: float = 2e-5) -> bool:
    """True when a and b differ by at most rel times b's largest magnitude.

    Gradients summed over a whole batch in another order (oneDNN's AVX-512 kernels block the reduction
    differently from its AVX2 ones) differ by a few float32 ulps of the largest terms, not of each element:
    an element-wise rtol fails on the small elements of a tensor whose large ones are in the hundreds.
    """
    return bool((a - b).abs().max() <= rel * b.abs().max().clamp_min(1e-6))


CASES = [
    # spec body, expected (C, H) after the blocks
    ("Cr3,3,8", (8, 16)),
    ("Ct3,5,8,2,2", (8, 8)),
    ("Cs3,3,4", (4, 16)),
    ("Clr3,3,4,1,1,2,2", (4, 16)),
    ("Cm3,3,4", (4, 16)),
    ("Cl3,3,4", (4, 16)),
    ("CTr3,3,4,2,2", (4, 31)),
    ("Mp2,2", (1, 8)),
    ("Mp3,2,1,1", (1, 14)),
    ("Do0.2", (1, 16)),
    ("Do0.2,2", (1, 16)),
    ("Cr3,3,8 Gn4", (8, 16)),
    ("Cr3,3,8 S1(1x0)1,3", (128, 1)),
    ("Cr3,3,8 Lbx6", (12, 16)),
    ("Cr3,3,8 Lfx6", (6, 16)),
    ("Cr3,3,8 Lrx6", (6, 16)),
    ("Cr3,3,8 Lby6", (12, 16)),
    ("Cr3,3,8 Lfys6", (6, 1)),
    ("Cr3,3,8 Gbx6", (12, 16)),
    ("Cr3,3,8 O1c7", (7, 16)),
    ("Cr3,3,8 O1ca7", (7, 16)),
    ("Cr3,3,8 O2l7", (7, 16)),
    ("Cr3,3,8 I", (8, 16)),
    ("Cr3,3,8 A3,4", (4, 16)),
    ("[Cr3,3,8 Mp2,2] Cr3,3,4", (4, 8)),
    ("Cr3,3,8 Do0.2,2 Mp2,2 Cl3,3,4 Mp3,2,2,2", (4, 3)),
    ("(Cr3,3,8 Ct3,3,4)", (12, 16)),
]


@pytest.mark.parametrize("body,shape", CASES)
def test_shapes_and_padding_invariance(body, shape):
    m = build_model(f"[1,16,0,1 {body}]").eval()
    assert m.output_shape == shape
    widths = [37, 20, 9]
    lines = [torch.rand(1, 16, w) for w in widths]
    batch = torch.zeros(3, 1, 16, max(widths))
    for i, x in enumerate(lines):
        batch[i, :, :, : x.shape[-1]] = x
    with torch.no_grad():
        out, lens = m(batch, torch.tensor(widths))
        assert out.shape[1:3] == shape
        for i, x in enumerate(lines):
            single, slen = m(x[None], torch.tensor([x.shape[-1]]))
            assert int(lens[i]) == int(slen[0])
            n = int(slen[0])
            assert torch.allclose(out[i, :, :, :n], single[0, :, :, :n], atol=1e-5), body
            # padding frames stay zero so later layers see what an unpadded line sees
            if "O" not in body and "Do" not in body:
                assert out[i, :, :, n:].abs().max() == 0 if out.shape[-1] > n else True


def test_summarizing_x_rnn_keeps_one_frame():
    m = build_model("[1,8,0,1 Cr3,3,4 S1(1x0)1,3 Lbxs5]").eval()
    out, lens = m(torch.rand(2, 1, 8, 30), torch.tensor([30, 12]))
    assert out.shape == (2, 10, 1, 1)
    assert lens.tolist() == [1, 1]
    single, _ = m(torch.rand(1, 1, 8, 12) * 0 + 0.5, torch.tensor([12]))
    assert single.shape == (1, 10, 1, 1)


def test_conv_stride_lengths():
    m = build_model("[1,16,0,1 Cr3,3,4,2,2 Mp2,2]")
    _, lens = m(torch.rand(2, 1, 16, 41), torch.tensor([41, 10]))
    assert lens.tolist() == [10, 2]


def test_sigmoid_logits_in_training():
    m = build_model("[1,4,0,1 Cs1,1,1]")
    x = torch.full((1, 1, 4, 4), 5.0)
    m.train()
    o_train, _ = m(x)
    m.eval()
    o_eval, _ = m(x)
    assert torch.allclose(torch.sigmoid(o_train), o_eval)


def test_resize_and_append_output():
    m = build_model("[1,16,0,1 Cr3,3,8 S1(1x0)1,3 O1c5]")
    w = m.nn[-1].lin.weight.detach().clone()
    m.resize_output(7, del_labels=[1])
    assert m.nn[-1].lin.weight.shape == (7, 128)
    assert torch.equal(m.nn[-1].lin.weight[0], w[0]) and torch.equal(m.nn[-1].lin.weight[1], w[2])
    assert m.spec.endswith("O{O_2}1c7]")
    m.append_output(9)
    assert m.spec.endswith("O{O_3}1c9]")
    out, _ = m(torch.rand(1, 1, 16, 10))
    assert out.shape[1] == 9


def test_layers_run_separately():
    m = build_model("[1,16,0,1 Cr3,3,8 Mp2,2 S1(1x0)1,3 Lbx6 O1c5]").eval()
    x, lens = torch.rand(2, 1, 16, 20), torch.tensor([20, 14])
    full, flens = m(x, lens)
    front, mid = m.nn[:3](x, lens)
    rest, rlens = m.nn[3:](front, mid)
    assert torch.allclose(full, rest) and torch.equal(flens, rlens)


@pytest.mark.parametrize("cell", ["L", "G"])
@pytest.mark.parametrize("direction,summarize", [("b", False), ("f", False), ("b", True)])
def test_padded_rnn_matches_packed_sequences(cell, direction, summarize):
    from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

    from scriba.vgsl.layers import TransposedSummarizingRNN

    torch.manual_seed(3)
    rnn = TransposedSummarizingRNN(5, 4, direction, summarize=summarize, cell=cell).eval()
    lens = torch.tensor([11, 4, 7, 11, 1])
    x = torch.rand(5, 5, 1, 11) * (torch.arange(11)[None, :] < lens[:, None])[:, None, None, :]
    with torch.no_grad():
        out, olens = rnn(x, lens)
        packed = pack_padded_sequence(x[:, :, 0].transpose(1, 2), lens, batch_first=True, enforce_sorted=False)
        ref, _ = pad_packed_sequence(rnn.layer(packed)[0], batch_first=True, total_length=11)
    if summarize:
        ref = ref[torch.arange(5), lens - 1][:, None]
        assert olens.tolist() == [1] * 5
    ref = ref.transpose(1, 2)[:, :, None]
    assert out.shape == ref.shape
    assert torch.allclose(out, ref, atol=1e-6)


def test_padded_rnn_trains():
    m = build_model("[1,8,0,1 Cr3,3,4 S1(1x0)1,3 Lbx6 O1c5]").train()
    out, _ = m(torch.rand(3, 1, 8, 20), torch.tensor([20, 9, 14]))
    out.sum().backward()
    assert all(p.grad is not None for p in m.parameters())


def test_batched_inference_runs_in_slices_with_the_same_result():
    from scriba.vgsl import model as model_mod

    m = build_model("[1,16,0,1 Cr3,3,8 Mp2,2 S1(1x0)1,3 Lbx6 O1c5]").eval()
    widths = torch.tensor([20, 120, 57, 119, 3])
    x = torch.rand(5, 1, 16, 120) * (torch.arange(120)[None, :] < widths[:, None])[:, None, None, :]
    with torch.enable_grad():  # one pass (slices are for inference only)
        ref, ref_lens = m(x, widths)
    old = model_mod._SLICE_VALUES
    model_mod._SLICE_VALUES = 2 * 16 * 120  # two lines per slice
    try:
        with torch.no_grad():
            out, lens = m(x, widths)
    finally:
        model_mod._SLICE_VALUES = old
    assert out.shape == ref.shape and torch.equal(lens, ref_lens)
    assert torch.allclose(out, ref.detach(), atol=1e-5)


def test_channels_last_one_channel():
    from scriba.vgsl.layers import channels_last

    x = torch.rand(2, 1, 5, 7)
    y = channels_last(x)
    assert torch.equal(x, y) and y.stride() == (35, 1, 7, 1)
    z = channels_last(torch.rand(2, 3, 5, 7))
    assert z.is_contiguous(memory_format=torch.channels_last)


def test_mask_frames_in_place_for_inference():
    from scriba.vgsl.layers import mask_frames

    x = torch.rand(3, 2, 4, 6)
    lens = torch.tensor([6, 2, 0])
    expected = x * (torch.arange(6)[None, :] < lens[:, None])[:, None, None, :]
    with torch.no_grad():
        assert torch.equal(mask_frames(x.clone(), lens), expected)
    assert mask_frames(x, torch.tensor([6, 6, 6])) is x


def test_loaded_networks_skip_initialisation(monkeypatch):
    # orthogonal initialisation costs seconds of QR decompositions for weights that loading overwrites
    def boom(*a, **k):
        raise AssertionError("initialised")

    monkeypatch.setattr(torch.nn.init, "orthogonal_", boom)
    build_model("[1,8,0,1 Cr3,3,4 S1(1x0)1,3 Lbx6 O1c5]", init=False)
    with pytest.raises(AssertionError):
        build_model("[1,8,0,1 Cr3,3,4 S1(1x0)1,3 Lbx6 O1c5]")


def test_rnn_runs_in_fp32_under_cpu_autocast():
    """bf16 autocast on CPU: convolutions compute in bf16, the LSTM (slow in bf16 on CPUs) in fp32."""
    net = build_model("[1,16,0,1 Cr3,3,8 S1(1x0)1,3 Lbx12 O1c5]")
    conv, rnn = net.nn[0], net.nn[2]
    seen = {}
    conv.register_forward_hook(lambda _m, _i, o: seen.__setitem__("conv", o[0].dtype))
    rnn.register_forward_hook(lambda _m, i, o: seen.__setitem__("rnn", (i[0].dtype, o[0].dtype)))
    x = torch.rand(2, 1, 16, 30)
    for lens in (torch.tensor([30, 30]), torch.tensor([30, 20])):  # unpadded and padded paths
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out, _ = net(x, lens)
        assert seen["conv"] == torch.bfloat16
        assert seen["rnn"] == (torch.bfloat16, torch.float32)
    out.float().sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in net.parameters())
    ref, _ = net(x, torch.tensor([30, 20]))
    assert torch.allclose(out.float(), ref, atol=0.1)


POOLED = "[1,32,0,1 Cr3,3,8 Do0.3,2 Mp2,2 Cl3,3,6 Mp3,3,2,2 Cr3,3,6 Do0.3 Mp2,2 Ct3,3,4 Mp2,2 S1(1x0)1,3 O1c5]"


def _layer_by_layer(m, x, lens):
    for mod in m.nn:
        x, lens = mod(x, lens)
    return x, lens


@pytest.mark.parametrize("widths", [[40, 31, 23], [40, 1, 2]])
def test_activation_behind_pooling_gives_the_same_values_and_gradients(widths):
    # conv, channel dropout, max pool run as conv, pool, activation, dropout; kraken's order, one layer after
    # the other, is the reference (the second case has lines shorter than a pooling window)
    m = build_model(POOLED).train()
    x = torch.zeros(len(widths), 1, 32, max(widths))
    for i, w in enumerate(widths):
        x[i, :, :, :w] = torch.rand(1, 32, w)
    lens = torch.tensor(widths)
    results = []
    for run in (lambda: m(x, lens), lambda: _layer_by_layer(m, x, lens)):
        m.zero_grad()
        torch.manual_seed(3)
        out, olens = run()
        (out * torch.linspace(-1, 1, out.numel()).view_as(out)).sum().backward()
        results.append((out.detach(), olens, [p.grad.clone() for p in m.parameters()]))
    (a, alens, ga), (b, blens, gb) = results
    assert torch.equal(alens, blens)
    assert torch.allclose(a, b, atol=1e-6)
    assert all(torch.allclose(p, q, atol=1e-5) for p, q in zip(ga, gb))
    assert any(g.abs().sum() > 0 for g in ga)


def test_activation_runs_on_the_pooled_tensor(monkeypatch):
    from scriba.vgsl.layers import ActConv2D

    seen = []
    real = ActConv2D.activate
    monkeypatch.setattr(ActConv2D, "activate", lambda self, o: seen.append((self.nl, o.shape[2])) or real(self, o))
    m = build_model(POOLED).train()
    m(torch.rand(1, 1, 32, 40), torch.tensor([40]))
    # Cr and Cl move behind their pooling (heights 32 -> 16, 16 -> 7); Cr before an elementwise dropout and the
    # tanh conv do not
    assert seen == [("r", 16), ("l", 7), ("r", 7), ("t", 3)]


@pytest.mark.parametrize("forced", ["nchw", "nhwc"])
def test_weight_gradients_on_either_layout_agree(monkeypatch, forced):
    from scriba.vgsl import layers

    spec = "[1,24,0,1 Cr3,5,8 Mp2,2 Cr3,5,16,2,1 Cl3,3,8,1,1,2,2 S1(1x0)1,3 O1c5]"
    x, lens = torch.rand(2, 1, 24, 50), torch.tensor([50, 33])
    grads = {}
    backward_calls = []
    real = layers._ConvBlockedWgrad.backward
    monkeypatch.setattr(layers._ConvBlockedWgrad, "backward", lambda ctx, g: backward_calls.append(1) or real(ctx, g))
    for layout in ("default", forced):
        monkeypatch.setattr(layers, "_wgrad_layout", "nchw" if layout == "nchw" else "nhwc")
        torch.manual_seed(0)
        m = build_model(spec).train()
        out, _ = m(x, lens)
        out.square().sum().backward()
        grads[layout] = [p.grad for p in m.parameters()]
    assert all(close_at_scale(a, b) for a, b in zip(grads["default"], grads[forced]))
    # the two convolutions with more than one input channel take the blocked path when it is chosen
    assert len(backward_calls) == (2 if forced == "nchw" else 0)


def test_default_network_on_real_lines_trains_as_layer_by_layer_in_both_layouts(shared_data, monkeypatch):
    # two froc lines of different widths, padded into one batch, through the default network: the fast paths
    # (activation behind pooling, either weight-gradient layout) give kraken's layer-by-layer gradients
    from PIL import Image

    from scriba.config import KRAKEN_SPEC
    from scriba.data.transforms import LineTransform
    from scriba.vgsl import layers

    root = shared_data / "froc_mss"
    paths = [root / p.strip() for p in (root / "splits" / "test.lst").read_text().splitlines()[:2]]
    torch.manual_seed(0)
    m = build_model(KRAKEN_SPEC.replace(" Lbx200 Do0.1,2 Lbx200 Do0.1,2 Lbx200 Do]", " Lbx32 O1c20]")).train()
    tf = LineTransform.from_model_input(m.input, padding=16)
    lines = [tf(Image.open(p)) for p in paths]
    widths = [t.shape[-1] for t in lines]
    assert widths[0] != widths[1]
    x = torch.zeros(2, 1, 120, max(widths))
    for i, t in enumerate(lines):
        x[i, :, :, : t.shape[-1]] = t
    lens = torch.tensor(widths)
    runs = {}
    for name, run, blocked in (
        ("reference", lambda: _layer_by_layer(m, x, lens), False),
        ("nhwc", lambda: m(x, lens), False),
        ("nchw", lambda: m(x, lens), True),
    ):
        monkeypatch.setattr(layers, "_wgrad_layout", "nchw" if blocked else "nhwc")
        m.zero_grad()
        torch.manual_seed(1)
        out, _ = run()
        (out * torch.linspace(-1, 1, out.numel()).view_as(out)).sum().backward()
        runs[name] = (out.detach(), [p.grad.clone() for p in m.parameters()])
    ref_out, ref_grads = runs.pop("reference")
    for out, grads in runs.values():
        assert torch.allclose(out, ref_out, atol=1e-5)
        assert all(close_at_scale(a, b) for a, b in zip(grads, ref_grads))


def test_weight_gradient_layout_is_a_plain_setting_with_a_safe_default(monkeypatch):
    from scriba.vgsl import layers

    monkeypatch.setattr(layers, "_wgrad_layout", layers._wgrad_layout)
    assert layers._wgrad_layout == "nhwc"  # nobody chose: torch's own backward, right on every CPU
    assert layers.set_weight_gradient_layout("nchw") == "nhwc"
    assert layers.set_weight_gradient_layout("nhwc") == "nchw"
    with pytest.raises(ValueError, match="unknown weight-gradient layout 'blocked'"):
        layers.set_weight_gradient_layout("blocked")
    assert layers._wgrad_layout == "nhwc"


def test_close_at_scale_accepts_rounding_and_refuses_a_wrong_element():
    ref = torch.linspace(-250, 250, 1001)
    assert close_at_scale(ref + 5e-4 * torch.randn(1001).sign(), ref)  # the AVX-512 host's reordering noise
    wrong = ref.clone()
    wrong[3] += 0.1  # one element off by a tenth: a real bug, far above float32 rounding
    assert not close_at_scale(wrong, ref)

"""CTC beam search with a label LM: without the LM it is the best path; with it, the LM settles ambiguity."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from scriba.codec import Codec
from scriba.decode import greedy_decode
from scriba.lm.lmfile import write_language_model

pytest.importorskip("flashlight.lib.text.decoder", reason="flashlight-text (scriba[lm]) not installed")

from scriba.lm.beam import BeamDecoder, BeamSettings, ParallelBeamDecoder  # noqa: E402

CODEC = Codec("abcde ")


def _posteriors(rng: np.random.Generator, frames: int, sharp: float = 3.0) -> np.ndarray:
    logits = rng.normal(size=(frames, CODEC.max_label + 1)) * sharp
    return torch.log_softmax(torch.from_numpy(logits), dim=1).numpy().astype(np.float32)


@pytest.fixture(scope="module")
def lm_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("lm") / "chars.arpa"
    write_language_model(["abc abc", "abc cab", "bad abc", "ace"] * 20, CODEC, str(path), order=3)
    return str(path)


def test_without_weight_the_search_finds_the_best_path(lm_path):
    rng = np.random.default_rng(0)
    dec = BeamDecoder(BeamSettings(lm_path, CODEC.max_label, lm_weight=0.0, beam_size=8))
    for _ in range(20):
        lp = _posteriors(rng, int(rng.integers(5, 40)))
        best = greedy_decode(torch.from_numpy(lp.T).unsqueeze(0))[0]
        got = dec.decode(lp)
        assert [s[:3] for s in got] == [s[:3] for s in best]
        assert [s[3] for s in got] == pytest.approx([s[3] for s in best], rel=1e-5)


def test_the_language_model_resolves_an_ambiguous_character(lm_path):
    # frames spelling "ab?" where the third character is c or e with e slightly ahead acoustically; the LM has
    # seen "abc" many times and "abe" never
    rows = []
    a, b = CODEC.c2l["a"][0], CODEC.c2l["b"][0]
    for lab, p in ((a, 0.9), (0, 0.9), (b, 0.9), (0, 0.9)):
        row = np.full(CODEC.max_label + 1, (1 - p) / CODEC.max_label)
        row[lab] = p
        rows.append(row)
    amb = np.full(CODEC.max_label + 1, 0.02)
    amb[CODEC.c2l["c"][0]], amb[CODEC.c2l["e"][0]] = 0.4, 0.5
    rows += [amb, rows[-1]]
    lp = np.log(np.array(rows, dtype=np.float32))
    greedy = CODEC.decode(greedy_decode(torch.from_numpy(lp.T).unsqueeze(0))[0])
    assert "".join(c for c, *_ in greedy) == "abe"
    dec = BeamDecoder(BeamSettings(lm_path, CODEC.max_label, lm_weight=1.0, beam_size=8))
    assert "".join(c for c, *_ in CODEC.decode(dec.decode(lp))) == "abc"


def test_a_label_bonus_counters_deletions(lm_path):
    rng = np.random.default_rng(3)
    lines = [_posteriors(rng, 30, sharp=1.0) for _ in range(10)]
    lengths = []
    for bonus in (0.0, 5.0):
        dec = BeamDecoder(BeamSettings(lm_path, CODEC.max_label, lm_weight=2.0, token_bonus=bonus))
        lengths.append(sum(len(dec.decode(lp)) for lp in lines))
    assert lengths[1] > lengths[0]


def test_worker_processes_decode_as_this_process_does(lm_path):
    rng = np.random.default_rng(1)
    lines = [_posteriors(rng, int(rng.integers(5, 30)), sharp=1.5) for _ in range(12)]
    settings = BeamSettings(lm_path, CODEC.max_label, lm_weight=0.8, token_bonus=0.5)
    with ParallelBeamDecoder(settings, processes=1) as local, ParallelBeamDecoder(settings, processes=2) as pool:
        assert pool.decode_all(lines) == local.decode_all(lines)


def test_the_bonus_is_a_blank_penalty_and_confidences_stay_posteriors(lm_path):
    # the bonus shifts every non-blank frame's score; the reported confidences are the unshifted posteriors
    rng = np.random.default_rng(5)
    lines = [_posteriors(rng, 25, sharp=1.0) for _ in range(6)]
    with_bonus = BeamDecoder(BeamSettings(lm_path, CODEC.max_label, lm_weight=1.0, token_bonus=1.5))
    plain = BeamDecoder(BeamSettings(lm_path, CODEC.max_label, lm_weight=1.0))
    for lp in lines:
        shifted = lp.copy()
        shifted[:, 1:] += 1.5
        spans = with_bonus.decode(lp)
        assert [s[:3] for s in spans] == [s[:3] for s in plain.decode(shifted)]
        for label, start, end, conf in spans:
            assert conf == pytest.approx(float(np.exp(lp[start:end + 1, label].max())), rel=1e-6)
            assert conf <= 1.0

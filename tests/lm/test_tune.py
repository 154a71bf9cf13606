"""The grid search over LM weight and label bonus ranks points by their error count on the given lines."""

from __future__ import annotations

import numpy as np
import pytest

from scriba.codec import Codec
from scriba.lm.lmfile import write_language_model

pytest.importorskip("flashlight.lib.text.decoder", reason="flashlight-text (scriba[lm]) not installed")

from scriba.lm.beam import BeamSettings  # noqa: E402
from scriba.lm.tune import tune_lm  # noqa: E402

CODEC = Codec("abce ")


def _line(text: str, rivals: dict[int, str], rng: np.random.Generator) -> np.ndarray:
    """Posteriors spelling ``text``, where position i also offers ``rivals[i]`` slightly above the truth."""
    rows = []
    for i, ch in enumerate(text):
        row = np.full(CODEC.max_label + 1, 0.01)
        if i in rivals:
            row[CODEC.c2l[ch][0]], row[CODEC.c2l[rivals[i]][0]] = 0.42, 0.5
        else:
            row[CODEC.c2l[ch][0]] = 0.9 + rng.uniform(0, 0.05)
        rows += [row, np.eye(CODEC.max_label + 1)[0] * 0.9 + 0.01]
    return np.log(np.array(rows, dtype=np.float32) / np.array(rows).sum(1, keepdims=True)).astype(np.float32)


def test_the_best_point_uses_the_language_model(tmp_path):
    lm = tmp_path / "lm.arpa"
    write_language_model(["abc abc", "cab abc", "bac"] * 30, CODEC, str(lm), order=3)
    rng = np.random.default_rng(0)
    refs = ["abc", "abc cab", "bac"]
    lines = [_line("abc", {2: "e"}, rng), _line("abc cab", {5: "e"}, rng), _line("bac", {}, rng)]
    seen = []
    points = tune_lm(lines, refs, CODEC, BeamSettings(str(lm), CODEC.max_label), weights=(0.0, 1.0), bonuses=(0.0,),
                     on_point=seen.append)
    assert [p.lm_weight for p in seen] == [0.0, 1.0] and sorted(seen, key=lambda p: p.errors) == points
    by_weight = {p.lm_weight: p for p in points}
    assert by_weight[0.0].errors == 2  # the acoustically favoured rivals
    assert by_weight[1.0].errors == 0 and points[0] is by_weight[1.0]
    assert points[0].cer == 0.0 and by_weight[0.0].cer == pytest.approx(2 / sum(map(len, refs)))


def test_greedy_tally_reads_the_best_path_through_the_normalizer():
    import torch

    from scriba.decode import decode_text
    from scriba.lm.tune import greedy_tally

    rng = np.random.default_rng(1)
    refs = ["abc", "abc cab"]
    lines = [_line("abc", {2: "e"}, rng), _line("abc cab", {}, rng)]
    texts = [decode_text(torch.from_numpy(lp.T.copy())[None], None, CODEC)[0].text for lp in lines]
    assert texts == ["abe", "abc cab"]  # the rival wins the best path
    tally = greedy_tally(lines, refs, CODEC)
    assert (tally.errors, tally.chars) == (1, 10)
    assert greedy_tally(lines, refs, CODEC, normalize=lambda s: s.replace("e", "c")).errors == 0

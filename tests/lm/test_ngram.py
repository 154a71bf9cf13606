"""The label n-gram estimate: hand-computed Kneser-Ney probabilities, normalisation, and KenLM's reading."""

from __future__ import annotations

import math
import random

import pytest

from scriba.lm.ngram import BOS, EOS, UNK, estimate, to_arpa


def _tiny():
    # sentences "a b" and "a" over the vocabulary {a, b, c}: c never occurs
    return estimate([["a", "b"], ["a"]], ["a", "b", "c"], order=2)


def test_bigram_probabilities_match_the_hand_computation():
    m = _tiny()
    # discounts: bigram counts 2,1,1,1 -> D2 = 3 / (3 + 2*1); unigram continuation counts a=1, b=1, </s>=2
    # -> D1 = 2 / (2 + 2*1)
    assert m.discounts[1:] == pytest.approx([0.5, 0.6])
    # unigrams: (cont - 0.5) / 4 + (0.5 * 3 / 4) / 5 (five predictable tokens: a b c </s> <unk>)
    p1 = {w: 10 ** m.logprob((), w) for w in ("a", "b", "c", EOS, UNK)}
    assert p1 == pytest.approx({"a": 0.2, "b": 0.2, "c": 0.075, EOS: 0.45, UNK: 0.075})
    assert m.logprob((), BOS) < -90  # <s> is never predicted
    # after "a" (seen before b and </s>, gamma = 0.6 * 2 / 2): seen tokens interpolate, c backs off
    assert 10 ** m.logprob(("a",), "b") == pytest.approx(0.4 / 2 + 0.6 * 0.2)
    assert 10 ** m.logprob(("a",), EOS) == pytest.approx(0.4 / 2 + 0.6 * 0.45)
    assert 10 ** m.logprob(("a",), "c") == pytest.approx(0.6 * 0.075)
    # after <s> (raw count 2 for "a", gamma = 0.6 * 1 / 2)
    assert 10 ** m.logprob((BOS,), "a") == pytest.approx(1.4 / 2 + 0.3 * 0.2)
    assert 10 ** m.logprob((BOS,), "b") == pytest.approx(0.3 * 0.2)


@pytest.mark.parametrize("order", [1, 2, 3, 6])
def test_every_context_is_a_distribution(order):
    rng = random.Random(order)
    vocab = [str(i) for i in range(1, 9)]
    sents = [[rng.choice(vocab[:6]) for _ in range(rng.randint(1, 12))] for _ in range(150)]
    m = estimate(sents, vocab, order=order)
    contexts = [(), (BOS,), ("1",), ("1", "2"), ("8", "8"), (BOS, "3"), *[tuple(s[:order - 1]) for s in sents[:20]]]
    for ctx in contexts:
        total = sum(10 ** m.logprob(ctx, w) for w in m.vocab if w != BOS)
        assert total == pytest.approx(1.0, abs=1e-9), ctx


def test_arpa_file_is_read_by_kenlm_with_the_same_scores(tmp_path):
    pytest.importorskip("flashlight.lib.text.decoder", reason="flashlight-text (scriba[lm]) not installed")
    from flashlight.lib.text.decoder.kenlm import KenLM
    from flashlight.lib.text.dictionary import Dictionary

    rng = random.Random(0)
    vocab = [str(i) for i in range(1, 8)]
    sents = [[rng.choice(vocab[:5]) for _ in range(rng.randint(1, 9))] for _ in range(200)]
    m = estimate(sents, vocab, order=3)
    path = tmp_path / "lm.arpa"
    path.write_text(to_arpa(m, header=["a header line KenLM must skip"]))
    words = Dictionary()
    for w in ["<blank>", *vocab]:
        words.add_entry(w)
    lm = KenLM(str(path), words)
    state, history = lm.start(False), [BOS]
    for w in ["1", "2", "6", "6", "3"]:  # "6" is never seen: KenLM backs off as the model does
        state, score = lm.score(state, words.get_index(w))
        assert score == pytest.approx(m.logprob(history, w), abs=1e-5)
        history.append(w)
    assert lm.finish(state)[1] == pytest.approx(m.logprob(history, EOS), abs=1e-5)
    assert math.isfinite(m.logprob(history, "7"))

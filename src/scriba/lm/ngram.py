"""Character n-gram language models over a codec's labels, estimated with interpolated Kneser-Ney smoothing
and written as ARPA files (the format KenLM, and so flashlight-text's decoder, reads).

The words of the model are a codec's labels written as decimal numbers (``"17"``), not characters: a codec may
map one character to several labels or several characters to one label, and the decoder searches over labels,
so a model in the label space needs no mapping at decoding time.

Estimation, for the highest order N with raw counts c and for lower orders with continuation counts (the number
of distinct tokens seen before the n-gram; n-grams that begin with ``<s>`` keep raw counts, since nothing can
precede them), with a discount D_n per order::

    p_n(w | h) = max(c(h w) - D_n, 0) / c(h .) + gamma(h) * p_{n-1}(w | h')      gamma(h) = D_n * types(h .) / c(h .)

down to the uniform distribution over the vocabulary (every label of the codec, ``</s>`` and ``<unk>``), so that
labels the transcriptions never use keep some probability. In the ARPA file each seen n-gram carries its
interpolated probability and each seen context its gamma as backoff weight; an unseen token then gets
gamma(h) * p(w | h'), which is exactly the interpolated value.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

BOS, EOS, UNK = "<s>", "</s>", "<unk>"
DEFAULT_ORDER = 6
LOG10_ZERO = -99.0  # ARPA's convention for log10(0): <s> is never predicted


def _discount(counts: Counter) -> float:
    """Ney's estimate D = n1 / (n1 + 2 n2) from the n-grams seen once (n1) and twice (n2)."""
    n1 = sum(1 for v in counts.values() if v == 1)
    n2 = sum(1 for v in counts.values() if v == 2)
    if n1 == 0 or n2 == 0:
        return 0.5
    return min(0.95, max(0.05, n1 / (n1 + 2 * n2)))


@dataclass
class NgramModel:
    """An estimated model: ``prob[n][(h..., w)]`` interpolated probabilities, ``backoff[n][h]`` the gammas."""

    order: int
    vocab: list[str]
    prob: list[dict[tuple[str, ...], float]] = field(default_factory=list)
    backoff: list[dict[tuple[str, ...], float]] = field(default_factory=list)
    discounts: list[float] = field(default_factory=list)

    def logprob(self, context: Sequence[str], word: str) -> float:
        """log10 p(word | context) as an ARPA reader computes it (backing off through the stored contexts)."""
        context = tuple(context)[-(self.order - 1):] if self.order > 1 else ()
        penalty = 0.0
        while True:
            n = len(context) + 1
            p = self.prob[n].get((*context, word))
            if p is not None:
                return penalty + (math.log10(p) if p > 0 else LOG10_ZERO)
            if not context:
                return penalty + math.log10(self.prob[1][(UNK,)])
            gamma = self.backoff[len(context)].get(context)
            if gamma is not None:
                penalty += math.log10(gamma)
            context = context[1:]


def estimate(sentences: Iterable[Sequence[str]], vocab: Iterable[str], order: int = DEFAULT_ORDER) -> NgramModel:
    """Interpolated Kneser-Ney estimate of an ``order``-gram model from token sequences (one per line)."""
    if order < 1:
        raise ValueError("the order of a language model must be at least 1")
    raw: list[Counter] = [Counter() for _ in range(order + 1)]
    for sent in sentences:
        toks = [BOS, *sent, EOS]
        for n in range(1, order + 1):
            # every n-gram that ends at a predicted token (all but <s>) and starts no earlier than <s>
            for i in range(max(1, n - 1), len(toks)):
                raw[n][tuple(toks[i - n + 1 : i + 1])] += 1
    words = sorted(set(vocab) - {BOS, EOS, UNK}, key=lambda t: (len(t), t))
    full_vocab = [BOS, EOS, UNK, *words]
    # counts used at each order: raw at the top and for n-grams that start with <s>, continuation counts below
    counts: list[Counter] = [Counter() for _ in range(order + 1)]
    counts[order] = raw[order]
    for n in range(order - 1, 0, -1):
        cont: Counter = Counter()
        for gram in raw[n + 1]:
            cont[gram[1:]] += 1
        for gram, c in raw[n].items():
            if gram[0] == BOS:
                cont[gram] = c
        counts[n] = Counter({g: v for g, v in cont.items() if g in raw[n]})
    model = NgramModel(order=order, vocab=full_vocab)
    model.prob = [dict() for _ in range(order + 1)]
    model.backoff = [dict() for _ in range(order + 1)]
    model.discounts = [0.0] + [_discount(counts[n]) for n in range(1, order + 1)]
    # unigrams, interpolated with the uniform distribution over what can be predicted (all but <s>)
    d1 = model.discounts[1]
    uni = {g: c for g, c in counts[1].items() if g != (BOS,)}
    total = sum(uni.values())
    predictable = len(full_vocab) - 1
    gamma0 = d1 * len(uni) / total if total else 1.0
    for w in full_vocab:
        if w == BOS:
            model.prob[1][(w,)] = 0.0
            continue
        c = uni.get((w,), 0)
        model.prob[1][(w,)] = (max(c - d1, 0) / total if total else 0.0) + gamma0 / predictable
    for n in range(2, order + 1):
        d = model.discounts[n]
        by_context: dict[tuple[str, ...], dict[str, int]] = defaultdict(dict)
        for gram, c in counts[n].items():
            by_context[gram[:-1]][gram[-1]] = c
        for h, following in by_context.items():
            total_h = sum(following.values())
            gamma = d * len(following) / total_h
            model.backoff[n - 1][h] = gamma
            for w, c in following.items():
                lower = 10 ** model.logprob(h[1:], w)
                model.prob[n][(*h, w)] = (c - d) / total_h + gamma * lower
    return model


def to_arpa(model: NgramModel, header: Sequence[str] = ()) -> str:
    """The model as ARPA text; ``header`` lines are written first as ``#`` comments (KenLM skips them)."""
    out = [f"# {line}" for line in header]
    out += ["", "\\data\\"]
    out += [f"ngram {n}={len(model.prob[n])}" for n in range(1, model.order + 1)]
    for n in range(1, model.order + 1):
        out += ["", f"\\{n}-grams:"]
        for gram, p in sorted(model.prob[n].items()):
            lp = math.log10(p) if p > 0 else LOG10_ZERO
            line = f"{lp:.6f}\t{' '.join(gram)}"
            if n < model.order:
                bo = model.backoff[n].get(gram)
                if bo is not None:
                    line += f"\t{math.log10(bo):.6f}"
            out.append(line)
    out += ["", "\\end\\", ""]
    return "\n".join(out)

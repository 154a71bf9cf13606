"""``ketos lm tune``: the language model's weight and label bonus with the fewest errors on validation lines.

The evaluation path of ``ketos test`` up to the network (the same records, transforms and batches), then each
line's log-posteriors are kept: greedy decoding scores them once, and every point of the (weight, bonus) grid
decodes them again by beam search in ``--threads`` worker processes. Errors are counted as ``ketos test``
counts them, so the best point's CER is what ``ketos test --lm`` reports on these lines with those settings.

Tune on validation lines, not on the test split: a weight chosen on the test lines flatters the test CER.
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from scriba.config import GlobalConfig, LMTuneConfig
from scriba.data.records import SkippedItem
from scriba.errors import NoDataError, UsageError
from scriba.jobs.evaluate.job import evaluation_set, recognizer_for, show_progress, usable_batches
from scriba.jobs.evaluate.report import write_text_atomic
from scriba.metrics import prediction_normalizer

if TYPE_CHECKING:
    from scriba.lm.tune import GridPoint

logger = logging.getLogger(__name__)


@dataclass
class TuneResult:
    """The grid, best point first, beside greedy decoding of the same lines."""

    lm: str
    lines: int
    chars: int
    greedy_errors: int
    grid: list[GridPoint]  # best first
    skipped: list[SkippedItem] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def best(self) -> GridPoint:
        return self.grid[0]

    @property
    def edges(self) -> list[str]:
        """The grid's edges the best point lies on, where a value beyond the grid might do better still
        (``"largest --lm-weights"``...); a weight of 0 is no edge, it turns the language model off."""
        b = self.best
        out = []
        for option, value, values in (
            ("--lm-weights", b.lm_weight, {p.lm_weight for p in self.grid}),
            ("--lm-bonuses", b.token_bonus, {p.token_bonus for p in self.grid}),
        ):
            if len(values) > 1 and value == max(values):
                out.append(f"largest {option}")
            elif len(values) > 1 and value == min(values) and not (option == "--lm-weights" and value == 0):
                out.append(f"smallest {option}")
        return out

    def render(self, rows: int = 10) -> str:
        """The report ``ketos lm tune`` prints: greedy, the best ``rows`` points, the options to use."""
        cer = lambda errors: 100.0 * errors / max(1, self.chars)  # noqa: E731
        out = [
            f"{self.lines} lines, {self.chars} characters; greedy decoding: CER {cer(self.greedy_errors):.2f} % "
            f"({self.greedy_errors} errors)",
            f"{'lm-weight':>10} {'lm-bonus':>9} {'CER %':>7} {'errors':>7}",
        ]
        for p in self.grid[:rows]:
            out.append(f"{p.lm_weight:>10g} {p.token_bonus:>9g} {cer(p.errors):>7.2f} {p.errors:>7d}")
        b = self.best
        change = 100.0 * (self.greedy_errors - b.errors) / max(1, self.greedy_errors)
        out.append(
            f"best: --lm-weight {b.lm_weight:g} --lm-bonus {b.token_bonus:g} "
            f"({abs(change):.1f} % {'fewer' if change >= 0 else 'more'} errors than greedy decoding)"
        )
        if b.errors >= self.greedy_errors:
            out.append("the language model does not help on these lines: decode greedily (ketos test without --lm)")
        if self.edges:
            out.append(f"the best point is on the grid's edge ({', '.join(self.edges)}): try values beyond it")
        if self.skipped:
            out.append(f"{len(self.skipped)} lines left out (first: {self.skipped[0]})")
        return "\n".join(out)

    def to_json(self) -> dict[str, Any]:
        return {
            "lm": self.lm,
            "lines": self.lines,
            "chars": self.chars,
            "greedy_errors": self.greedy_errors,
            "best": {"lm_weight": self.best.lm_weight, "lm_bonus": self.best.token_bonus},
            "edges": self.edges,
            "grid": [
                {"lm_weight": p.lm_weight, "lm_bonus": p.token_bonus, "errors": p.errors, "cer": p.cer}
                for p in self.grid
            ],
            "skipped": [str(s) for s in self.skipped],
            "seconds": round(self.seconds, 2),
        }


def tune_language_model(cfg: LMTuneConfig, g: GlobalConfig | None = None) -> TuneResult:
    """What ``ketos lm tune`` does: the grid of ``cfg`` on ``cfg.test_data`` (validation lines), best first.

    Writes ``cfg.output_json`` when set (temporary name, then rename).
    """
    g = g or GlobalConfig()
    _check(cfg)
    start = time.perf_counter()
    from scriba.lm.beam import BeamDecoder, BeamSettings
    from scriba.lm.lmfile import check_language_model
    from scriba.lm.tune import greedy_tally, tune_lm
    from scriba.weights import load_model

    model = load_model(cfg.model)  # type: ignore[arg-type]  # checked above
    meta = getattr(model, "metadata", {}) or {}
    rec = recognizer_for(model, cfg, g, with_lm=False)  # refuses a model without a codec
    codec: Any = model.codec
    labels = check_language_model(cfg.lm, codec)  # type: ignore[arg-type]  # checked above
    base = BeamSettings(cfg.lm, labels, beam_size=cfg.beam_size)  # type: ignore[arg-type]  # checked above
    BeamDecoder(base)  # a missing flashlight-text or a damaged file is said now, not after the network's pass
    skipped: list[SkippedItem] = []
    records, dataset = evaluation_set(rec, list(cfg.test_data), cfg, meta, skipped)
    log_probs: list[Any] = []
    references: list[str] = []
    with rec.session():
        for batch in usable_batches(rec, dataset, records, skipped, show_progress(g)):
            log_probs.extend(rec.log_posteriors(batch))
            references.extend(batch["texts"])
    if not log_probs:
        raise NoDataError(f"none of the {len(dataset)} validation lines could be read ({skipped[0]})")
    for item in skipped[:5]:
        logger.warning("left out: %s", item)

    normalize = prediction_normalizer(cfg.normalization, cfg.normalize_whitespace)
    greedy = greedy_tally(log_probs, references, codec, normalize)
    grid = tune_lm(
        log_probs,
        references,
        codec,
        base,
        weights=cfg.lm_weights,
        bonuses=cfg.lm_bonuses,
        processes=max(1, g.num_threads),
        normalize=normalize,
        on_point=lambda p: logger.info(
            "lm weight %g, bonus %g: %d errors (%.2f %%)", p.lm_weight, p.token_bonus, p.errors, 100 * p.cer
        ),
    )
    result = TuneResult(
        lm=str(cfg.lm),
        lines=len(log_probs),
        chars=greedy.chars,
        greedy_errors=greedy.errors,
        grid=grid,
        skipped=skipped,
        seconds=time.perf_counter() - start,
    )
    if cfg.output_json:
        write_text_atomic(cfg.output_json, json.dumps(result.to_json(), indent=1, ensure_ascii=False) + "\n")
    return result


def _check(cfg: LMTuneConfig) -> None:
    if not cfg.model:
        raise UsageError("no model given: the language model is tuned for one, give it with -m/--model")
    if not cfg.lm:
        raise UsageError("no language model given: build one with `ketos lm build`, give it with --lm")
    if not cfg.test_data:
        raise UsageError("no validation lines were given: use -e/--evaluation-data or pass files as arguments")
    for name, values, low in (("--lm-weights", cfg.lm_weights, 0.0), ("--lm-bonuses", cfg.lm_bonuses, -math.inf)):
        if not values:
            raise UsageError(f"{name} is empty: give at least one value")
        bad = [v for v in values if not isinstance(v, (int, float)) or not math.isfinite(v) or v < low]
        if bad:
            raise UsageError(f"{name} must hold finite numbers{' >= 0' if low == 0 else ''}, got {bad[0]!r}")

"""The benchmark's sections, by the names ``--only`` takes; each measures with a :class:`~bench.session.Bench`."""

from __future__ import annotations

from bench.sections.accuracy import section_accuracy, section_defaults, section_scratch
from bench.sections.interop import section_crosscer, section_interop
from bench.sections.speed import section_compile, section_eval, section_peak, section_train

# accuracy and scratch before defaults: kraken's 10-epoch run at its defaults can then serve as its
# time-to-accuracy run too (see accuracy.accuracy_run_at_defaults)
SECTIONS = {"peak": section_peak, "compile": section_compile, "eval": section_eval, "train": section_train,
            "accuracy": section_accuracy, "scratch": section_scratch, "defaults": section_defaults,
            "crosscer": section_crosscer, "interop": section_interop}

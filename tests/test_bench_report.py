"""What bench/RESULTS.md claims: the report rendered from typed records (bench/report/).

The fixture ``tests/fixtures/bench/results-short-2026-12-01.json`` holds the records behind the RESULTS.md of
2026-12-01 (AVX2-only host), rebuilt from its figures because bench/work/ is not kept: before bench/run.py
was split (471117d), its renderer turned them into that RESULTS.md byte for byte, which is the reference here.
"""

from __future__ import annotations

import copy
import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.report import Results, render, write_results  # noqa: E402
from bench.run import parser  # noqa: E402
from bench.settings import settings  # noqa: E402

FIX = ROOT / "tests" / "fixtures" / "bench"
DATA = Path("/work/shared/data")


def _records() -> list[dict]:
    return json.loads((FIX / "results-short-2026-12-01.json").read_text(encoding="utf-8"))


def _cli(*argv: str):
    return settings(parser().parse_args(list(argv)))


def _results(records: list[dict], *argv: str) -> Results:
    """The records as ``--report-only`` sees them: the settings their run recorded over the command line's."""
    res = Results.recorded(records, _cli(*argv), "short")
    res.data, res.root = DATA, Path("/repo")
    return res


def _summary(text: str) -> dict[str, list[str]]:
    """The summary table's rows by their first cell."""
    body = text.split("## Summary\n", 1)[1].split("\n## ", 1)[0]
    rows = [ln.strip("|").split(" | ") for ln in body.splitlines() if ln.startswith("| ") and "---" not in ln]
    return {r[0].strip(): [c.strip() for c in r[1:]] for r in rows[1:]}


def test_stored_records_render_todays_results_byte_for_byte():
    expected = (FIX / "RESULTS-short-2026-12-01.md").read_text(encoding="utf-8")
    assert render(_results(_records())) == expected


def test_report_describes_the_recorded_run_not_the_command_line():
    # the run was `--only defaults --tta --keep --tta-factor 3.05`; a plain --report-only must still say so
    text = render(_results(_records(), "--tta-factor", "4"))
    assert "kraken's budget is capped at 3.05x scriba's time" in text
    assert "except the hours-long runs asked for by name" in text
    assert "defaults 2:00" not in text  # the --tta run had no box on the defaults section


def test_summary_ratios_are_medians_of_the_repeats():
    recs = [r for r in _records() if r.get("section") != "compile"]
    for r, (kraken, scriba) in enumerate(((10.0, 30.0), (12.0, 42.0))):
        for tool, lps, lines in (("kraken", kraken, 100), ("scriba", scriba, 99)):
            recs.append({"name": f"c_{tool}_{r}", "section": "compile", "job": "froc_path", "tool": tool,
                         "repeat": r, "ok": True, "lines_per_s": lps, "lines": lines, "cmd": "x"})
    row = _summary(render(_results(recs)))["compile lines/s, froc_mss val (path), `--workers 2`"]
    # medians 11 and 36: 3.27x, the 3x goal met; the line counts differ and the verdict says so
    assert row[:3] == ["10.0 / 11.0", "30.0 / 36.0", "3.27x"]
    assert row[4] == "**met**; lines written 100 / 99 (**differ**)"


def test_training_goals_compare_with_krakens_best_setting():
    rows = _summary(render(_results(_records())))
    b1 = rows["training lines/s, default spec, -B 1, fp32"]
    assert b1[3:] == [">= 1.5x kraken's best setting (fp32)", "**met** (vs kraken's best 1.88 lines/s: 2.24x)"]
    b16 = rows["training lines/s, default spec, -B 16, fp32"]
    assert b16[2] == "3.50x" and b16[4].startswith("**met** (vs kraken's best 1.88 lines/s: 2.50x; 1.5x goal met)")
    bf16 = rows["training lines/s, scriba `--precision bf16-mixed`"]
    assert bf16[-1].startswith("not applicable: this CPU has no native bf16")


def test_slower_scriba_is_not_met():
    recs = _records()
    for r in recs:
        if r.get("section") == "train" and r.get("tool") == "scriba" and r.get("batch") == 16:
            r["lines_per_s"] = 3.9  # kraken's -B 16 median is 1.34 lines/s: 2.91x, under the 3x goal
    row = _summary(render(_results(recs)))["training lines/s, default spec, -B 16, fp32"]
    assert row[2] == "2.91x" and row[4].startswith("**not met**")


def test_time_to_accuracy_is_a_lower_bound_when_kraken_stops_at_its_budget():
    rows = _summary(render(_results(_records())))
    row = rows["time to val CER < 15 % at defaults (s)"]
    assert row == ["not reached in 5010 (best val CER 90.8 %)", "1635", ">= 3.06x speed-up",
                   "scriba >= 3x faster (issue 7 acc. 2)", "**met** (lower bound)"]
    eq = rows["time to kraken's best val accuracy within its run (9.2 %), defaults (s)"]
    assert eq[:3] == ["3815", "853", "4.47x speed-up"]


def test_time_to_accuracy_not_run_names_the_command():
    recs = [r for r in _records() if r.get("section") != "defaults"]
    row = _summary(render(_results(recs)))["time to val CER < 15 % at defaults"]
    assert "`python3 bench/run.py --only defaults --tta --keep --tta-factor 3.05`" in row[-1]


def test_equal_epochs_verdicts_follow_the_half_point_limit():
    recs = _records()
    row = _summary(render(_results(recs)))
    key = next(k for k in row if k.startswith("test CER at equal epochs"))
    assert row[key][2:] == ["+0.26 points", "scriba <= kraken + 0.5 points (issues 5, 7)", "**met**"]
    for r in recs:
        if r.get("section") == "accuracy_test" and r.get("tool") == "scriba":
            r["cer"] = 0.0430  # 0.57 points above kraken's 3.73 %
    row = _summary(render(_results(recs)))[key]
    assert row[2:] == ["+0.57 points", "scriba <= kraken + 0.5 points (issues 5, 7)", "**not met**"]


def test_eval_errors_must_match_krakens():
    recs = _records()
    key = "`ketos test` errors (model_froc, published test)"
    assert _summary(render(_results(recs)))[key][-1].startswith("**met**; characters 13426")
    for r in recs:
        if r.get("section") == "eval" and r.get("tool") == "scriba" and r.get("batch") == 16:
            r["errors"] = 1076
    row = _summary(render(_results(recs)))[key]
    assert row[1] == "1075,1076" and row[-1].startswith("**not met**")


def test_crosscer_fails_beyond_ten_per_cent():
    recs = _records()
    for r in recs:
        if r.get("section") == "crosscer_test" and r.get("tester") == "kraken":
            r["cer"] = 0.95  # 13.5 % above scriba's 83.71 %
    text = render(_results(recs))
    assert "relative difference 13.5 % (limit 10 %): **FAIL" in text
    assert _summary(text)[next(k for k in _summary(text) if k.startswith("cross-system"))][2] == "13.5 % relative"


def test_bf16_rows_on_a_native_bf16_host():
    recs = _records()
    for r in recs:
        if r.get("section") == "meta":
            r["cpu_flags"] = "avx2 avx512f avx512_bf16"
    for rep, lps in enumerate((8.0, 8.4)):
        recs.append({"name": f"bf16_{rep}", "section": "train_bf16", "tool": "scriba", "batch": 1, "repeat": rep,
                     "ok": True, "lines_per_s": lps, "gflops_per_s": 150.0, "last_val_cer": 0.5, "cmd": "x"})
    rows = _summary(render(_results(recs)))
    assert "training lines/s, scriba `--precision bf16-mixed`" not in rows
    row = rows["training lines/s, -B 1, scriba `--precision bf16-mixed`"]
    # median 8.2 against kraken's best 1.877: 4.37x, the 3x goal met
    assert row[:3] == ["(fp32 best 1.88)", "8.00 / 8.20", "4.37x vs kraken's best"]
    assert row[4].startswith("**met**")


def test_failures_and_measurements_left_out_are_listed():
    recs = _records()
    assert render(_results(recs)).endswith("## Failures\n\nnone\n\n")
    bad = copy.deepcopy(next(r for r in recs if r["name"] == "cross_test_by_kraken"))
    bad.update(name="cross_again", ok=False, status="exit 1", tail="$ (cd x && ketos)\nTraceback\nValueError: boom")
    recs += [bad, {"name": "interop_late", "section": "interop", "ok": False, "not_run": True, "cmd": "x",
                   "status": "not run (time budget spent)"}]
    text = render(_results(recs))
    assert "## Not run (time box)\n\n`interop_late`\n" in text
    failures = text.split("## Failures\n", 1)[1]
    assert "### cross_again: exit 1" in failures and "Traceback\nValueError: boom" in failures
    assert "$ (cd" not in failures and "interop_late" not in failures


def test_write_results_replaces_the_file(tmp_path):
    out = tmp_path / "RESULTS.md"
    out.write_text("old")
    write_results(_results(_records()), out)
    assert out.read_text(encoding="utf-8") == (FIX / "RESULTS-short-2026-12-01.md").read_text(encoding="utf-8")
    assert [p.name for p in tmp_path.iterdir()] == ["RESULTS.md"]


def test_write_results_keeps_the_hand_measured_sections(tmp_path):
    from bench.report import HAND_MEASURED

    out = tmp_path / "RESULTS.md"
    hand = f"{HAND_MEASURED}\n\n## legacy polygons\n\n417 of 417\n"
    out.write_text("an older report\n\n" + hand)
    write_results(_results(_records()), out)
    text = out.read_text(encoding="utf-8")
    assert "an older report" not in text and text.endswith(hand)
    assert text.startswith((FIX / "RESULTS-short-2026-12-01.md").read_text(encoding="utf-8"))


@pytest.mark.parametrize("profile", ["quick", "full"])
def test_records_without_settings_use_the_command_lines(profile):
    recs = [r for r in _records() if r.get("section") != "meta"]
    text = render(_results(recs, "--profile", profile))
    assert ("**Quick mode:**" in text) == (profile == "quick")
    assert "**Short profile**" not in text


@pytest.mark.parametrize("content, message", [
    (None, "no results to report"),
    ('[{"name": "x"', "cannot read the results"),
    ('{"name": "x"}', "not a list of benchmark records"),
])
def test_unreadable_results_end_with_one_line(tmp_path, content, message):
    from bench.run import load_records

    path = tmp_path / "results.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(SystemExit) as exc:
        load_records(path)
    assert str(exc.value).startswith(f"{path}: {message}") and "\n" not in str(exc.value)

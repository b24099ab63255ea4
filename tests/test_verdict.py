"""The held-out verdict reads validation and test together and never contradicts either."""

from __future__ import annotations

import pytest

from depth_lora.evaluation.report import METHODS, EvaluationReport, paired_comparison
from depth_lora.evaluation.verdict import held_out_verdict, kept_checkpoint_line, plain_reading


def report_of(split: str, fine_tuned_mm: list[float], zero_shot_mm: list[float], sessions: int = 3):
    """A split's report built the way run_evaluation builds it, from per-capture RMSEs (the other
    rows: the zero-shot values, so every row exists)."""
    per_method = {m: [{"rmse_mm": z} for z in zero_shot_mm] for m in METHODS}
    per_method["fine_tuned"] = [{"rmse_mm": f} for f in fine_tuned_mm]
    mean = {m: {"rmse_mm": sum(r["rmse_mm"] for r in rows) / len(rows), "captures": len(rows)}
            for m, rows in per_method.items()}
    return EvaluationReport(split=split, mean=mean, pooled={}, comparison=paired_comparison(per_method),
                            sessions=sessions)


# Twelve captures each, fine-tuned clearly better (-100 mm), clearly worse (+100 mm), or mixed.
BETTER = ([100.0 + i for i in range(12)], [200.0 + i for i in range(12)])
WORSE = ([300.0 + i for i in range(12)], [200.0 + i for i in range(12)])
MIXED = ([150.0, 250.0] * 6, [200.0] * 12)


@pytest.mark.parametrize(("val", "test", "verdict"), [
    (BETTER, BETTER, "paid_off"),
    (WORSE, WORSE, "did_worse"),
    (WORSE, BETTER, "withheld"),  # quickstart's case: validation says worse, test says better
    (BETTER, WORSE, "withheld"),
    (MIXED, BETTER, "withheld"),  # one split within the noise
    (BETTER, MIXED, "withheld"),
])
def test_fine_tuning_pays_off_only_when_both_held_out_splits_say_so(val, test, verdict):
    said, text = held_out_verdict(report_of("test", *test), report_of("val", *val))
    assert said == verdict
    assert ("paid off" in text) == (verdict == "paid_off")
    assert ("did worse" in text) == (verdict == "did_worse")
    assert ("No verdict" in text) == (verdict == "withheld")
    assert "validation" in text and "test" in text  # both splits' evidence is shown


def test_disagreeing_splits_say_so_and_what_would_settle_it():
    _, text = held_out_verdict(report_of("test", *BETTER), report_of("val", *WORSE))
    assert "validation and test disagree" in text and "more sessions" in text
    assert "+100.0" in text and "-100.0" in text


def test_one_split_alone_gives_no_verdict():
    assert held_out_verdict(report_of("test", *BETTER), None)[0] == "withheld"
    assert held_out_verdict(None, report_of("val", *BETTER))[0] == "withheld"
    assert held_out_verdict(None, None)[0] == "withheld"


def test_a_verdict_on_few_captures_or_one_session_is_called_anecdotal():
    few = report_of("test", [100.0, 101.0, 102.0], [200.0, 201.0, 203.0], sessions=1)
    said, text = held_out_verdict(few, report_of("val", *BETTER))
    assert said == "paid_off" and "anecdotal" in text and "3 captures (test)" in text
    said, text = held_out_verdict(report_of("test", *BETTER), report_of("val", *BETTER))
    assert said == "paid_off" and "anecdotal" not in text


def test_the_plain_reading_names_the_kept_checkpoint_and_never_adds_its_own_verdict():
    val = {"step": 120, "rmse_mm": 886.7, "evaluations": 10, "last_step": 400, "last_rmse_mm": 1151.4,
           "global_step": 400}
    kept = kept_checkpoint_line(val)
    assert kept.startswith("Kept: the checkpoint of step 120 of 400, the lowest validation RMSE (886.7 mm")
    assert "best of 10 validations" in kept and "the last, step 400, had 1151.4 mm" in kept
    text = plain_reading(report_of("test", *BETTER), report_of("val", *WORSE), kept)
    assert text.startswith(kept) and "No verdict" in text
    assert "paid off" not in text and "better here" not in text  # the one-split reading is left out


def _hole_report(gain_over_start_mm: float, captures: int = 12, image_guided_mm: float | None = None):
    """A completion run's hole rows: harmonic, the completer before fine-tuning 3 mm better, the
    completer `gain_over_start_mm` better still (each capture a little different); and the
    image-guided `default` fill `image_guided_mm` below harmonic, if given."""
    from types import SimpleNamespace

    rows = []
    for i in range(captures):
        harmonic = 30.0 + i
        start = harmonic - 3.0 + 0.1 * (i % 3)
        values = {"harmonic": harmonic, "completer_start": start,
                  "completer": start - gain_over_start_mm + 0.05 * (i % 2)}
        if image_guided_mm is not None:
            values["default"] = harmonic - image_guided_mm
        rows += [{"capture": f"c{i}", "kind": "blobs", "method": m, "metrics": {"rmse_mm": v}}
                 for m, v in values.items()]
    return SimpleNamespace(captures=rows)


def test_a_completer_verdict_says_when_its_gain_over_harmonic_is_its_start_not_training():
    from depth_lora.evaluation.verdict import completion_verdict

    verdict, text = completion_verdict(_hole_report(0.0), _hole_report(0.0))
    assert verdict == "paid_off" and "The gain is its start" in text and "not training" in text
    verdict, text = completion_verdict(_hole_report(4.0), _hole_report(4.0))  # training: 4 of 7 mm
    assert verdict == "paid_off" and "The gain is its start" not in text and "Most of the gain" not in text
    assert text.count("from training") == 2
    # Training cleared the noise but added a tenth of the gain: the start earned the rest, and it says so.
    verdict, text = completion_verdict(_hole_report(0.3), _hole_report(0.3))
    assert verdict == "paid_off" and "Most of the gain is its start" in text
    assert "training added 9% (validation) and 9% (test) of it" in text
    assert "complete --classical" not in text  # no default row scored: nothing said about it


def test_a_completer_verdict_names_the_image_guided_fill_when_it_does_better():
    from depth_lora.evaluation.verdict import completion_verdict

    _, text = completion_verdict(_hole_report(0.3, image_guided_mm=15.0), _hole_report(0.3))
    line = next(x for x in text.splitlines() if "complete --classical" in x)
    assert "scored 20.5 mm against the completer's 32.3 mm" in line and "the better fill here" in line
    _, text = completion_verdict(_hole_report(4.0, image_guided_mm=1.0), _hole_report(4.0))
    line = next(x for x in text.splitlines() if "complete --classical" in x)
    assert "the better fill here" not in line

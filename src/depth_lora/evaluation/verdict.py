"""The held-out verdict: did fine-tuning pay off? Read from the validation and the test split
together, so that what quickstart, the notebook and `evaluate` say can never contradict either.

Each split gives a paired difference, fine_tuned minus zero_shot_calibrated RMSE, with a 95 %
bootstrap interval over its captures. Fine-tuning "paid off" only when both intervals lie below
zero; it "did worse" only when both lie above; anything else withholds the verdict and says what
would settle it. Validation chose the kept checkpoint, so it leans towards the fine-tuned model:
it can veto a verdict, never make one on its own.
"""

from __future__ import annotations

from dataclasses import dataclass

from depth_lora.evaluation.report import ANECDOTE_CAPTURES, EvaluationReport, interpret_report
from depth_lora.text import plural

COMPARISON = "fine_tuned_minus_zero_shot_calibrated_rmse_mm"
VERDICTS = ("paid_off", "did_worse", "withheld")


@dataclass
class SplitReading:
    """One held-out split's paired difference and what it says."""

    split: str
    captures: int
    sessions: int
    fine_tuned_mm: float
    zero_shot_mm: float
    diff_mm: float
    ci95: tuple[float, float]

    @property
    def name(self) -> str:
        return {"val": "validation"}.get(self.split, self.split)

    @property
    def reading(self) -> str:
        lo, hi = self.ci95
        return "better" if hi < 0 else "worse" if lo > 0 else "tie"

    def line(self) -> str:
        lo, hi = self.ci95
        words = {"better": "fine-tuned better", "worse": "fine-tuned worse", "tie": "within the noise"}
        sessions = f", {plural(self.sessions, 'session')}" if self.sessions else ""
        return (f"  {self.name:<10} {plural(self.captures, 'capture')}{sessions}: fine_tuned "
                f"{self.fine_tuned_mm:.1f} mm vs zero_shot_calibrated {self.zero_shot_mm:.1f} mm, "
                f"difference {self.diff_mm:+.1f} [{lo:+.1f}, {hi:+.1f}]: {words[self.reading]}")


def split_reading(report: EvaluationReport | None) -> SplitReading | None:
    """The paired comparison of one split's report; None where it has none (no captures, a
    scale-invariant run, a folder without the zero-shot calibration)."""
    if report is None or report.relative or COMPARISON not in report.comparison or not report.count:
        return None
    lo, hi = report.comparison[f"{COMPARISON}_ci95"]
    return SplitReading(report.split, report.count, report.sessions,
                        report.mean["fine_tuned"]["rmse_mm"], report.mean["zero_shot_calibrated"]["rmse_mm"],
                        report.comparison[COMPARISON], (lo, hi))


def held_out_verdict(test: EvaluationReport | None, val: EvaluationReport | None) -> tuple[str, str]:
    """(verdict, text): one of VERDICTS and the lines that say it, with each split's evidence."""
    readings = [r for r in (split_reading(val), split_reading(test)) if r is not None]
    if not readings:
        return "withheld", ("No verdict: there is no held-out split with a calibrated zero-shot row to "
                            "compare with (see the table's notes).")
    lines = ["Fine-tuned against what you could do without fine-tuning (RMSE difference, 95 % interval "
             "over captures):", *(r.line() for r in readings)]
    said = {r.split: r.reading for r in readings}
    if len(said) < 2:
        missing = "validation" if "val" not in said else "test"
        verdict = "withheld"
        lines.append(f"No verdict: there is no {missing} split to confirm it. Add captures (from more "
                     "sessions) so that both held-out splits hold some.")
    elif set(said.values()) == {"better"}:
        verdict = "paid_off"
        lines.append("Verdict: fine-tuning paid off; both held-out splits agree.")
    elif set(said.values()) == {"worse"}:
        verdict = "did_worse"
        lines.append("Verdict: fine-tuning did worse than not fine-tuning; both held-out splits agree.")
    else:
        verdict = "withheld"
        agree = "disagree" if {"better", "worse"} <= set(said.values()) else "do not both clear the noise"
        lines.append(f"No verdict: validation and test {agree}, so these captures cannot say whether "
                     "fine-tuning pays off. Add captures from more sessions (10 or more held-out "
                     "captures from several sessions) and train again.")
    small = [r for r in readings if r.captures < ANECDOTE_CAPTURES or r.sessions == 1]
    if small and verdict != "withheld":
        lines.append("  Only " + " and ".join(f"{plural(r.captures, 'capture')} ({r.name})" for r in small)
                     + ": anecdotal; confirm it on 10 or more held-out captures from several sessions.")
    return verdict, "\n".join(lines)


def kept_checkpoint_line(val: dict) -> str:
    """Which checkpoint was kept and why, from metrics.json's "val" entry."""
    if "step" not in val:
        return "Kept: the model at the end of training (no validation step was logged)."
    total = val.get("global_step")
    line = (f"Kept: the checkpoint of step {val['step']}" + (f" of {total}" if total else "")
            + f", the lowest validation RMSE ({val['rmse_mm']:.1f} mm at the model's input size")
    if val.get("evaluations"):
        line += f", best of {plural(val['evaluations'], 'validation')}"
    if val.get("last_step") is not None and val["last_step"] != val["step"]:
        line += f"; the last, step {val['last_step']}, had {val['last_rmse_mm']:.1f} mm"
    line += ")."
    if val.get("stopped_early"):
        line += (f" Training stopped at step {total} of {val['max_steps']}: no better validation in "
                 f"{plural(val['stopped_early'], 'evaluation')} (--early-stopping).")
    return line


def plain_reading(test: EvaluationReport | None, val: EvaluationReport | None,
                  kept: str | None = None, shown: EvaluationReport | None = None) -> str:
    """What quickstart, the notebook and `evaluate` print under the table: the kept checkpoint,
    the verdict from both held-out splits, then what the other rows of `shown` (the table above
    it; default: the test split's) say."""
    lines = [kept] if kept else []
    lines.append(held_out_verdict(test, val)[1])
    shown = shown or test or val
    if shown is not None:
        lines.append(interpret_report(shown, compare=False))
    return "\n".join(lines)


def completion_reading(report, split: str, baseline: str = "harmonic") -> SplitReading | None:
    """A completion run's paired comparison on one split's hole report (evaluation.holes.HoleReport):
    the completer's RMSE on hidden pixels minus `baseline`'s, averaged over each capture's hole
    kinds, with a bootstrap interval over captures. None without both rows."""
    from depth_lora.numeric.metrics import bootstrap_ci95

    if report is None:
        return None
    rows = {(r["capture"], r["kind"], r["method"]): r["metrics"]["rmse_mm"] for r in report.captures}
    per_capture: dict[str, list[tuple[float, float]]] = {}
    for (capture, kind, method), rmse in rows.items():
        if method == "completer" and (capture, kind, baseline) in rows:
            per_capture.setdefault(capture, []).append((rmse, rows[capture, kind, baseline]))
    if not per_capture:
        return None
    ours = [sum(a for a, _ in pairs) / len(pairs) for pairs in per_capture.values()]
    theirs = [sum(b for _, b in pairs) / len(pairs) for pairs in per_capture.values()]
    diffs = [a - b for a, b in zip(ours, theirs, strict=True)]
    return SplitReading(split, len(diffs), 0, sum(ours) / len(ours), sum(theirs) / len(theirs),
                        sum(diffs) / len(diffs), tuple(bootstrap_ci95(diffs)))


def _mean_rmse(report, method: str) -> float | None:
    """A hole report's mean RMSE of one method over its (capture, kind) rows; None if it has none."""
    values = [r["metrics"]["rmse_mm"] for r in (report.captures if report is not None else [])
              if r["method"] == method]
    return sum(values) / len(values) if values else None


def completion_verdict(test, val) -> tuple[str, str]:
    """(verdict, text) for a completion run, like `held_out_verdict`: the learned completer against
    the harmonic fill on the hidden pixels of held-out captures; both splits must agree."""
    readings = [r for r in (completion_reading(val, "val"), completion_reading(test, "test"))
                if r is not None]
    if not readings:
        return "withheld", "No verdict: no held-out split was scored."
    lines = ["The learned completer against the harmonic fill, on hidden pixels (RMSE difference over all "
             "hole kinds, 95 % interval over captures):"]
    for r in readings:
        lo, hi = r.ci95
        words = {"better": "completer better", "worse": "completer worse", "tie": "within the noise"}
        lines.append(f"  {r.name:<10} {plural(r.captures, 'capture')}: completer {r.fine_tuned_mm:.1f} mm vs "
                     f"harmonic {r.zero_shot_mm:.1f} mm, difference {r.diff_mm:+.1f} [{lo:+.1f}, {hi:+.1f}]: "
                     f"{words[r.reading]}")
    starts = [completion_reading(report, split, baseline="completer_start")
              for split, report in (("val", val), ("test", test))]
    for start in filter(None, starts):  # what training itself changed
        lo, hi = start.ci95
        lines.append(f"  {start.name:<10} against the completer before fine-tuning "
                     f"({start.zero_shot_mm:.1f} mm): {start.diff_mm:+.1f} [{lo:+.1f}, {hi:+.1f}] "
                     "from training")
    trained = all(s is not None and s.reading == "better" for s in starts)  # on both splits
    said = {r.reading for r in readings}
    if len(readings) < 2:
        verdict = "withheld"
        lines.append("No verdict: one held-out split only.")
    elif said == {"better"}:
        verdict = "paid_off"
        start = "(the completer before fine-tuning returns its multi-scale harmonic prompt)"
        # Training's share of the gain over harmonic, per split (both scored: `trained`).
        shares = [s.diff_mm / r.diff_mm for s, r in zip(starts, readings, strict=True)] if trained else []
        if not trained:
            why = (f". The gain is its start {start}, not training: training did not clear the noise on "
                   "both splits.")
        elif max(shares) < 0.5:  # under half on both splits: the start earned the rest
            added = " and ".join(f"{share:.0%} ({r.name})" for share, r in zip(shares, readings, strict=True))
            why = f". Most of the gain is its start {start}: training added {added} of it."
        else:
            why = "."
        lines.append("Verdict: the completer fills held-out holes better than harmonic; both splits "
                     f"agree{why}")
    elif said == {"worse"}:
        verdict = "did_worse"
        lines.append("Verdict: the completer fills held-out holes worse than harmonic; both splits agree. "
                     "Fill without it (`complete --classical`), or train on more captures.")
    else:
        verdict = "withheld"
        lines.append("No verdict: the two held-out splits do not both clear the noise.")
    default, learned = (_mean_rmse(test, method) for method in ("default", "completer"))
    if default is not None and learned is not None:
        lines.append("Without any model, the image-guided fill (`complete --classical`) scored "
                     f"{default:.1f} mm against the completer's {learned:.1f} mm on the test split's hidden "
                     "pixels"
                     + ("; it is the better fill here." if default < learned else "."))
    small = [r for r in readings if r.captures < ANECDOTE_CAPTURES]
    if small:
        lines.append("  Only " + " and ".join(f"{plural(r.captures, 'capture')} ({r.name})" for r in small)
                     + ": anecdotal; confirm it on 10 or more held-out captures.")
    return verdict, "\n".join(lines)

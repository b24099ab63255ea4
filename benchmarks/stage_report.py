"""Print where and how long each stage of a finished run ran its model (its stages.json), and fail
if a stage ran off the device it should have: the GPU check's rule.

    python benchmarks/stage_report.py RUN_FOLDER --expect cuda

Exit 1 (one line per stage at fault) when a stage that runs the model ran a forward on another
device type than --expect (a GPU run's calibration left on the CPU, say), ran none, or when a stage
the run should have is missing; 2 when the folder has no stages.json.
"""

from __future__ import annotations

import argparse
import sys

from depth_lora.runs.folder import read_stages
from depth_lora.training.stages import stage_faults

EXPECTED_STAGES = ("calibration", "training", "held_out")  # a depth run's, in order


def faults(stages: dict, expect: str) -> list[str]:
    """One line per stage that ran its model off the `expect` device type, ran none, or is missing."""
    found = stages["stages"]
    lines = [f"{name}: missing (the run has {', '.join(found) or 'no stage'})"
             for name in EXPECTED_STAGES if name not in found]
    return lines + [f"{name}: {why}" for name, why in stage_faults(found, expect).items()]


def report_lines(stages: dict) -> list[str]:
    lines = [f"run device {stages['device']}, precision {stages['precision']}",
             f"{'stage':<12} {'device':<10} {'precision':<10} {'forwards':>8} {'seconds':>9}"]
    for name, entry in stages["stages"].items():
        lines.append(f"{name:<12} {','.join(entry.get('devices', [])) or '-':<10} "
                     f"{','.join(entry.get('precisions', [])) or '-':<10} {entry.get('forwards', 0):>8} "
                     f"{entry.get('seconds', 0):>9.2f}")
        if "first_step_s" in entry:
            lines.append(f"{'':<12} first step {entry['first_step_s']:.3f} s, steady steps "
                         f"{entry['step_s']:.4f} s (median of {entry['steps'] - 1}), "
                         f"{entry['evaluations']} evaluations {entry['evaluation_s']:.2f} s")
    return lines


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", help="a finished training run's folder")
    parser.add_argument("--expect", choices=("cuda", "cpu"), required=True,
                        help="the device type every stage must have run its model on")
    args = parser.parse_args(argv)
    stages = read_stages(args.run)
    if stages is None:
        print(f"{args.run}: no stages.json (not a finished run of this version)", file=sys.stderr)
        return 2
    print("\n".join(report_lines(stages)))
    problems = faults(stages, args.expect)
    for line in problems:
        print(f"STAGE OFF DEVICE: {line}", file=sys.stderr)
    print(f"stages: {'FAILED' if problems else 'every stage ran its model on ' + args.expect}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())

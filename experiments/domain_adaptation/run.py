"""The domain-adaptation experiment and its metric-head follow-up, from a source checkout:

    python experiments/domain_adaptation/run.py --out DIR            # 75 min on 2 AVX2 cores + pretraining
    python experiments/domain_adaptation/run.py --out DIR --heads    # after it: metric heads, ~20 minutes
    python experiments/domain_adaptation/run.py --out DIR --completion  # after it: hole completion
    python experiments/domain_adaptation/run.py --out DIR --quick    # every step at toy size, ~11 minutes
    python experiments/domain_adaptation/run.py --out DIR --resume   # go on after an interruption

After each stage (data, pretrain, selection, final, curve, structure) DIR/results.json and table.md
hold what is finished. `--pretrained demo-pretrained` starts from the shipped model, which is this
experiment's own pretraining stage from an earlier run, instead of pretraining again (~22 minutes).

Research code: it imports depth_lora, never the reverse (see experiment.py for the protocol).
"""

import argparse
import sys
from pathlib import Path

from completion import format_completion, run_completion_arm
from experiment import format_table, run_experiment
from heads import run_head_comparison

from depth_lora.errors import DepthLoraError


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="new folder for data, models, results and figures")
    parser.add_argument("--quick", action="store_true",
                        help="every step at toy size (smoke test): about 11 minutes instead of ~70")
    parser.add_argument("--resume", action="store_true",
                        help="continue an interrupted experiment in OUT, reusing every finished run")
    parser.add_argument("--pretrained", metavar="FOLDER",
                        help="a model folder from an earlier run's pretraining stage ('demo-pretrained': the "
                        "shipped one) instead of pretraining again")
    parser.add_argument("--heads", action="store_true",
                        help="after a full run in OUT: add the pretrained model with a metric head (3 m and "
                        "20 m ranges) beside the relative recipe, chosen and scored the same way (~15 min)")
    parser.add_argument("--completion", action="store_true",
                        help="after a full run in OUT: the completion arm (a completion model trained on the "
                        "training captures' hidden holes, chosen on validation, scored on the test captures' "
                        "hidden pixels against classical fills)")
    args = parser.parse_args(argv)
    try:
        if args.completion:
            arm = run_completion_arm(args.out)
            print(format_completion(arm))
            print(f"written: {Path(args.out) / 'completion.json'}, {Path(args.out) / 'completion_curve.png'}")
            return 0
        if args.heads:
            summary = run_head_comparison(args.out)["summary"]
            for head, row in summary.items():
                print(f"{head:<24} test RMSE {row['mean']:.1f} mm (seeds: "
                      f"{', '.join(f'{v:.1f}' for v in row['test_rmse_mm'])}), lr {row['learning_rate']:g}")
            print(f"written: {Path(args.out) / 'heads.json'}")
            return 0
        results = run_experiment(args.out, quick=args.quick, resume=args.resume,
                                 pretrained_from=args.pretrained)
    except DepthLoraError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(format_table(results["rows"], results["chosen"], results["targets"]))
    print(f"done in {results['seconds'] / 60:.1f} min ({len(results['rows'])} result rows: selection on "
          f"validation, final test scores, learning curve); results, table and figures in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""`pixprompt compare`: its arguments and its handler."""
from __future__ import annotations

import argparse

from pixprompt.cli.options import add_format_options, confidence_level, positive_int
from pixprompt.cli.registry import command
from pixprompt.errors import UsageError


def _compare_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("results", nargs="+", help="JSON results files (eval/bench --output FILE.json): the first "
                                                   "holds the baselines, each dataset's first record")
    parser.add_argument("--confidence", type=confidence_level, default=0.95, metavar="LEVEL",
                        help="the confidence of the intervals (default 0.95)")
    parser.add_argument("--bootstrap", type=positive_int, default=1000, metavar="N",
                        help="resamples of the paired bootstrap (default 1000, seeded)")
    add_format_options(parser)


@command("compare", "is the difference real? records of several runs paired on the same images", _compare_arguments)
def run_compare(args: argparse.Namespace) -> int:
    from pixprompt.evaluation.intervals import BootstrapSettings, compare_runs
    from pixprompt.reports import emit
    from pixprompt.reports.html import load_records

    if len(args.results) < 2:
        raise UsageError("compare needs two results files or more: the baseline's, then the others'")
    baseline = load_records(args.results[:1])
    others = [record for path in args.results[1:] for record in load_records([path])]
    rows = compare_runs(baseline, others, BootstrapSettings(args.confidence, args.bootstrap))
    if not rows:
        raise UsageError("no record pairs: the files share no dataset with per-image correctness (records written "
                         "by pixprompt eval or bench of this release)")
    shown = [{"dataset": r["dataset"], "baseline": r["baseline"], "record": r["record"],
              "Δ top1 %": round(100 * r["difference"], 2), "low %": round(100 * r["low"], 2),
              "high %": round(100 * r["high"], 2), "McNemar p": r["mcnemar_p"], "Holm p": r["holm_p"],
              "real": "yes" if r["real"] else "no"} for r in rows]
    emit(rows if args.format == "json" else shown, args.format,
         None if args.format == "json" else list(shown[0]),
         title=f"top-1 against the baseline, on the same images ({100 * args.confidence:g} % intervals)")
    return 0

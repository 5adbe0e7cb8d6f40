"""`pixprompt eval`: its arguments and its handler."""
from __future__ import annotations

import argparse

from pixprompt.cli.options import (
    add_data_options,
    add_method_options,
    add_model_options,
    add_probability_options,
    add_prompt_options,
    add_run_options,
    calibration_from_args,
    check_run_outputs,
    dataset_from_args,
    decoded_as_asked,
    methods_from_args,
    model_from_args,
    prompt_sets_from_args,
    settings_from_args,
)
from pixprompt.cli.output import report_records
from pixprompt.cli.registry import command


def _eval_arguments(parser: argparse.ArgumentParser) -> None:
    add_model_options(parser)
    add_data_options(parser)
    add_prompt_options(parser, None)
    add_method_options(parser, "every test image")
    add_run_options(parser)
    parser.add_argument("--examples", type=int, metavar="N",
                        help="keep N example images per class (up to 12 classes) with their top-3 in the results "
                             "(default: 4 with --report, else 0)")
    add_probability_options(parser, "also report the share of images whose top-1 probability reaches P (the rest "
                                     "would be `unknown`) and the accuracy on them")


@command("eval", "zero-shot accuracy of a model on a dataset, for one or more template sets", _eval_arguments)
def run_eval(args: argparse.Namespace) -> int:
    from pixprompt.prompts.ensembling import get_ensembler

    check_run_outputs(args)
    dataset = dataset_from_args(args)
    prompt_sets = prompt_sets_from_args(args, dataset.classnames, default=dataset.default_templates)
    ensembles = [mode.strip() for mode in args.ensemble.split(",")]
    for mode in ensembles:
        get_ensembler(mode)  # refuse a typo before the model loads
    methods, hierarchy = methods_from_args(args)
    from pixprompt.evaluation import evaluate  # torch: only once the arguments are sound

    calibration = calibration_from_args(args)
    model = model_from_args(args)
    examples = args.examples if args.examples is not None else 4 if args.report else 0
    settings = settings_from_args(args, strict=args.strict, examples_per_class=examples,
                                  min_probability=args.min_probability, hierarchy=hierarchy,
                                  calibration=calibration and decoded_as_asked(args, calibration, model))
    records = evaluate(model, decoded_as_asked(args, dataset, model), prompt_sets, ensembles, settings, methods)
    report_records(args, records)
    return 0

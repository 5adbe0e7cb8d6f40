"""`pixprompt baseline`: its arguments and its handler."""
from __future__ import annotations

import argparse

from pixprompt.cli.options import (
    add_batch_options,
    add_data_options,
    add_run_options,
    check_run_outputs,
    dataset_from_args,
    decoded_as_asked,
    settings_from_args,
)
from pixprompt.cli.output import report_records
from pixprompt.cli.registry import command


def _baseline_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--weights", default="IMAGENET1K_V1,IMAGENET1K_V2",
                        help="ResNet-50 weights, comma-separated (default: both)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    add_batch_options(parser)
    add_data_options(parser)
    add_run_options(parser)


@command("baseline", "supervised torchvision ResNet-50 on ImageNet or an ImageNet-subset folder",
         _baseline_arguments)
def run_baseline(args: argparse.Namespace) -> int:
    from pixprompt.evaluation.baseline import evaluate_supervised, load_resnet50
    from pixprompt.models.device import resolve_device

    check_run_outputs(args)
    dataset = dataset_from_args(args)
    device = resolve_device(args.device)
    settings = settings_from_args(args)
    records = []
    for name in args.weights.split(","):
        model = load_resnet50(name.strip(), device)
        record = evaluate_supervised(model, decoded_as_asked(args, dataset, model), settings)
        records += [record] if record else []  # None on ranks other than 0
    report_records(args, records)
    return 0

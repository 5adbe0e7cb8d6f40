"""`pixprompt probe`: its arguments and its handler."""
from __future__ import annotations

import argparse

from pixprompt.cli.options import (
    add_data_options,
    add_model_options,
    add_prompt_options,
    add_run_options,
    check_run_outputs,
    dataset_from_args,
    decoded_as_asked,
    model_from_args,
    positive_int,
    prompt_sets_from_args,
    settings_from_args,
)
from pixprompt.cli.output import is_main_rank, write_table_outputs
from pixprompt.cli.registry import command
from pixprompt.errors import UsageError
from pixprompt.reports.tables import Layout


def _probe_arguments(parser: argparse.ArgumentParser) -> None:
    add_model_options(parser)
    add_data_options(parser)
    train = parser.add_argument_group("few-shot training")
    train.add_argument("--train-dataset", required=True, help="dataset spec of the training images (same classes)")
    train.add_argument("--train-data-dir", help="--data-dir of the training dataset")
    train.add_argument("--shots", default="1,2,4,8,16", help="images per class, comma-separated; `all` for every "
                                                              "training image (default 1,2,4,8,16)")
    train.add_argument("--seeds", type=positive_int, default=3, metavar="N",
                       help="random draws per shot count, averaged, with their spread (default 3)")
    train.add_argument("--methods", default="linear,linear-zs-init,tip-adapter",
                       help="linear (the CLIP paper's probe), linear-zs-init, tip-adapter (default: all three)")
    train.add_argument("--resnet50", metavar="WEIGHTS",
                       help="also probe torchvision ResNet-50 features (IMAGENET1K_V1 or IMAGENET1K_V2) on the same "
                            "draws, the CLIP paper's comparison")
    add_prompt_options(parser, None)
    add_run_options(parser)


@command("probe", "few-shot linear probes and Tip-Adapter on cached features, beside zero-shot", _probe_arguments)
def run_probe(args: argparse.Namespace) -> int:
    from pixprompt.data.datasets import DatasetOptions, load_dataset
    from pixprompt.methods.shots import shots_list

    check_run_outputs(args)
    try:
        shots = shots_list(args.shots)
    except ValueError as error:
        raise UsageError(f"--shots: {error}") from None
    test = dataset_from_args(args)
    train = load_dataset(args.train_dataset, DatasetOptions(args.train_data_dir))
    prompt_sets = prompt_sets_from_args(args, test.classnames, default=test.default_templates)
    if len(prompt_sets) > 1:
        raise UsageError("probe compares with one zero-shot classifier: give a single --templates set")
    from pixprompt.evaluation.probing import probe_records, summary, zero_shot_sentence
    from pixprompt.models.device import resolve_device

    model = model_from_args(args)
    supervised = None
    if args.resnet50:
        from pixprompt.evaluation.baseline import load_resnet50

        supervised = load_resnet50(args.resnet50, resolve_device(args.device), penultimate=True)
    records = probe_records(model, decoded_as_asked(args, train, model), decoded_as_asked(args, test, model),
                            prompt_sets[0], shots, args.seeds, [m.strip() for m in args.methods.split(",")],
                            supervised, settings=settings_from_args(args))
    if not is_main_rank():
        return 0
    from pixprompt.reports import emit

    rows = summary(records)
    columns = ["method", "shots", "draws", "score %", "± %", "metric"]
    if args.format == "json":
        emit(records, "json")
    else:
        emit(rows, args.format, columns, title=f"{test.name}: mean over draws (± their standard deviation)",
             layout=Layout(elide=("method",)))
        sentence = zero_shot_sentence(rows)
        if sentence and args.format == "table":
            print(sentence)
    write_table_outputs(args, records, rows, columns)
    return 0

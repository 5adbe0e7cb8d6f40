"""`pixprompt classify`: its arguments and its handler."""
from __future__ import annotations

import argparse
import logging
import os
import sys

from pixprompt import progress
from pixprompt.cli.options import (
    add_cache_options,
    add_format_options,
    add_method_options,
    add_model_options,
    add_probability_options,
    add_prompt_options,
    cache_from_args,
    calibration_from_args,
    check_writable,
    decoded_as_asked,
    methods_from_args,
    model_from_args,
    positive_int,
    probability,
    prompt_sets_from_args,
)
from pixprompt.cli.output import is_main_rank
from pixprompt.cli.registry import command
from pixprompt.errors import UsageError
from pixprompt.reports.tables import Layout
from pixprompt.storage import write_output

log = logging.getLogger("pixprompt")


# -- classify -------------------------------------------------------------------------------------
def _classify_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("inputs", nargs="+", help="image files, folders (recursive) or glob patterns")
    add_model_options(parser)
    labels = parser.add_argument_group("labels")
    labels.add_argument("--labels", "-l", help="comma-separated class names")
    labels.add_argument("--labels-file", help="text file with one class name per line (UTF-8)")
    labels.add_argument("--dataset", help="use a dataset's class names (imagenet, cifar10, …)")
    add_prompt_options(parser, None)
    add_method_options(parser, "each shard's images (${PIXPROMPT_SHARD_SIZE}, 1024 by default)")
    parser.add_argument("--top-k", "-k", type=positive_int, default=5, help="classes shown per image (default 5)")
    parser.add_argument("--multi-label", action="store_true",
                        help="list every class whose probability reaches --threshold instead of the top k (natural "
                             "for SigLIP's sigmoid; CLIP's softmax shares 100%% among classes: use a low threshold)")
    parser.add_argument("--threshold", type=probability, default=0.5, metavar="P",
                        help="with --multi-label: the probability a class needs (default 0.5)")
    add_probability_options(parser, "open set: an image whose top-1 probability is below P is labelled `unknown` "
                                    "(its `prediction`; its top classes stay listed)")
    parser.add_argument("--classifier", help="classifier file: loaded if it matches, else built and saved")
    parser.add_argument("--output", "-o", metavar="FILE",
                        help="write the predictions to FILE (.jsonl, .csv or .parquet) shard by shard instead of "
                             "stdout: memory stays flat for millions of images, and the same command again after "
                             "a crash finishes the file, every image exactly once")
    add_cache_options(parser.add_argument_group("cache"))
    add_format_options(parser)


def _classnames_from_args(args: argparse.Namespace) -> tuple[list[str], str | None]:
    """Class names and the default template set that comes with them."""
    from pixprompt.prompts import parse_labels

    if args.dataset:
        if args.labels or args.labels_file:
            raise UsageError("give class names by --dataset or by --labels/--labels-file, not both")
        from pixprompt.data.catalog import dataset_classnames

        return dataset_classnames(args.dataset)
    return parse_labels(args.labels, args.labels_file), None


@command("classify", "classify images with class names and prompt templates", _classify_arguments)
def run_classify(args: argparse.Namespace) -> int:
    from pixprompt.data.images import check_inputs

    classnames, dataset_templates = _classnames_from_args(args)
    prompt_sets = prompt_sets_from_args(args, classnames, default=dataset_templates or "standard")
    methods, hierarchy = methods_from_args(args)
    if len(methods) > 1:
        raise UsageError("classify scores each image one way: give a single --method")
    scoring = (methods[0], hierarchy)
    if args.classifier and len(prompt_sets) > 1:
        raise UsageError("--classifier stores one template set: give a single --templates set with it")
    if args.classifier:
        check_writable(args.classifier, "--classifier", (".safetensors",))
    if args.output:
        from pixprompt.reports.predictions import SUFFIXES, require_writer

        check_writable(args.output, "--output", SUFFIXES)
        require_writer(args.output)
    check_inputs(args.inputs)
    if args.multi_label and args.min_probability is not None:
        raise UsageError("--min-probability labels an image by its top class: with --multi-label, --threshold "
                         "already leaves out every class below it")
    output = None
    if args.output and is_main_rank():  # one run at a time writes an output: refused at once, before any work
        from pixprompt.reports.predictions import PredictionFile

        output = PredictionFile(args.output, len(classnames) if args.multi_label else min(args.top_k,
                                                                                          len(classnames)),
                                prediction=args.min_probability is not None)
    try:
        return _classify(args, classnames, prompt_sets, output, scoring)
    finally:
        if output is not None:
            output.close()


def _classify(args: argparse.Namespace, classnames: list[str], prompt_sets: list, output,
              scoring: tuple[str, dict | None]) -> int:
    """classify after its arguments are checked (and its --output locked, when rank 0 writes one); `scoring`: the
    label-free method and the hierarchy it may need."""
    from pixprompt.data.images import iter_images
    from pixprompt.reports import emit

    calibration = calibration_from_args(args)
    from pixprompt import distributed  # torch: only once the arguments are sound
    from pixprompt.evaluation.label_free import MethodContext
    from pixprompt.evaluation.predict import iter_predictions
    from pixprompt.evaluation.scoring import text_classifier
    from pixprompt.prompts.store import classifier_for

    model = model_from_args(args)
    ranks = distributed.current()
    if calibration:
        from pixprompt.features.cache import extract_features

        calibration = decoded_as_asked(args, calibration, model)
        calibration_features = extract_features(model, calibration, cache_from_args(args), args.batch_size,
                                                 args.workers)
    if len(classnames) == 1 and model.scoring == "softmax":
        log.warning("only one class (%s): a softmax over one class gives it 100%% for every image; add the "
                    "classes it should be told apart from", classnames[0])
    # the text side is built once, by rank 0, which scores every image
    classifiers = [classifier_for(model, classnames, prompt_set, args.classifier) if args.classifier
                   else text_classifier(model, classnames, prompt_set, cache_from_args(args))
                   for prompt_set in prompt_sets] if ranks.is_main else []
    if calibration and ranks.is_main:
        from dataclasses import replace

        from pixprompt.evaluation.calibration import temperature_on

        classifiers = [replace(c, temperature=temperature_on(model, calibration, calibration_features, p,
                                                             cache_from_args(args), args.ensemble))
                       for c, p in zip(classifiers, prompt_sets)]
        if not args.quiet:
            for prompt_set, classifier in zip(prompt_sets, classifiers):
                print(f"pixprompt: {prompt_set.name}: temperature {classifier.temperature:.4g} fitted on "
                      f"{calibration.name} (probabilities are the model's scores / T)", file=sys.stderr)
    stream = iter_predictions(model, classifiers, iter_images(args.inputs), args.top_k, args.ensemble,
                              args.batch_size, args.workers, jpeg_draft=args.draft_jpeg, max_pixels=args.max_pixels,
                              cache_root=cache_from_args(args), threshold=args.threshold if args.multi_label else None,
                              method=scoring[0], context=MethodContext(model, cache_root=cache_from_args(args),
                                                                       hierarchy=scoring[1]))
    if output is not None:
        settings = {"model": model.info.identity, "weights": model.weights_stamp, "classnames": classnames,
                    "prompts": [[p.name, list(p.templates), sorted(p.descriptions.items())] for p in prompt_sets],
                    "top_k": args.top_k, "ensemble": args.ensemble, "method": scoring[0],
                    "draft_jpeg": args.draft_jpeg,
                    "max_pixels": args.max_pixels, "threshold": args.threshold if args.multi_label else None,
                    "min_probability": args.min_probability,
                    "temperatures": [c.temperature for c in classifiers]}
        output.begin(settings)
    rows: list[dict] = []  # kept only for stdout, when there is no --output file
    images = failed = 0
    try:
        for number, shard, per_set in stream:
            images, failed = _write_shard(args, output, prompt_sets, rows, number, shard, per_set, images, failed)
    except KeyboardInterrupt:
        if output is not None:  # rows of finished shards are kept whether or not features are cached
            log.warning("%s: the rows of the %d shard(s) finished so far are kept in %s; the same command writes the "
                        "others and joins them", args.output, len(output.joined), output.parts)
        raise
    if not ranks.is_main:
        return 0
    if not images:
        raise UsageError(f"no images found in {', '.join(args.inputs)}")
    if output is not None:
        write_output(output.finish, args.output)
        if not args.quiet:
            sets = progress.counted(len(prompt_sets), "template set")
            print(f"pixprompt: {progress.counted(images, 'image')} × {sets} written to {args.output}", file=sys.stderr)
    elif args.format == "json":
        emit(rows, "json")
    elif args.format == "csv":  # the columns and units of `-o FILE.csv`
        from pixprompt.reports.predictions import csv_columns, csv_row

        width = len(classnames) if args.multi_label else min(args.top_k, len(classnames))
        emit([csv_row(row) for row in rows], "csv", csv_columns(width, args.min_probability is not None))
    else:
        table, columns = _classify_table(rows, several_sets=len(prompt_sets) > 1, once=args.format == "table",
                                         threshold=args.threshold if args.multi_label else None)
        emit(table, args.format, columns, layout=Layout(elide=("image", "templates"), droppable=("rank",)))
    if failed:
        log.error("%d of %s could not be classified", failed, progress.counted(images, "image"))
        return 1
    return 0


def _write_shard(args: argparse.Namespace, output, prompt_sets: list, rows: list[dict], number: int, shard: list,
                 per_set: list, images: int, failed: int) -> tuple[int, int]:
    """One shard's rows: kept for stdout, or written as a part of --output unless an earlier run wrote it; the
    running counts of images and of those that could not be classified."""
    from pixprompt.data.datasets import files_identity

    shard_rows = [prediction.row(prompt_set.name, args.min_probability)
                  for prompt_set, predictions in zip(prompt_sets, per_set) for prediction in predictions]
    if output is None:
        rows += shard_rows
    elif not output.has(number, identity := files_identity(shard)):
        write_output(lambda: output.write(number, identity, shard_rows), args.output)
    return images + len(shard), failed + sum(prediction.error is not None for prediction in per_set[0])


def _classify_table(rows: list[dict], several_sets: bool, once: bool,
                    threshold: float | None = None) -> tuple[list[dict], list[str]]:
    """One row per (image, rank) with the probability in percent; `once`: the image named on its first row only;
    with a multi-label `threshold`, an image with no class reaching it says so.

    The templates column shows only for several template sets, the error column only when an image failed.
    """
    table = []
    for row in rows:
        image = _shown_path(row["image"]) if once else row["image"]
        for rank, top in enumerate(row.get("top", [])):
            table.append({"image": image if rank == 0 or not once else "", "templates": row["templates"],
                          "prediction": row.get("prediction") if rank == 0 or not once else "",
                          "rank": rank + 1, "label": top["label"],
                          "probability %": round(100 * top["probability"], 2)})
        if threshold is not None and not row.get("top") and "error" not in row:
            table.append({"image": image, "templates": row["templates"],
                          "label": f"(no class reaches {100 * threshold:g}%)"})
        if "error" in row:  # a table names the kind of error; its full text is logged and in --json/--csv
            error = row["error"].split(":", 1)[0] if once and len(row["error"]) > 30 else row["error"]
            table.append({"image": image, "templates": row["templates"], "error": error})
    columns = ["image", "templates", "prediction", "rank", "label", "probability %", "error"]
    if not several_sets:
        columns.remove("templates")
    if not any("prediction" in row for row in rows):
        columns.remove("prediction")
    if not any("error" in row for row in rows):
        columns.remove("error")
    return table, columns


def _shown_path(path: str) -> str:
    """A path as a table shows it: relative to the working folder when it lies inside it."""
    relative = os.path.relpath(path) if os.path.isabs(path) else path
    return path if relative.startswith("..") else relative

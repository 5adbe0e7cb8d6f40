"""The `pixprompt` command: one sub-command per job, registered in COMMANDS."""
from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from pixprompt import progress
from pixprompt.data.images import DEFAULT_MAX_PIXELS
from pixprompt.errors import PixpromptError, UsageError
from pixprompt.reports.tables import SUMMARY_LAYOUT, Layout
from pixprompt.storage import write_output

log = logging.getLogger("pixprompt")


@dataclass(frozen=True)
class Command:
    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]


COMMANDS: dict[str, Command] = {}


def command(name: str, help: str, add_arguments: Callable[[argparse.ArgumentParser], None]):
    """Register a sub-command's handler under `name`."""
    def register(run: Callable[[argparse.Namespace], int]):
        COMMANDS[name] = Command(help, add_arguments, run)
        return run
    return register


# -- argument types: a bad value is a usage error (exit 2) before anything is loaded ------------------
def positive_int(text: str) -> int:
    value = _int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def non_negative_int(text: str) -> int:
    value = _int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, not {value}")
    return value


def probability(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"expected a probability in (0, 1], got {text!r}")
    return value


def port_number(text: str) -> int:
    value = _int(text)
    if not 1 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"{value} is not a TCP port (1–65535)")
    return value


def pixel_count(text: str) -> int:
    """A number of pixels, plain (64000000) or in megapixels (64M)."""
    megapixels = text.strip().upper().endswith("M")
    try:
        value = float(text.strip()[:-1]) * 1e6 if megapixels else float(_int(text))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a pixel count (e.g. 64000000 or 64M)") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1 pixel, not {text}")
    return int(value)


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None


# -- shared option groups ---------------------------------------------------------------------------
def add_model_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("model")
    group.add_argument("--model", "-m", required=True,
                       help="open_clip name (ViT-B-32), hf-hub:org/repo, local-dir:PATH, a transformers id "
                            "(openai/clip-vit-base-patch32) or a local model folder")
    group.add_argument("--pretrained", "-p", help="open_clip pretrained tag (openai, laion2b_s34b_b79k, webli…)")
    group.add_argument("--backend", choices=["open_clip", "transformers"], help="override backend detection")
    group.add_argument("--device", default="auto", help="auto (default), cpu, cuda, cuda:N or mps")
    group.add_argument("--precision", default="auto", choices=["auto", "fp32", "fp16", "bf16"],
                       help="auto: fp16 on CUDA, fp32 elsewhere")
    group.add_argument("--weights-dir", help="where model weights are downloaded (default: the HF cache)")
    group.add_argument("--accelerate", metavar="NAME",
                       help="optional faster image path: compile, channels-last or onnx (CPU); used only "
                            "if it reproduces the eager embeddings")
    add_batch_options(group)


def add_batch_options(group: argparse._ActionsContainer) -> None:
    group.add_argument("--batch-size", type=positive_int,
                       help="images per batch (default: 32 on CPU, 256 on CUDA; halved on out-of-memory)")
    group.add_argument("--workers", type=non_negative_int,
                       help="image decoding processes (default: cores − 1, at most 8; none on 2 cores or fewer)")
    group.add_argument("--max-pixels", type=pixel_count, default=DEFAULT_MAX_PIXELS, metavar="N",
                       help="skip images larger than this many pixels, before decoding them (default 64M: "
                            "8000×8000; 64M and 64000000 both work)")
    group.add_argument("--draft-jpeg", action="store_true",
                       help="decode large JPEGs at 1/2–1/8 scale, never below the model's input size: several "
                            "times faster decoding, slightly different pixels (results cached apart; opt-in)")


def add_prompt_options(parser: argparse.ArgumentParser, default_templates: str | None) -> None:
    group = parser.add_argument_group("prompts")
    group.add_argument("--templates", "-t", default=default_templates,
                       help="comma-separated template sets (raw, standard, clip80, clip7, imagenet, or a dataset's "
                            "CLIP-paper set: cifar10, food101, sun397, …) or files (one template per line, or a JSON "
                            "list); one result per set")
    group.add_argument("--descriptions", help="JSON file mapping each class to a list of sentences (CuPL)")
    group.add_argument("--ensemble", default="embedding",
                       help="how a class's prompts are combined: embedding (default), logits or vote "
                            "(eval takes a comma-separated list)")


def add_probability_options(parser: argparse.ArgumentParser, open_set: str) -> None:
    group = parser.add_argument_group("probabilities")
    group.add_argument("--calibrate", metavar="VALSET",
                       help="temperature-scale the probabilities, the temperature fitted (by negative log-likelihood) "
                            "on this dataset spec, e.g. folder:/data/val (with its own classes and the same "
                            "templates); it changes no prediction")
    group.add_argument("--calibrate-data-dir", metavar="DIR", help="--data-dir of the --calibrate dataset")
    group.add_argument("--min-probability", type=probability, metavar="P", help=open_set)


def calibration_from_args(args: argparse.Namespace):
    """The --calibrate dataset (its images decoded as the evaluated ones are), or None."""
    from pixprompt.data.datasets import DatasetOptions, load_dataset

    if not args.calibrate:
        return None
    if "vote" in [e.strip() for e in getattr(args, "ensemble", "embedding").split(",")]:
        raise UsageError("--calibrate fits a temperature to probabilities, and vote ensembling gives vote shares: "
                         "use --ensemble embedding or logits with it")
    return load_dataset(args.calibrate, DatasetOptions(args.calibrate_data_dir))


def add_format_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--json", dest="format", action="store_const", const="json", help="JSON on stdout")
    group.add_argument("--csv", dest="format", action="store_const", const="csv", help="CSV on stdout")
    group.add_argument("--markdown", dest="format", action="store_const", const="markdown",
                       help="Markdown table on stdout")
    parser.set_defaults(format="table")


def model_from_args(args: argparse.Namespace):
    from pixprompt.models import load_model

    return load_model(args.model, args.pretrained, backend=args.backend, device=args.device,
                      precision=args.precision, cache_dir=args.weights_dir, accelerate=args.accelerate)


def prompt_sets_from_args(args: argparse.Namespace, default: str = "standard"):
    from pixprompt.prompts import load_descriptions, resolve_templates

    sets = resolve_templates(args.templates or default) if (args.templates or not args.descriptions) else []
    if args.descriptions:
        sets.append(load_descriptions(args.descriptions))
    return sets


# -- models ---------------------------------------------------------------------------------------
def _models_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--filter", "-f", default="", help="only entries containing this text")
    add_format_options(parser)


@command("models", "list loadable models with their facts (nothing is downloaded)", _models_arguments)
def run_models(args: argparse.Namespace) -> int:
    from pixprompt.models.catalog import list_models
    from pixprompt.paths import cache_root
    from pixprompt.reports import emit

    rows = [info.to_dict() for info in list_models(args.filter, cache_root() / "model_catalog.json")]
    if not rows:
        raise UsageError(f"no model matches {args.filter!r}: try a shorter --filter")
    # columns by importance: a narrow terminal drops the last ones first
    emit(rows, args.format, ["name", "pretrained", "backend", "params", "image_size", "scoring", "quick_gelu",
                             "embed_dim", "context_length"],
         layout=Layout(keys=2, whole=("name", "pretrained"), stack=False,
                       droppable=("context_length", "embed_dim", "scoring", "image_size", "quick_gelu", "backend")))
    return 0


# -- classify -------------------------------------------------------------------------------------
def _classify_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("inputs", nargs="+", help="image files, folders (recursive) or glob patterns")
    add_model_options(parser)
    labels = parser.add_argument_group("labels")
    labels.add_argument("--labels", "-l", help="comma-separated class names")
    labels.add_argument("--labels-file", help="text file with one class name per line (UTF-8)")
    labels.add_argument("--dataset", help="use a dataset's class names (imagenet, cifar10, …)")
    add_prompt_options(parser, None)
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
    prompt_sets = prompt_sets_from_args(args, default=dataset_templates or "standard")
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
                                                                                          len(classnames)))
    try:
        return _classify(args, classnames, prompt_sets, output)
    finally:
        if output is not None:
            output.close()


def _classify(args: argparse.Namespace, classnames: list[str], prompt_sets: list, output) -> int:
    """classify after its arguments are checked (and its --output locked, when rank 0 writes one)."""
    from pixprompt.data.images import iter_images
    from pixprompt.reports import emit

    calibration = calibration_from_args(args)
    from pixprompt import distributed  # torch: only once the arguments are sound
    from pixprompt.data.datasets import files_identity
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
                              cache_root=cache_from_args(args), threshold=args.threshold if args.multi_label else None)
    if output is not None:
        settings = {"model": model.info.identity, "weights": model.weights_stamp, "classnames": classnames,
                    "prompts": [[p.name, list(p.templates), sorted(p.descriptions.items())] for p in prompt_sets],
                    "top_k": args.top_k, "ensemble": args.ensemble, "draft_jpeg": args.draft_jpeg,
                    "max_pixels": args.max_pixels, "threshold": args.threshold if args.multi_label else None,
                    "min_probability": args.min_probability,
                    "temperatures": [c.temperature for c in classifiers]}
        output.begin(settings)
    rows: list[dict] = []  # kept only for stdout, when there is no --output file
    images = failed = 0
    for number, shard, per_set in stream:
        shard_rows = [prediction.row(prompt_set.name, args.min_probability)
                      for prompt_set, predictions in zip(prompt_sets, per_set) for prediction in predictions]
        images += len(shard)
        failed += sum(prediction.error is not None for prediction in per_set[0])
        if output is None:
            rows += shard_rows
        elif not output.has(number, identity := files_identity(shard)):
            write_output(lambda: output.write(number, identity, shard_rows), args.output)  # noqa: B023
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
    else:
        table, columns = _classify_table(rows, several_sets=len(prompt_sets) > 1, once=args.format == "table",
                                         threshold=args.threshold if args.multi_label else None)
        emit(table, args.format, columns, layout=Layout(elide=("image", "templates"), droppable=("rank",)))
    if failed:
        log.error("%d of %s could not be classified", failed, progress.counted(images, "image"))
        return 1
    return 0


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


# -- datasets -------------------------------------------------------------------------------------
def _datasets_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--filter", metavar="TEXT",
                        help="only datasets whose name, title, suite or group contains TEXT (e.g. vtab, imagenet)")
    add_format_options(parser)


@command("datasets", "the named datasets and suites: classes, templates, how each is obtained (downloads nothing)",
         _datasets_arguments)
def run_datasets(args: argparse.Namespace) -> int:
    from pixprompt.data.catalog import SUITES, catalog, listing, suite
    from pixprompt.reports import emit
    from pixprompt.reports.tables import json_text

    wanted = (args.filter or "").lower()
    rows = [row for row in map(listing, catalog().values())
            if wanted in " ".join([row["name"], row["title"], *row["suites"], row["group"] or ""]).lower()]
    suites = [{"suite": name, "datasets": len(suite(name)), "what": what} for name, what in SUITES.items()
              if wanted in f"{name} {what}".lower() or any(name in row["suites"] for row in rows)]
    if args.format == "json":
        print(json_text({"datasets": rows, "suites": suites}))
        return 0
    short_metric = {"top1": "top-1", "mean_per_class_recall": "mean recall", "mean_average_precision": "mAP"}
    shown = [{**row, "metric": short_metric[row["metric"]] + (" (multi-label)" if row["multi_label"] else ""),
              "suites": ", ".join(row["suites"])} for row in rows]
    emit(shown, args.format, ["name", "classes", "templates", "metric", "names", "suites", "obtained"],
         title="datasets (names: where class names and templates come from; --json says more)")
    emit(suites, args.format, ["suite", "datasets", "what"], title="suites")
    return 0


# -- eval, baseline, bench ------------------------------------------------------------------------
def add_data_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("data")
    group.add_argument("--dataset", "-d", required=True,
                       help="imagenet, imagenette, cifar10, cifar100, folder:PATH, csv:PATH, hf:PATH, wds:PATH "
                            "(CLIP_benchmark webdataset folder) or wds/NAME (its hosted copy)")
    group.add_argument("--data-dir", help="where the dataset's images are (ImageNet: the folder with val/)")
    group.add_argument("--class-map", help="JSON file renaming folder names to class names (folder: datasets)")
    group.add_argument("--strict", action="store_true", help="fail on the first unreadable image")
    group.add_argument("--max-images", type=positive_int, metavar="N",
                       help="a quick look: N images taken at even steps, so every class keeps some")


def add_run_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("cache and output")
    add_cache_options(group)
    group.add_argument("--output", "-o", help="also write the records to FILE (.json, .csv or .md)")
    group.add_argument("--report", metavar="FILE.html",
                       help="also write a self-contained HTML report, with its figures as PNG beside it")
    add_format_options(parser)


def add_cache_options(group: argparse._ActionsContainer) -> None:
    group.add_argument("--cache-dir", help="feature and classifier cache (default: the user cache folder)")
    group.add_argument("--no-cache", action="store_true", help="neither read nor write the cache")


def cache_from_args(args: argparse.Namespace) -> Path | None:
    from pixprompt.paths import resolve_cache

    return None if args.no_cache else resolve_cache(args.cache_dir or True)


def dataset_from_args(args: argparse.Namespace):
    from pixprompt.data.datasets import DatasetOptions, load_dataset

    dataset = load_dataset(args.dataset, DatasetOptions(args.data_dir, args.class_map))
    return dataset.spread_subset(args.max_images) if args.max_images else dataset


def decoded_as_asked(args: argparse.Namespace, dataset, model):
    """`dataset`, with JPEG draft decoding for `model` where --draft-jpeg asks for it."""
    return dataset.decoded_with(model.decode_size if args.draft_jpeg else None, args.max_pixels)


RECORD_SUFFIXES = (".json", ".csv", ".md")


def check_writable(path: str, option: str, suffixes: tuple[str, ...]) -> None:
    """Refuse an output file name before any work: a wrong suffix, a missing or unwritable folder."""
    target = Path(path).expanduser()
    if target.suffix.lower() not in suffixes:
        raise UsageError(f"{option} {path}: use a {', '.join(suffixes[:-1])}{' or ' if suffixes[:-1] else ''}"
                         f"{suffixes[-1]} file name")
    parent = target.parent
    if not parent.is_dir():
        raise UsageError(f"{option} {path}: folder {parent} does not exist")
    if not os.access(parent, os.W_OK | os.X_OK) or (target.exists() and not os.access(target, os.W_OK)):
        raise UsageError(f"{option} {path}: {'the file' if target.exists() else f'folder {parent}'} is not writable")
    if target.is_dir():
        raise UsageError(f"{option} {path} is a folder: give a file name")


def check_run_outputs(args: argparse.Namespace) -> None:
    """--output and --report, checked before the model loads."""
    if args.output:
        check_writable(args.output, "--output", RECORD_SUFFIXES)
    if getattr(args, "report", None):
        check_writable(args.report, "--report", (".html", ".htm"))


def is_main_rank() -> bool:
    """Whether this process speaks for the job: always, except on ranks 1… of torchrun or srun."""
    from pixprompt.distributed import discover

    return discover().is_main


def write_records(records: list[dict], path: str, columns: list[str] | None = None) -> None:
    """Write records by the file's suffix: full JSON, or the summary as CSV / Markdown."""
    from pixprompt.reports import to_csv, to_json, to_markdown
    from pixprompt.reports.tables import summary_columns, summary_row
    from pixprompt.storage import write_text_atomic

    suffix = Path(path).suffix.lower()
    if suffix == ".json":
        write_text_atomic(path, to_json(records) + "\n")
        return
    writers = {".csv": to_csv, ".md": to_markdown}
    rows = [summary_row(r) for r in records] if columns is None else records
    write_text_atomic(path, writers[suffix](rows, columns or summary_columns(records)))


def write_html_report(args: argparse.Namespace, records: list[dict], path: str, figures: str | None = None) -> None:
    """The self-contained HTML report with its PNG figures, announced on stderr unless --quiet."""
    from pixprompt.reports.html import write_report

    write_output(lambda: write_report(records, path, figures), path)
    if not args.quiet:
        print(f"pixprompt: report written to {path}", file=sys.stderr)


def write_table_outputs(args: argparse.Namespace, records: list[dict], table: list[dict], columns: list[str]) -> None:
    """--output (the full records as .json; the command's table as .csv or .md) and --report."""
    if args.output:
        json_output = args.output.lower().endswith(".json")
        write_output(lambda: write_records(records if json_output else table, args.output,
                                           None if json_output else columns), args.output)
    if args.report:
        write_html_report(args, records, args.report)


def report_records(args: argparse.Namespace, records: list[dict]) -> None:
    """Print the records and write --output / --report (rank 0 only in a multi-process job)."""
    from pixprompt.reports import emit

    if not is_main_rank():
        return
    from pixprompt.reports.tables import summary_columns, summary_row

    if args.format == "json":
        emit(records, "json")
    else:
        emit([summary_row(r) for r in records], args.format, summary_columns(records), layout=SUMMARY_LAYOUT)
    if args.output:
        write_output(lambda: write_records(records, args.output), args.output)
    if args.report:
        write_html_report(args, records, args.report)


def _eval_arguments(parser: argparse.ArgumentParser) -> None:
    add_model_options(parser)
    add_data_options(parser)
    add_prompt_options(parser, None)
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
    prompt_sets = prompt_sets_from_args(args, default=dataset.default_templates)
    ensembles = [mode.strip() for mode in args.ensemble.split(",")]
    for mode in ensembles:
        get_ensembler(mode)  # refuse a typo before the model loads
    from pixprompt.evaluation import evaluate  # torch: only once the arguments are sound

    calibration = calibration_from_args(args)
    model = model_from_args(args)
    examples = args.examples if args.examples is not None else 4 if args.report else 0
    records = evaluate(model, decoded_as_asked(args, dataset, model), prompt_sets, ensembles, cache_from_args(args),
                       args.batch_size, args.workers, args.strict, examples, args.min_probability,
                       calibration and decoded_as_asked(args, calibration, model))
    report_records(args, records)
    return 0


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
    records = []
    for name in args.weights.split(","):
        model = load_resnet50(name.strip(), device)
        record = evaluate_supervised(model, decoded_as_asked(args, dataset, model), cache_from_args(args),
                                     args.batch_size, args.workers)
        records += [record] if record else []  # None on ranks other than 0
    report_records(args, records)
    return 0


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
    from pixprompt.evaluation.fewshot import shots_list

    check_run_outputs(args)
    try:
        shots = shots_list(args.shots)
    except ValueError as error:
        raise UsageError(f"--shots: {error}") from None
    test = dataset_from_args(args)
    train = load_dataset(args.train_dataset, DatasetOptions(args.train_data_dir))
    prompt_sets = prompt_sets_from_args(args, default=test.default_templates)
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
                            cache_from_args(args), args.batch_size, args.workers, supervised)
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


def _select_arguments(parser: argparse.ArgumentParser) -> None:
    add_model_options(parser)
    add_data_options(parser)
    parser.add_argument("--candidates", default="clip80",
                        help="the template set to select from: a name or a file (default clip80, OpenAI's 80)")
    parser.add_argument("--eval-dataset", metavar="SPEC", help="report the chosen set's accuracy on this held-out "
                                                                "dataset beside the whole candidate set's")
    parser.add_argument("--eval-data-dir", help="--data-dir of the --eval-dataset")
    parser.add_argument("--allow-test-selection", action="store_true",
                        help="allow --eval-dataset to be the selection dataset itself (its accuracy is then "
                             "overstated)")
    parser.add_argument("--output", "-o", metavar="FILE.txt",
                        help="write the chosen templates, one per line: a file --templates takes")
    parser.add_argument("--report", metavar="FILE.html", help="also write an HTML report with the selection path")
    add_cache_options(parser.add_argument_group("cache"))
    add_format_options(parser)


def same_data(spec: str, data_dir: str | None, other_spec: str, other_dir: str | None) -> bool:
    """Whether two dataset arguments name the same images (paths compared resolved)."""
    def resolved(path: str | None) -> str | None:
        return str(Path(path).expanduser().resolve()) if path else None

    def spec_key(text: str) -> str:
        kind, _, argument = text.partition(":")
        return f"{kind}:{resolved(argument)}" if argument else kind

    return spec_key(spec) == spec_key(other_spec) and resolved(data_dir) == resolved(other_dir)


@command("select-templates", "OpenAI's greedy forward selection of templates on a validation dataset",
         _select_arguments)
def run_select_templates(args: argparse.Namespace) -> int:
    from pixprompt.data.datasets import DatasetOptions, load_dataset

    if args.eval_dataset and same_data(args.dataset, args.data_dir, args.eval_dataset, args.eval_data_dir) \
            and not args.allow_test_selection:
        raise UsageError("--eval-dataset is the dataset the templates are selected on: the choice is fitted to "
                         "those very images, so its accuracy there overstates what it does on new ones. Select on "
                         "a validation split and evaluate on another, or pass --allow-test-selection")
    if args.output:
        check_writable(args.output, "--output", (".txt",))
    if args.report:
        check_writable(args.report, "--report", (".html", ".htm"))
    validation = dataset_from_args(args)
    held_out = load_dataset(args.eval_dataset, DatasetOptions(args.eval_data_dir)) if args.eval_dataset else None
    from pixprompt.prompts import resolve_templates

    candidate_sets = resolve_templates(args.candidates)
    if len(candidate_sets) != 1 or not candidate_sets[0].is_templated:
        raise UsageError("--candidates: give one template set (names or a file), not several or descriptions")
    candidates = candidate_sets[0]
    from pixprompt.evaluation.selection import select_templates

    model = model_from_args(args)
    record = select_templates(model, decoded_as_asked(args, validation, model), candidates,
                              held_out and decoded_as_asked(args, held_out, model), cache_from_args(args),
                              args.batch_size, args.workers)
    if not is_main_rank():
        return 0
    from pixprompt.reports import emit

    if args.format == "json":
        emit([record], "json")
    else:
        path = [{"step": n + 1, "added template": s["template"], "accuracy %": round(100 * s["accuracy"], 2)}
                for n, s in enumerate(record["selection_path"])]
        emit(path, args.format, ["step", "added template", "accuracy %"],
             title=f"forward selection from {candidates.name} on {validation.name}",
             layout=Layout(elide=("added template",)))
        emit(record["comparison"], args.format, ["templates", "count", "selection set %", "held-out %"],
             title="chosen set against all candidates", layout=Layout(elide=("templates",)))
    if args.output:
        from pixprompt.prompts.templates import template_file_text
        from pixprompt.storage import write_text_atomic

        comment = (f"{progress.counted(len(record['chosen']), 'template')} chosen from {candidates.name} by greedy "
                   f"forward selection on {validation.name} with {record['model']} (pixprompt select-templates)")
        write_output(lambda: write_text_atomic(args.output, template_file_text(record["chosen"], comment)),
                     args.output)
    if args.report:
        write_html_report(args, [record], args.report)
    return 0


def _bench_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", "-c", required=True, help="YAML file: models, datasets, templates")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--precision", default="auto", choices=["auto", "fp32", "fp16", "bf16"])
    add_batch_options(parser)
    add_run_options(parser)


@command("bench", "models × datasets × template sets, beside the accuracies the papers report", _bench_arguments)
def run_bench(args: argparse.Namespace) -> int:
    from pixprompt.evaluation.grid import load_grid, paper_table, run_grid
    from pixprompt.reports import emit

    check_run_outputs(args)
    grid = load_grid(args.config)
    records = run_grid(grid, device=args.device, precision=args.precision, cache_root=cache_from_args(args),
                       batch_size=args.batch_size, workers=args.workers, jpeg_draft=args.draft_jpeg,
                       max_pixels=args.max_pixels)
    if not is_main_rank():
        return 0
    if grid.suites:
        table, columns = suite_tables(records, [d["dataset"] for d in grid.datasets], args.format)
    else:
        table, columns = paper_table(records, grid.templates)
        if args.format != "json":
            emit(table, args.format, columns, layout=Layout(keys=2, elide=("model", "dataset", "reference"),
                                                            droppable=[c for c in columns if c.startswith("reproduced")]
                                                            + ["reference"]))
    if args.format == "json":
        emit(records, "json")
    write_table_outputs(args, records, table, columns)
    return 0


def suite_tables(records: list[dict], datasets: list[str], output_format: str) -> tuple[list[dict], list[str]]:
    """Print a suite run's tables (each dataset's main metric per model, group means, robustness on ImageNet's
    shifts when they ran) unless JSON is asked for; return the first, which --output writes."""
    from pixprompt.evaluation.suites import group_table, robustness, suite_table
    from pixprompt.reports import emit

    table, columns = suite_table(records, datasets)
    if output_format != "json":
        emit(table, output_format, columns, title="main metric per dataset (%; – : not available)",
             layout=Layout(elide=("dataset",)))
        groups, group_columns = group_table(records)
        emit(groups, output_format, group_columns, title="means per group (%)", layout=Layout(elide=("model",)))
        shifts = robustness(records)
        if shifts:
            emit(shifts["rows"], output_format, shifts["columns"], title="ImageNet distribution shifts (top-1 %)",
                 layout=Layout(elide=("model",)))
    return table, columns


def _report_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("results", nargs="+", help="JSON results files (eval/bench/baseline --output FILE.json)")
    parser.add_argument("--output", "-o", default="report.html", help="the HTML file (default: report.html)")
    parser.add_argument("--figures", help="folder for the PNG figures (default: <report name>_figures/)")


@command("report", "an HTML report with figures from saved results", _report_arguments)
def run_report(args: argparse.Namespace) -> int:
    from pixprompt.reports.html import load_records

    check_writable(args.output, "--output", (".html", ".htm"))
    write_html_report(args, load_records(args.results), args.output, args.figures)
    return 0


def _serve_arguments(parser: argparse.ArgumentParser) -> None:
    add_model_options(parser)
    parser.add_argument("--host", default="127.0.0.1", help="interface to listen on (default: this machine only)")
    parser.add_argument("--port", type=port_number, default=7860)
    parser.add_argument("--allow-host", action="append", default=[], metavar="NAME",
                        help="also answer requests addressed to this host name (repeatable); others are refused")
    parser.add_argument("--max-upload-mb", type=positive_int, default=10, help="largest image accepted (default 10 MB)")
    parser.add_argument("--max-prompts", type=positive_int, default=2000,
                        help="class names × templates per request (default 2000)")
    group = parser.add_argument_group("probabilities")
    group.add_argument("--calibrate", metavar="VALSET",
                       help="show temperature-scaled probabilities, the temperature fitted on this dataset spec "
                            "(its own classes and default templates) at start-up")
    group.add_argument("--calibrate-data-dir", metavar="DIR", help="--data-dir of the --calibrate dataset")
    add_cache_options(group)


def check_port_free(host: str, port: int) -> None:
    """Refuse a port that is taken or not ours to bind, before the model loads."""
    import socket

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
        try:
            probe.bind((host, port))
        except OSError as error:
            raise UsageError(f"cannot listen on {host}:{port} ({error.strerror or error}): "
                             "choose another --port or --host") from None


@command("serve", "a local web page to try class names and templates on your images", _serve_arguments)
def run_serve(args: argparse.Namespace) -> int:
    from pixprompt.web.app import serve

    check_port_free(args.host, args.port)
    calibration = calibration_from_args(args)
    model = model_from_args(args)
    temperature = 1.0
    if calibration:
        from pixprompt.evaluation.calibration import temperature_on
        from pixprompt.features.cache import extract_features
        from pixprompt.prompts import resolve_templates

        calibration = decoded_as_asked(args, calibration, model)
        features = extract_features(model, calibration, cache_from_args(args), args.batch_size, args.workers)
        temperature = temperature_on(model, calibration, features,
                                     resolve_templates(calibration.default_templates)[0], cache_from_args(args))
        print(f"pixprompt: probabilities at temperature {temperature:.4g} (fitted on {calibration.name})",
              file=sys.stderr)
    print(f"pixprompt: serving {model.info.label} on http://{args.host}:{args.port} (Ctrl-C stops)",
          file=sys.stderr)
    serve(model, args.host, args.port, args.max_upload_mb, args.allow_host, args.max_prompts, args.max_pixels,
          temperature)
    return 0


# -- entry point ----------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    from pixprompt import __version__

    parser = argparse.ArgumentParser(prog="pixprompt", description="Zero-shot image classification with "
                                     "CLIP-like vision-language models.")
    parser.add_argument("--version", action="version", version=f"pixprompt {__version__}")
    common = argparse.ArgumentParser(add_help=False)
    verbosity = common.add_mutually_exclusive_group()
    verbosity.add_argument("--quiet", "-q", action="store_true", help="no progress bars, errors only")
    verbosity.add_argument("--verbose", "-v", action="store_true", help="more detail on stderr")
    common.add_argument("--debug", action="store_true", help="show tracebacks")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, spec in COMMANDS.items():
        sub = subparsers.add_parser(name, help=spec.help, description=spec.help, parents=[common])
        spec.add_arguments(sub)
        sub.set_defaults(run=spec.run)
    return parser


def configure_logging(args: argparse.Namespace, ranks=None) -> None:
    """Logs go to stderr so that stdout carries only results; libraries are kept quiet unless --debug.

    Ranks other than 0 of a multi-process job show errors only (rank 0 speaks for the job) and no progress.
    """
    quiet = args.quiet or (ranks is not None and not ranks.is_main)
    level = logging.ERROR if quiet else logging.DEBUG if args.debug else \
        logging.INFO if args.verbose else logging.WARNING
    tag = _rank_tag(ranks) if ranks is not None else ""
    logging.basicConfig(level=level, format=f"pixprompt{tag}: %(levelname)s: %(message)s", stream=sys.stderr,
                        force=True)
    # libraries' warnings (Pillow's EXIF and bomb warnings, DataLoader's) obey --quiet like pixprompt's own
    logging.captureWarnings(True)
    logging.getLogger("py.warnings").setLevel(level)
    if not args.debug:
        for noisy in ("root", "open_clip", "transformers", "huggingface_hub", "timm", "urllib3", "httpx"):
            logging.getLogger(noisy).setLevel(logging.ERROR)
        # libraries log to the root logger (open_clip logs a failed download as an error before raising);
        # pixprompt reports such failures itself, in one line
        logging.getLogger().setLevel(logging.CRITICAL)
        logging.getLogger("pixprompt").setLevel(level)
        # transformers reads its verbosity when first imported, which only loading a model does
        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
        if quiet:  # otherwise weight downloads and loading keep their progress bars
            os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"
    progress.ENABLED = not quiet


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; returns the exit code (0 ok, 1 some inputs failed, 2 usage, 3 model/data unavailable).

    Under torchrun, srun or mpirun with several processes, every rank runs the same command: rank 0
    prints the results, the others print nothing on stdout and only their own errors on stderr.
    """
    from pixprompt import distributed

    parser = build_parser()
    args = parser.parse_args(argv)
    ranks = distributed.Ranks()
    try:
        ranks = distributed.discover()
        configure_logging(args, ranks)
        if ranks.world > 1:
            distributed.start(ranks)
        distributed.check_settings(ranks)
        if not ranks.is_main:
            sys.stdout = open(os.devnull, "w")  # noqa: SIM115 (for the life of the process)
        return args.run(args)
    except PixpromptError as error:
        if args.debug:
            raise
        if not isinstance(error, distributed.JobStopped) or ranks.is_main:  # rank 0 speaks for the job
            print(f"pixprompt{_rank_tag(ranks)}: error: {error}", file=sys.stderr)
        return error.exit_code
    except KeyboardInterrupt:
        print("pixprompt: interrupted", file=sys.stderr)  # what was kept, if anything, is said where it was
        return 130
    except Exception as error:  # never a traceback for users; --debug shows it
        if args.debug:
            raise
        print(f"pixprompt{_rank_tag(ranks)}: error: {type(error).__name__}: {error} (run again with --debug for "
              "details)", file=sys.stderr)
        return 1
    finally:
        distributed.stop()


def _rank_tag(ranks) -> str:
    """` [rank 1/4]` in messages of a multi-process job, nothing otherwise."""
    return f" [rank {ranks.rank}/{ranks.world}]" if ranks.world > 1 else ""


if __name__ == "__main__":
    sys.exit(main())

"""The option groups commands share (model, batch, prompts, probabilities, data, run, cache, formats), their
argument types (a bad value is a usage error before anything loads) and the readers that turn them into objects."""
from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pixprompt.data.images import DEFAULT_MAX_PIXELS
from pixprompt.errors import UsageError


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
                       help="auto: fp16 on CUDA; bf16 on a CPU with bf16 matrix units (AMX, AVX512-BF16) where a "
                            "probe at load keeps fp32's answers; fp32 elsewhere")
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
    group.add_argument("--descriptions",
                       help="per-class prompts: FILE (JSON, class → sentences: CuPL), dclip:FILE (JSON, class → "
                            "descriptors: DCLIP's \"{class}, which …\"), or waffle[:COUNT[:SEED[:FILE]]] "
                            "(WaffleCLIP's random-word and random-character descriptors, 15 pairs and seed 0 by "
                            "default; FILE: the dataset's DCLIP descriptor file, where the authors draw characters)")
    group.add_argument("--ensemble", default="embedding",
                       help="how a class's prompts are combined: embedding (default), logits or vote "
                            "(eval takes a comma-separated list)")


def add_method_options(parser: argparse.ArgumentParser, unlabeled: str) -> None:
    """--method and the --hierarchy CHiLS needs; `unlabeled`: what the transductive methods read as their unlabeled
    images in this command."""
    group = parser.add_argument_group("label-free methods")
    group.add_argument("--method", default="plain",
                       help="plain (the ensemble, default), zpe, autoclip, tda, zlap, frolic or chils (eval takes a "
                            f"comma-separated list); zpe, tda, zlap and frolic are transductive: they read {unlabeled}")
    group.add_argument("--hierarchy", metavar="FILE",
                       help="JSON mapping each class to its subclasses, for --method chils")


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


def prompt_sets_from_args(args: argparse.Namespace, classnames: Sequence[str], default: str = "standard"):
    """The --templates sets and the --descriptions set (its generated kinds made for `classnames`)."""
    from pixprompt.prompts import resolve_templates
    from pixprompt.prompts.descriptors import resolve_descriptions

    sets = resolve_templates(args.templates or default) if (args.templates or not args.descriptions) else []
    if args.descriptions:
        sets.append(resolve_descriptions(args.descriptions, classnames))
    return sets


def methods_from_args(args: argparse.Namespace) -> tuple[list[str], dict | None]:
    """The --method names and the --hierarchy they may need, refused before the model loads when wrong."""
    from pixprompt.evaluation.label_free import checked_methods, load_hierarchy

    hierarchy = load_hierarchy(args.hierarchy) if args.hierarchy else None
    return checked_methods([args.method], hierarchy), hierarchy


def add_data_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("data")
    group.add_argument("--dataset", "-d", required=True,
                       help="imagenet, imagenette, cifar10, cifar100, folder:PATH, csv:PATH, hf:PATH, wds:PATH "
                            "(CLIP_benchmark webdataset folder) or wds/NAME (its hosted copy)")
    group.add_argument("--data-dir", help="where the dataset's images are (ImageNet: the folder with val/)")
    group.add_argument("--class-map", help="JSON file renaming folder names to class names (folder: datasets)")
    group.add_argument("--language", metavar="XX",
                       help="ImageNet's class names and templates in another language, as CLIP_benchmark has them "
                            "(ar, cn, it, jp, or a Babel-ImageNet language: de, fr, …); ImageNet-class datasets only")
    group.add_argument("--strict", action="store_true", help="fail on the first unreadable image")
    group.add_argument("--max-images", type=positive_int, metavar="N",
                       help="a quick look: N images taken at even steps, so every class keeps some")


def confidence_level(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0.5 <= value < 1:
        raise argparse.ArgumentTypeError(f"expected a confidence in [0.5, 1), e.g. 0.95 or 0.99, got {text!r}")
    return value


def add_run_options(parser: argparse.ArgumentParser) -> None:
    intervals = parser.add_argument_group("intervals and comparisons")
    intervals.add_argument("--confidence", type=confidence_level, default=0.95, metavar="LEVEL",
                           help="the confidence of every interval (default 0.95)")
    intervals.add_argument("--bootstrap", type=positive_int, default=1000, metavar="N",
                           help="resamples of every bootstrap interval (default 1000, seeded)")
    intervals.add_argument("--baseline", metavar="TEMPLATES",
                           help="the template set every other record of a run is compared with (default: the first, "
                                "plain)")
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


def settings_from_args(args: argparse.Namespace, **evaluate_only: Any):
    """The `RunSettings` every job of this command takes: cache, batch size and workers from the shared options,
    plus `evaluate`'s own (`strict`, `examples_per_class`, …) where the command has them."""
    from pixprompt.evaluation.intervals import BootstrapSettings
    from pixprompt.evaluation.settings import RunSettings

    intervals = BootstrapSettings(args.confidence, args.bootstrap) if hasattr(args, "confidence") else \
        BootstrapSettings()
    return RunSettings(cache_from_args(args), args.batch_size, args.workers, intervals=intervals,
                       baseline=getattr(args, "baseline", None), **evaluate_only)


def dataset_from_args(args: argparse.Namespace):
    from pixprompt.data.datasets import DatasetOptions, load_dataset

    dataset = load_dataset(args.dataset, DatasetOptions(args.data_dir, args.class_map, language=args.language))
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

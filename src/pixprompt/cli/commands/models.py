"""`pixprompt models`: its arguments and its handler."""
from __future__ import annotations

import argparse
import logging

from pixprompt.cli.options import (
    add_format_options,
)
from pixprompt.cli.registry import command
from pixprompt.errors import UsageError
from pixprompt.reports.tables import Layout

log = logging.getLogger("pixprompt")


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
    for row in rows if args.format != "json" else ():  # a table cell of notes: the words, not a Python tuple
        row["notes"] = "; ".join(row["notes"]) or None
    emit(rows, args.format, ["name", "pretrained", "backend", "params", "image_size", "scoring", "quick_gelu",
                             "embed_dim", "context_length", "preprocess", "tokenizer", "notes"],
         layout=Layout(keys=2, whole=("name", "pretrained"), stack=False,
                       droppable=("notes", "tokenizer", "preprocess", "context_length", "embed_dim", "scoring",
                                  "image_size", "quick_gelu", "backend")))
    return 0

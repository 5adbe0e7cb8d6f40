"""`pixprompt select-templates`: its arguments and its handler."""
from __future__ import annotations

import argparse
from pathlib import Path

from pixprompt import progress
from pixprompt.cli.options import (
    add_cache_options,
    add_data_options,
    add_format_options,
    add_model_options,
    check_writable,
    dataset_from_args,
    decoded_as_asked,
    model_from_args,
    settings_from_args,
)
from pixprompt.cli.output import is_main_rank, write_html_report
from pixprompt.cli.registry import command
from pixprompt.errors import UsageError
from pixprompt.reports.tables import Layout
from pixprompt.storage import write_output


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
                              held_out and decoded_as_asked(args, held_out, model), settings_from_args(args))
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

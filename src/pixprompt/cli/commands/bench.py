"""`pixprompt bench`: its arguments and its handler."""
from __future__ import annotations

import argparse

from pixprompt.cli.options import (
    add_batch_options,
    add_run_options,
    check_run_outputs,
    settings_from_args,
)
from pixprompt.cli.output import is_main_rank, write_table_outputs
from pixprompt.cli.registry import command
from pixprompt.reports.tables import Layout


def _bench_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", "-c", required=True, help="YAML file: models, datasets, templates")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--precision", default="auto", choices=["auto", "fp32", "fp16", "bf16"])
    add_batch_options(parser)
    add_run_options(parser)


@command("bench", "models × datasets × template sets, beside the accuracies the papers report", _bench_arguments)
def run_bench(args: argparse.Namespace) -> int:
    from pixprompt.evaluation.grid import load_grid, paper_table, run_grid
    from pixprompt.evaluation.label_free import is_plain, methods_beside_plain
    from pixprompt.reports import emit

    check_run_outputs(args)
    grid = load_grid(args.config)
    records = run_grid(grid, device=args.device, precision=args.precision, jpeg_draft=args.draft_jpeg,
                       max_pixels=args.max_pixels, settings=settings_from_args(args))
    if not is_main_rank():
        return 0
    plain = [r for r in records if is_plain(r)]  # the papers' tables compare CLIP's own recipe
    if grid.suites:
        table, columns = suite_tables(plain, [d["dataset"] for d in grid.datasets], args.format)
    else:
        table, columns = paper_table(plain, grid.templates)
        if args.format != "json":
            emit(table, args.format, columns, layout=Layout(keys=2, elide=("model", "dataset", "reference"),
                                                            droppable=[c for c in columns if c.startswith("reproduced")]
                                                            + ["reference"]))
    beside, method_columns = methods_beside_plain(records)
    if beside and args.format != "json":
        emit(beside, args.format, method_columns, title="label-free methods beside plain (main metric %; "
             "* transductive)",
             layout=Layout(elide=("model", "dataset", "templates"), droppable=["pretrained"]))
    if args.format == "json":
        emit(records, "json")
    write_table_outputs(args, records, table, columns)
    return 0


def suite_tables(records: list[dict], datasets: list[str], output_format: str) -> tuple[list[dict], list[str]]:
    """Print a suite run's tables (each dataset's main metric per model, group means, robustness on ImageNet's
    shifts when they ran) unless JSON is asked for; return the first, which --output writes."""
    from pixprompt.evaluation.suites import datacomp_aggregate, group_table, robustness, suite_table
    from pixprompt.reports import emit

    table, columns = suite_table(records, datasets)
    aggregate = datacomp_aggregate(records)
    if output_format != "json":
        emit(table, output_format, columns, title="main metric per dataset (%; – : not available)",
             layout=Layout(elide=("dataset",)))
        groups, group_columns = group_table(records)
        emit(groups, output_format, group_columns, title="means per group (%)", layout=Layout(elide=("model",)))
        shifts = robustness(records)
        if shifts:
            emit(shifts["rows"], output_format, shifts["columns"], title="ImageNet distribution shifts (top-1 %)",
                 layout=Layout(elide=("model",)))
        if aggregate:
            emit(aggregate[0], output_format, aggregate[1], title="DataComp's aggregate (%; over the tasks that ran: "
                 "fewer than 38 is a partial mean, not DataComp's number)", layout=Layout(elide=("model", "missing")))
    if aggregate:  # --output's table ends with it: one row per measure, each model's value in its column
        rows, measures = aggregate
        kind = {"tasks": "ran", "images": "total", "seconds": "total"}
        table = [*table, *({"dataset": f"DataComp {measure}", "metric": kind.get(measure, "mean"),
                            **{row["model"]: row[measure] for row in rows}} for measure in measures[1:-1])]
    return table, columns

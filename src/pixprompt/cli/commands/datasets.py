"""`pixprompt datasets`: its arguments and its handler."""
from __future__ import annotations

import argparse
import logging

from pixprompt.cli.options import (
    add_format_options,
)
from pixprompt.cli.registry import command

log = logging.getLogger("pixprompt")


# -- datasets -------------------------------------------------------------------------------------
def _datasets_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--filter", metavar="TEXT",
                        help="only datasets whose name, title, suite or group contains TEXT (e.g. vtab, imagenet)")
    parser.add_argument("--fetch-commands", metavar="DATA_ROOT",
                        help="print a shell script that fetches each listed dataset into DATA_ROOT/NAME on a "
                             "connected machine (a bench config's data_root: reads them there)")
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
    if args.fetch_commands:
        from pixprompt.data.catalog import fetch_command

        print("#!/bin/sh\n# fetch these datasets on a connected machine, then copy the folder where data_root points")
        print("set -e")
        for row in rows:
            print(fetch_command(catalog()[row["name"]], args.fetch_commands))
        return 0
    if args.format == "json":
        print(json_text({"datasets": rows, "suites": suites}))
        return 0
    short_metric = {"top1": "top-1", "mean_per_class_recall": "mean recall", "mean_average_precision": "mAP",
                    "mean_recall@1": "mean R@1"}
    shown = [{**row, "metric": short_metric.get(row["metric"], row["metric"])
              + (" (multi-label)" if row["multi_label"] else ""), "suites": ", ".join(row["suites"])} for row in rows]
    emit(shown, args.format, ["name", "classes", "templates", "metric", "names", "suites", "obtained"],
         title="datasets (names: where class names and templates come from; --json says more)")
    emit(suites, args.format, ["suite", "datasets", "what"], title="suites")
    return 0

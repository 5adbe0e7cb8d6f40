"""`pixprompt report`: its arguments and its handler."""
from __future__ import annotations

import argparse

from pixprompt.cli.options import (
    check_writable,
)
from pixprompt.cli.output import write_html_report
from pixprompt.cli.registry import command


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

"""What commands write: records as JSON/CSV/Markdown, HTML reports, and rank 0's voice in a multi-process job."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pixprompt.reports.tables import SUMMARY_LAYOUT
from pixprompt.storage import write_output


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

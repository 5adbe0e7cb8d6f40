"""Rows of results as a readable table, JSON, CSV or Markdown."""
from __future__ import annotations

import csv
import io
import json
import sys
from collections.abc import Sequence
from typing import Any

Row = dict[str, Any]

SUMMARY_COLUMNS = ["model", "pretrained", "dataset", "templates", "ensemble", "top1", "top5",
                   "mean_per_class_recall", "images", "skipped"]


def summary_row(record: dict) -> dict:
    """A record's headline numbers, accuracies in percent."""
    row = {k: record.get(k) for k in SUMMARY_COLUMNS}
    for key in ("top1", "top5", "mean_per_class_recall"):
        row[key] = round(100 * record[key], 2)
    return row


def format_cell(value: Any, float_format: str = ".4g", missing: str = "-") -> str:
    """A table cell's text: floats in `float_format`, large integers with thousands separators."""
    if value is None:
        return missing
    if isinstance(value, float):
        return format(value, float_format)
    if isinstance(value, int) and abs(value) >= 10_000:
        return f"{value:,}"
    return str(value)


def print_table(rows: Sequence[Row], columns: Sequence[str] | None = None, title: str | None = None) -> None:
    """A table sized to the terminal on stdout (rich handles wrapping and narrow terminals)."""
    from rich.console import Console
    from rich.table import Table

    columns = list(columns or (rows[0].keys() if rows else []))
    table = Table(title=title, show_lines=False, header_style="bold")
    for column in columns:
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(*(format_cell(row.get(column)) for column in columns))
    # a pipe or file gets wide rows instead of the 80 columns rich assumes without a terminal
    Console(file=sys.stdout, width=None if sys.stdout.isatty() else 200).print(table)


def to_json(rows: Sequence[Row]) -> str:
    return json.dumps(list(rows), indent=2, ensure_ascii=False)


def to_csv(rows: Sequence[Row], columns: Sequence[str] | None = None) -> str:
    columns = list(columns or (rows[0].keys() if rows else []))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: ("" if row.get(k) is None else row.get(k)) for k in columns})
    return buffer.getvalue()


def to_markdown(rows: Sequence[Row], columns: Sequence[str] | None = None) -> str:
    columns = list(columns or (rows[0].keys() if rows else []))
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(format_cell(row.get(c)) for c in columns) + " |" for row in rows]
    return "\n".join(lines) + "\n"


FORMATS = {"json": to_json, "csv": to_csv, "markdown": to_markdown}


def emit(rows: Sequence[Row], output_format: str = "table", columns: Sequence[str] | None = None,
         title: str | None = None) -> None:
    """Print rows to stdout in the chosen format (`table`, `json`, `csv`, `markdown`)."""
    if output_format == "table":
        print_table(rows, columns, title)
    elif output_format == "json":
        sys.stdout.write(to_json(rows) + "\n")
    else:
        sys.stdout.write(FORMATS[output_format](rows, columns))

"""Rows of results as a readable table, JSON, CSV or Markdown."""
from __future__ import annotations

import csv
import io
import json
import math
import shutil
import sys
from collections.abc import Sequence
from typing import Any

from pixprompt.models.info import display_model

Row = dict[str, Any]

#: The headline columns of a result record, as tables and CSV/Markdown summaries show them.
SUMMARY_COLUMNS = ["model", "pretrained", "dataset", "templates", "ensemble", "top1 %", "top5 %", "mean recall %",
                   "images", "skipped"]
_PERCENT_OF = {"top1 %": "top1", "top5 %": "top5", "mean recall %": "mean_per_class_recall",
               "mAP %": "mean_average_precision"}


def summary_columns(records: Sequence[dict]) -> list[str]:
    """The summary's columns: mean average precision beside the accuracies when a dataset is multi-label."""
    if not any("mean_average_precision" in r for r in records):
        return SUMMARY_COLUMNS
    at = SUMMARY_COLUMNS.index("mean recall %") + 1
    return [*SUMMARY_COLUMNS[:at], "mAP %", *SUMMARY_COLUMNS[at:]]


def summary_row(record: dict) -> dict:
    """A record's headline numbers: accuracies in percent (the columns say so), local models by folder name."""
    row = {k: record.get(_PERCENT_OF.get(k, k)) for k in [*SUMMARY_COLUMNS, "mAP %"]}
    row["model"] = display_model(row["model"])
    for column in _PERCENT_OF:
        row[column] = round(100 * row[column], 2) if row[column] is not None else None
    return row


def format_cell(value: Any, float_format: str = ".4g", missing: str = "-") -> str:
    """A table cell's text: floats in `float_format`, large integers with thousands separators."""
    if value is None:
        return missing
    if isinstance(value, float):
        return format(value, float_format)
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) >= 10_000:
        return f"{value:,}"
    return str(value)


def fit_table(rows: Sequence[Row], columns: Sequence[str], width: int | None) -> list[str]:
    """Lines of an aligned table no wider than `width` (None: any width).

    No cell is ever split: columns that do not fit are left out, the last ones first (callers list
    columns by importance), and a closing line names them. Numbers are right-aligned.
    """
    cells = [[format_cell(row.get(column), ".2f" if column.endswith("%") else ".4g") for column in columns]
             for row in rows]
    widths = [max([len(column), *(len(line[i]) for line in cells)]) for i, column in enumerate(columns)]
    shown = list(range(len(columns)))
    while width and len(shown) > 1 and sum(widths[i] for i in shown) + 2 * (len(shown) - 1) > width:
        shown.pop()
    def is_number(value: Any) -> bool:
        return isinstance(value, (int, float)) and not isinstance(value, bool)

    numeric = [any(is_number(row.get(column)) for row in rows)
               and all(row.get(column) is None or is_number(row.get(column)) for row in rows) for column in columns]

    def line(texts: Sequence[str]) -> str:
        return "  ".join(texts[i].rjust(widths[i]) if numeric[i] else texts[i].ljust(widths[i])
                         for i in shown).rstrip()

    lines = [line(list(columns)), "  ".join("─" * widths[i] for i in shown)]
    lines += [line(texts) for texts in cells]
    hidden = [columns[i] for i in range(len(columns)) if i not in shown]
    if hidden:
        note = f"(not shown: {', '.join(hidden)}; a wider terminal or --json shows them)"
        lines.append(note if not width or len(note) <= width else f"({len(hidden)} more columns: widen or use --json)")
    return lines


def print_table(rows: Sequence[Row], columns: Sequence[str] | None = None, title: str | None = None) -> None:
    """A table sized to the terminal on stdout; a pipe or file gets every column."""
    columns = list(columns or (rows[0].keys() if rows else []))
    terminal = sys.stdout.isatty()
    width = shutil.get_terminal_size().columns if terminal else None
    lines = fit_table(rows, columns, width)
    if terminal:  # a bold header where a terminal shows it
        lines[0] = f"\x1b[1m{lines[0]}\x1b[0m"
    sys.stdout.write("\n".join(([title] if title else []) + lines) + "\n")


def finite(value: Any) -> Any:
    """`value` with every NaN or infinite float (nested in lists and dicts too) replaced by None: strict
    JSON has no NaN, and a parser that follows the standard rejects the whole file for one."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite(v) for v in value]
    return value


def json_text(value: Any, indent: int | None = 2) -> str:
    """Strict JSON (no NaN or Infinity: null instead), UTF-8 text kept as it is."""
    return json.dumps(finite(value), indent=indent, ensure_ascii=False, allow_nan=False)


def to_json(rows: Sequence[Row]) -> str:
    return json_text(list(rows))


#: First characters that make a spreadsheet read a cell as a formula (OWASP's list for CSV injection).
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def spreadsheet_safe(value: Any) -> Any:
    """A CSV cell that a spreadsheet shows as text: a string that starts like a formula gets a leading
    apostrophe (OWASP's rule), so `=HYPERLINK(…)` from an attacker-named file is never run. Numbers stay."""
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return value


def csv_cells(row: Row, columns: Sequence[str]) -> dict[str, Any]:
    """A row's CSV cells: spreadsheet-safe (see `spreadsheet_safe`), None as an empty cell."""
    return {k: "" if row.get(k) is None else spreadsheet_safe(row.get(k)) for k in columns}


def to_csv(rows: Sequence[Row], columns: Sequence[str] | None = None) -> str:
    columns = list(columns or (rows[0].keys() if rows else []))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(csv_cells(row, columns) for row in rows)
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

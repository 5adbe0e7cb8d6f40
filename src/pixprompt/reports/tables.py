"""Rows of results as a readable table, JSON, CSV or Markdown."""
from __future__ import annotations

import csv
import io
import json
import math
import shutil
import sys
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pixprompt.models.info import display_model

Row = dict[str, Any]

#: The headline columns of a result record, as tables and CSV/Markdown summaries show them.
SUMMARY_COLUMNS = ["model", "pretrained", "dataset", "templates", "ensemble", "method", "top1 %", "±", "top5 %",
                   "mean recall %", "images", "skipped"]
#: Beside the accuracies when records have them: mAP (multi-label), the fitted temperature with the expected
#: calibration error before and after it (--calibrate), the open-set coverage and accuracy (--min-probability).
EXTRA_COLUMNS = {"mAP %": "mean_average_precision", "T": "temperature", "ECE before %": "ece_uncalibrated",
                 "ECE after %": "ece", "min P": "threshold", "coverage %": "coverage", "covered top1 %": "accuracy",
                 **{f"{way} R@{k} %": f"{kind}_retrieval_recall@{k}"
                    for way, kind in (("t→i", "image"), ("i→t", "text")) for k in (1, 5, 10)},
                 "mean R@1 %": "mean_recall@1",
                 "Jaccard %": "avg_jaccard_score", "Jaccard 10-12 %": "jaccard_score_10-12",
                 "Δ top1 %": "vs_baseline"}
#: Columns left out when no record has a value there (retrieval records have no templates and no accuracy).
_OPTIONAL_COLUMNS = ("templates", "ensemble", "top1 %", "±", "top5 %", "mean recall %")
#: The record field behind each summary column (a column not named here is its own field).
_FIELD_OF = {"top1 %": "top1", "top5 %": "top5", "mean recall %": "mean_per_class_recall", **EXTRA_COLUMNS}
#: Columns shown in percent of a 0…1 field.
_PERCENT = [column for column in _FIELD_OF if column.endswith("%") and column != "Δ top1 %"]
_OPEN_SET_COLUMNS = ("min P", "coverage %", "covered top1 %")


def _record_value(record: dict, column: str) -> Any:
    """The record's value behind a summary column (the open-set ones live in the record's `open_set`; `±` is half
    the width of top-1's interval, in points)."""
    if column == "±":
        bounds = (record.get("ci") or {}).get("top1")
        return None if not bounds or None in bounds else round(50 * (bounds[1] - bounds[0]), 2)
    source = (record.get("open_set") or {}) if column in _OPEN_SET_COLUMNS else record
    return source.get(_FIELD_OF.get(column, column))


def with_run_label(name: str, record: dict) -> str:
    """A model's name with the results file of a run kept apart from another of the same name (`load_records`)."""
    return f"{name} · {record['run_label']}" if record.get("run_label") else name


def baseline_cell(comparison: dict | None) -> str | None:
    """A record's top-1 difference from its run's baseline, in points; `(~0)` where the difference is not real (its
    interval holds 0 or its corrected McNemar p is too large)."""
    if not comparison or comparison.get("difference") is None:
        return None
    return f"{100 * comparison['difference']:+.2f}" + ("" if comparison.get("real") else " (~0)")


def summary_columns(records: Sequence[dict]) -> list[str]:
    """The summary's columns: the extra ones (see EXTRA_COLUMNS) where any record has them, after the accuracies."""
    extra = [c for c in EXTRA_COLUMNS if any(_record_value(r, c) is not None for r in records)]
    if "T" not in extra and "ECE after %" in extra:
        extra.remove("ECE after %")  # without calibration, one ECE is no comparison
    at = SUMMARY_COLUMNS.index("mean recall %") + 1
    columns = [*SUMMARY_COLUMNS[:at], *extra, *SUMMARY_COLUMNS[at:]]
    if all(r.get("method", "plain") == "plain" for r in records):
        columns.remove("method")  # shown beside the label-free methods only
    return [c for c in columns if c not in _OPTIONAL_COLUMNS or any(_record_value(r, c) is not None for r in records)]


def summary_row(record: dict) -> dict:
    """A record's headline numbers: accuracies in percent (the columns say so), local models by folder name."""
    row = {k: _record_value(record, k) for k in [*SUMMARY_COLUMNS, *EXTRA_COLUMNS]}
    if record.get("transductive"):
        row["method"] = f"{row['method']}*"
    row["model"] = with_run_label(display_model(row["model"]), record)
    for column in _PERCENT:
        value = row[column]
        row[column] = round(100 * value, 2) if isinstance(value, (int, float)) and math.isfinite(value) else None
    row["Δ top1 %"] = baseline_cell(row["Δ top1 %"])
    if isinstance(row["T"], float):
        row["T"] = round(row["T"], 3)
    else:  # no temperature fitted (a method's logits, an uncalibrated run): nothing after calibration to show
        row["ECE after %"] = None
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


@dataclass(frozen=True)
class Layout:
    """How a table gives way to a narrow terminal, each step only while it is still too wide:

    1. a column with one value in every row (two rows or more) moves to a line above the table;
    2. the `elide` columns are shortened (the middle elided, a path's file name kept), then the `droppable`
       columns are left out in that order and a closing line names them;
    3. if that is not enough, the table is split into stacked blocks that hold every column (none left out,
       none elided but where it is too wide for its block, the keys last), each repeating the first `keys` and
       the `identity` columns shown, so a row of one block is matched to its row in the next;
       with `stack` False, the other text columns are shortened instead. `whole` columns are never shortened.

    No cell is split across lines, and no other column is ever left out."""

    keys: int = 1
    #: Columns that may tell rows apart (model, dataset, templates…): those that differ between rows are repeated
    #: in every stacked block.
    identity: Sequence[str] = ()
    elide: Sequence[str] = ()
    droppable: Sequence[str] = ()
    #: Columns never shortened (names a user copies into a command).
    whole: Sequence[str] = ()
    #: False: never stacked; after the drops, the other text columns are shortened instead.
    stack: bool = True


#: How a summary gives way in a narrow terminal: the accuracies are never left out.
SUMMARY_LAYOUT = Layout(elide=("model", "pretrained", "dataset", "templates"), droppable=("skipped", "images", "±"),
                        identity=("model", "pretrained", "dataset", "templates", "ensemble", "method"))
#: An elided column keeps at least this many characters (or its header's width).
ELIDED_WIDTH = 16


def elide(text: str, width: int) -> str:
    """`text` in at most `width` characters: the middle replaced by `…`, a path's file name kept whole where it fits."""
    if len(text) <= width:
        return text
    if width < 3:
        return text[:width]
    cut = text.rfind("/", 0, len(text) - 1)
    tail = text[cut:] if cut >= 0 and len(text) - cut + 1 <= width else text[len(text) - (width - 1) // 2:]
    return text[:width - 1 - len(tail)] + "…" + tail


def _decimals(values: Sequence[Any]) -> str:
    """One float format for a column: as many decimals as its most precise value needs at 4 significant digits
    (at most 4), so the numbers of one column share their decimals."""
    places = [len(text.split(".")[1]) for v in values if isinstance(v, float) and math.isfinite(v)
              for text in [format(v, ".4g")] if "." in text and "e" not in text]
    return f".{min(4, max(places))}f" if places else ".4g"


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


class _Table:
    """The cells of a table as text, each column's width and alignment."""

    def __init__(self, rows: Sequence[Row], columns: Sequence[str]):
        self.rows = len(rows)
        self.cells = {c: [format_cell(row.get(c), ".2f" if c.endswith("%") else _decimals([r.get(c) for r in rows]))
                          for row in rows] for c in columns}
        self.natural = {c: max([len(c), *map(len, self.cells[c])]) for c in columns}
        self.widths = dict(self.natural)
        self.numeric = {c: any(_is_number(row.get(c)) for row in rows)
                        and all(row.get(c) is None or _is_number(row.get(c)) for row in rows) for c in columns}

    def span(self, shown: Sequence[str]) -> int:
        return sum(self.widths[c] for c in shown) + 2 * (len(shown) - 1)

    def shrink(self, shown: Sequence[str], candidates: Sequence[str], width: int) -> None:
        """Shorten `candidates` (the widest first, one character at a time, down to their floor) while `shown`
        is wider than `width`."""
        floors = {c: max(len(c), min(self.natural[c], ELIDED_WIDTH)) for c in candidates}
        while self.span(shown) > width and (wider := [c for c in floors if self.widths[c] > floors[c]]):
            self.widths[max(wider, key=self.widths.__getitem__)] -= 1

    def grow(self, shown: Sequence[str], candidates: Sequence[str], width: int) -> None:
        """Give room left under `width` back to shortened `candidates`, the shortest first."""
        while self.span(shown) < width and (short := [c for c in candidates if self.widths[c] < self.natural[c]]):
            self.widths[min(short, key=self.widths.__getitem__)] += 1

    def lines(self, block: Sequence[str], bold: bool) -> list[str]:
        def line(texts: Sequence[str]) -> str:
            return "  ".join(elide(t, self.widths[c]).rjust(self.widths[c]) if self.numeric[c]
                             else elide(t, self.widths[c]).ljust(self.widths[c]) for c, t in zip(block, texts)).rstrip()

        header = line(block)
        return [f"\x1b[1m{header}\x1b[0m" if bold else header, "  ".join("─" * self.widths[c] for c in block),
                *(line([self.cells[c][i] for c in block]) for i in range(self.rows))]


def fit_table(rows: Sequence[Row], columns: Sequence[str], width: int | None, layout: Layout = Layout(),
              bold: bool = False) -> list[str]:
    """Lines of an aligned table no wider than `width` (None: any width, every column whole), given way as
    `layout` says. Numbers are right-aligned; `bold` marks each header line with the terminal's bold."""
    table = _Table(rows, columns)

    def shortenable(block: Sequence[str]) -> list[str]:
        return [c for c in block if not table.numeric[c] and c not in layout.whole]

    shown = list(columns)
    if not width or table.span(shown) <= width:
        return table.lines(shown, bold)
    folded = [c for c in shown[layout.keys:] if table.rows >= 2 and len(set(table.cells[c])) == 1]
    for column in folded:  # the first ones first, only as many as the width needs
        if table.span(shown) <= width:
            folded = folded[:folded.index(column)]
            break
        shown.remove(column)
    elided, dropped = [c for c in layout.elide if c in shown], []
    table.shrink(shown, elided, width)
    for column in layout.droppable:
        if table.span(shown) > width and column in shown[layout.keys:]:
            shown.remove(column)
            dropped.append(column)
    table.grow(shown, elided, width)
    if table.span(shown) <= width:
        blocks = [shown]
    elif not layout.stack:
        blocks = [shown]
        table.shrink(shown, shortenable(shown), width)
    else:  # stacked blocks hold every column: none left out, elided ones whole where their block has room
        shown, dropped = [c for c in columns if c not in folded], []
        table.widths = dict(table.natural)
        keys = [c for c in shown if c in shown[:layout.keys]  # and the identity columns that tell rows apart
                or (c in layout.identity and len(set(table.cells[c])) > 1)]
        blocks = _blocks(table, shown, keys, width)
        for block in blocks:  # a text column too wide for its block is shortened there, the keys last
            table.shrink(block, [c for c in shortenable(block) if c not in keys], width)
            table.shrink(block, shortenable(block), width)
    lines = textwrap.wrap("same in every row: " + "; ".join(f"{c} {table.cells[c][0]}" for c in folded), width) \
        if folded else []
    for number, block in enumerate(blocks):
        lines += [""] * (number > 0) + table.lines(block, bold)
    if dropped:
        lines += textwrap.wrap(f"(not shown: {', '.join(dropped)}; a wider terminal or --json shows them)", width)
    return lines


def _blocks(table: _Table, shown: list[str], keys: list[str], width: int) -> list[list[str]]:
    """`shown` cut into blocks no wider than `width` where that can be (a single column wider than the room left
    beside the keys gets a block of its own), each starting with the `keys` columns."""
    leading, blocks = keys, []
    for column in (c for c in shown if c not in keys):
        if blocks and table.span([*blocks[-1], column]) <= width:
            blocks[-1].append(column)
        else:
            blocks.append([*leading, column])
    return blocks or [leading]


def print_table(rows: Sequence[Row], columns: Sequence[str] | None = None, title: str | None = None,
                layout: Layout = Layout()) -> None:
    """A table sized to the terminal on stdout (see `Layout`); a pipe or file gets every column whole."""
    columns = list(columns or (rows[0].keys() if rows else []))
    terminal = sys.stdout.isatty()
    width = shutil.get_terminal_size().columns if terminal else None
    lines = fit_table(rows, columns, width, layout, bold=terminal)
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
         title: str | None = None, layout: Layout = Layout()) -> None:
    """Print rows to stdout in the chosen format (`table`, `json`, `csv`, `markdown`); `layout` says how a table
    gives way to a narrow terminal."""
    if output_format == "table":
        print_table(rows, columns, title, layout)
    elif output_format == "json":
        sys.stdout.write(to_json(rows) + "\n")
    else:
        sys.stdout.write(FORMATS[output_format](rows, columns))

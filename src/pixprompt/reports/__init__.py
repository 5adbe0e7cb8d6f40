"""Reports layer: tables (terminal, JSON, CSV, Markdown)."""
from pixprompt.reports.tables import emit, to_csv, to_json, to_markdown

__all__ = ["emit", "to_csv", "to_json", "to_markdown"]

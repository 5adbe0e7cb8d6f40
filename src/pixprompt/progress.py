"""What pixprompt is doing, on stderr, so that `--json` output on stdout stays clean.

- `announce`: one line before each slow step ("loading ViT-B-32 (openai)…").
- `progress_bar`: a tqdm bar on a terminal; on anything else (CI logs, `2> log`) occasional plain lines
  instead of carriage-return redraws.
"""
from __future__ import annotations

import sys
import time
from typing import Any, TextIO

#: Set by the CLI's --quiet flag; library users can switch announcements and bars off the same way.
ENABLED = True
#: Seconds between two plain progress lines when stderr is not a terminal.
PLAIN_LINE_SECONDS = 30.0


def counted(number: int, noun: str, plural: str | None = None) -> str:
    """`1 image`, `2 images`, `10,000 images`: a count with its noun in the right number."""
    return f"{number:,} {noun if number == 1 else plural or noun + 's'}"


def announce(message: str) -> None:
    """One line on stderr saying what slow step starts now (nothing when progress is disabled)."""
    if ENABLED:
        print(f"pixprompt: {message}", file=sys.stderr, flush=True)


class PlainProgress:
    """tqdm's `update`/context-manager surface, printed as a plain line at most every `interval` seconds."""

    def __init__(self, total: int | None, desc: str, unit: str, file: TextIO, interval: float = PLAIN_LINE_SECONDS):
        self.total, self.desc, self.unit, self.file, self.interval = total, desc, unit, file, interval
        self.count = 0
        self.started = self.last = time.monotonic()

    def update(self, n: int = 1) -> None:
        self.count += n
        now = time.monotonic()
        if now - self.last >= self.interval:
            self.last = now
            self._line(now)

    def _line(self, now: float) -> None:
        rate = self.count / max(now - self.started, 1e-9)
        share = f" ({100 * self.count / self.total:.0f}%)" if self.total else ""
        done = f"{self.count}/{self.total}" if self.total else str(self.count)
        print(f"pixprompt: {self.desc}: {done} {self.unit}{share}, {rate:.1f} {self.unit}/s",
              file=self.file, flush=True)

    def __enter__(self) -> PlainProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        now = time.monotonic()
        if now - self.started >= self.interval and self.last != now:  # a long step ends with its total
            self._line(now)


def progress_bar(total: int | None, desc: str, unit: str, show: bool = True, **kwargs: Any):
    """A progress display on stderr: tqdm on a terminal, plain occasional lines elsewhere, none if disabled
    (or not `show`: ranks other than 0). `total` None: a count without a share."""
    from tqdm.auto import tqdm

    stream = kwargs.pop("file", sys.stderr)
    enabled = ENABLED and show
    if enabled and not getattr(stream, "isatty", lambda: False)():
        return PlainProgress(total, desc, unit, stream)
    kwargs.setdefault("dynamic_ncols", True)
    kwargs.setdefault("leave", False)
    kwargs.setdefault("mininterval", 0.5)
    kwargs.setdefault("delay", 1.0)
    return tqdm(total=total, desc=desc, unit=unit, file=stream, disable=not enabled, **kwargs)

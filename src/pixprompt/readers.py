"""The one reader of every file a user names (label files, class maps, hierarchies, template, description and
descriptor files, bench configs, results files, CSV tables, caption and count files): bounded in bytes and in
nesting, UTF-8 checked, and refusing anything else with one line (exit 2).

- Size: at most `max_file_bytes()` bytes ($PIXPROMPT_MAX_FILE_BYTES, default 64 MiB); a larger file is refused
  before it is read whole, and only regular files are opened (a FIFO, `/dev/zero` or a folder would never end).
- Nesting: JSON and YAML deeper than `MAX_NESTING` levels are refused before they are parsed (the parsers recurse,
  and a deep file would raise `RecursionError`); YAML's aliases are refused (a few lines of them expand to
  gigabytes).
- Text: UTF-8 (a byte-order mark is dropped); another encoding is refused with the byte where it fails.
"""
from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any

import numpy as np

from pixprompt.errors import UsageError

#: The default cap on a file a user names: far above any label, template or config file, far below memory.
DEFAULT_MAX_FILE_BYTES = 64 << 20
#: Levels of nested lists and mappings a JSON or YAML file may have (pixprompt's own files need 4).
MAX_NESTING = 64


def max_file_bytes() -> int:
    """The size cap ($PIXPROMPT_MAX_FILE_BYTES, default 64 MiB; a bad value is one usage line naming it)."""
    from pixprompt.distributed import env_number

    return env_number("PIXPROMPT_MAX_FILE_BYTES", DEFAULT_MAX_FILE_BYTES, 1, 1 << 40)


def read_bytes(path: str | Path, what: str, limit: int | None = None) -> bytes:
    """A regular file's bytes, at most `limit` (default `max_file_bytes()`), or one usage line naming it."""
    path = Path(path).expanduser()
    limit = limit or max_file_bytes()
    try:  # O_NONBLOCK: opening a FIFO must not wait for a writer
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
    except FileNotFoundError:
        raise UsageError(f"{what} {path} does not exist") from None
    except IsADirectoryError:
        raise UsageError(f"{what} {path} is a folder, not a file") from None
    except OSError as error:
        raise UsageError(f"{what} {path} cannot be read: {error.strerror or error}") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            kind = "a folder" if stat.S_ISDIR(info.st_mode) else "not a regular file (a pipe or device)"
            raise UsageError(f"{what} {path} is {kind}: give a file")
        if info.st_size > limit:
            raise UsageError(f"{what} {path} is {info.st_size:,} bytes, over the {limit:,}-byte limit: "
                             "raise PIXPROMPT_MAX_FILE_BYTES if it is meant to be that large")
        os.set_blocking(fd, True)
        with os.fdopen(os.dup(fd), "rb") as handle:
            data = handle.read(limit + 1)  # a file still growing stops at the cap too
    except OSError as error:
        raise UsageError(f"{what} {path} cannot be read: {error.strerror or error}") from None
    finally:
        os.close(fd)
    if len(data) > limit:
        raise UsageError(f"{what} {path} grew past the {limit:,}-byte limit while it was read")
    return data


def read_text(path: str | Path, what: str, limit: int | None = None) -> str:
    """A UTF-8 text file's content (see `read_bytes`), or one usage line naming the file and the fix."""
    data = read_bytes(path, what, limit)
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise UsageError(f"{what} {Path(path).expanduser()} is not UTF-8 text (byte {error.start}): re-save it as "
                         "UTF-8") from None
    if "\0" in text:
        raise UsageError(f"{what} {Path(path).expanduser()} holds NUL bytes: it is not a text file")
    return text


def json_nesting(text: str) -> int:
    """How deeply a JSON text's lists and objects nest (brackets inside strings not counted), without parsing it."""
    data = np.frombuffer(text.encode("utf-8", "surrogatepass"), dtype=np.uint8)
    quote, backslash = data == ord('"'), data == ord("\\")
    if backslash.any():  # a quote after an odd run of backslashes is escaped
        run = np.zeros(len(data), dtype=np.int64)
        positions = np.flatnonzero(backslash)
        starts = positions[np.r_[True, np.diff(positions) > 1]]
        ends = positions[np.r_[np.diff(positions) > 1, True]] + 1
        run[ends[ends < len(data)]] = (ends - starts)[ends < len(data)]
        quote &= run % 2 == 0
    inside = (np.cumsum(quote) - quote) % 2 == 1  # between an opening quote and its closing one
    opens = np.isin(data, (ord("["), ord("{"))) & ~inside
    closes = np.isin(data, (ord("]"), ord("}"))) & ~inside
    depth = np.cumsum(opens.astype(np.int64) - closes)
    return int(depth.max()) if len(depth) else 0


def read_json(path: str | Path, what: str, limit: int | None = None) -> Any:
    """A JSON file's value: strict JSON (no NaN or Infinity), at most `MAX_NESTING` deep, or one usage line."""
    text = read_text(path, what, limit)
    _check_nesting(path, what, json_nesting(text))

    def refuse_constant(name: str) -> Any:
        raise ValueError(f"{name} is not JSON")

    try:
        return json.loads(text, parse_constant=refuse_constant)
    except (json.JSONDecodeError, ValueError) as error:
        raise UsageError(f"{what} {Path(path).expanduser()} is not valid JSON ({error})") from None


def read_json_mapping(path: str | Path, what: str, shape: str) -> dict:
    """A JSON file's non-empty top-level mapping, or one usage line naming the file and the `shape` it needs."""
    data = read_json(path, what)
    if not isinstance(data, dict) or not data:
        raise UsageError(f"{what} {Path(path).expanduser()} must map {shape}")
    return data


def read_yaml(path: str | Path, what: str, limit: int | None = None) -> Any:
    """A YAML file's value (safe types only), at most `MAX_NESTING` deep and without aliases, or one usage line."""
    import yaml

    text = read_text(path, what, limit)
    try:
        depth = deepest = 0
        for event in yaml.parse(text, Loader=yaml.SafeLoader):  # a stream of events: no recursion, no expansion
            if isinstance(event, yaml.AliasEvent):
                raise UsageError(f"{what} {Path(path).expanduser()} uses a YAML alias (*{event.anchor}): write the "
                                 "value out instead")
            if isinstance(event, (yaml.MappingStartEvent, yaml.SequenceStartEvent)):
                depth += 1
                deepest = max(deepest, depth)
                _check_nesting(path, what, deepest)
            elif isinstance(event, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
                depth -= 1
        return yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise UsageError(f"{what} {Path(path).expanduser()} is not valid YAML ({str(error).splitlines()[0]})") \
            from None


def _check_nesting(path: str | Path, what: str, depth: int) -> None:
    if depth > MAX_NESTING:
        raise UsageError(f"{what} {Path(path).expanduser()} nests {depth} levels deep, more than the {MAX_NESTING} "
                         "a pixprompt file may have")

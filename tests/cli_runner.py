"""One way for tests to run the CLI in-process: the common model arguments and the captured outcome."""
from __future__ import annotations

import json

from pixprompt.cli import main


def run_cli(capsys, *argv) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of `pixprompt ARGV`; a traceback on stderr fails the test."""
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    return code, captured.out, captured.err


def model_args(folder) -> list[str]:
    """A tiny model on the CPU, decoding in the test's own process."""
    return ["--model", str(folder), "--device", "cpu", "--workers", "0"]


def _no_constant(name: str):
    raise ValueError(f"not strict JSON: {name}")


def strict_json(text: str):
    """`json.loads` that refuses NaN and ±Infinity, as standard-following parsers do."""
    return json.loads(text, parse_constant=_no_constant)

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


def eval_args(model_dir, dataset, *extra) -> list:
    """`eval` of the tiny model on a folder dataset with raw templates, as JSON."""
    return ["eval", *model_args(model_dir), "--dataset", f"folder:{dataset}", "--templates", "raw", "--json", *extra]


def _no_constant(name: str):
    raise ValueError(f"not strict JSON: {name}")


def strict_json(text: str):
    """`json.loads` that refuses NaN and ±Infinity, as standard-following parsers do."""
    return json.loads(text, parse_constant=_no_constant)


_TERMINAL_SCRIPT = """
import json, sys
from pixprompt.cli import main
codes = []
for number, argv in enumerate(json.loads(sys.argv[1])):
    print(f"=== {number}", flush=True)
    codes.append(main(argv))
    sys.stdout.flush()
sys.exit(max(codes))
"""


def in_terminal(argvs: list[list[str]], columns: int, cwd, timeout: float = 600) -> list[str]:
    """The screen text of `pixprompt ARGV` for each argv, run one after another in a child process whose stdin and
    stdout are a real terminal (a pseudo-terminal `columns` wide; stderr goes to a file). Colour codes removed."""
    import fcntl
    import os
    import pty
    import re
    import struct
    import subprocess
    import sys
    import tempfile
    import termios
    import time

    primary, secondary = pty.openpty()
    fcntl.ioctl(secondary, termios.TIOCSWINSZ, struct.pack("HHHH", 50, columns, 0, 0))
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}  # the terminal's size rules
    with tempfile.TemporaryFile() as errors:
        child = subprocess.Popen([sys.executable, "-c", _TERMINAL_SCRIPT, json.dumps([[str(a) for a in argv]
                                                                                      for argv in argvs])],
                                 stdin=secondary, stdout=secondary, stderr=errors, cwd=cwd, env=env)
        os.close(secondary)
        chunks, deadline = [], time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                chunk = os.read(primary, 65536)
            except OSError:  # the child closed the terminal
                break
            if not chunk:
                break
            chunks.append(chunk)
        os.close(primary)
        code = child.wait(timeout=60)
        errors.seek(0)
        err = errors.read()
        assert code == 0 and b"Traceback" not in err, err.decode(errors="replace")[-3000:]
    screen = re.sub(r"\x1b\[[0-9;]*m", "", b"".join(chunks).decode().replace("\r\n", "\n"))
    return re.split(r"^=== \d+\n", screen, flags=re.M)[1:]

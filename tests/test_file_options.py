"""One bounded reader for every file a user names (#34 part 3): every option that reads a file is enumerated from the
CLI's own parser, and each refuses an oversized file, a FIFO, a folder, non-UTF-8 bytes and (for JSON and YAML)
deep nesting with one line and exit 2, before anything is written."""
from __future__ import annotations

import argparse
import os
from pathlib import Path

import pytest

from cli_runner import model_args, run_cli
from pixprompt.cli.app import build_parser

#: Options that name a file pixprompt writes, image files (decoded under their own bounds) or a binary file.
NOT_READ_AS_TEXT = {"inputs", "--output", "--report", "--figures", "--classifier", "--weights-dir", "--cache-dir"}


def file_options() -> set[str]:
    """`command option` for every option (or positional) whose help says it names a file or a dataset spec, which may
    be `csv:FILE`."""
    parser = build_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices
    found = set()
    for command, sub in commands.items():
        for action in sub._actions:
            name = max(action.option_strings, key=len) if action.option_strings else action.dest
            words = (action.help or "").lower()
            reads = any(word in words for word in ("file", "json", "yaml", "csv:path"))
            if action.nargs != 0 and name not in NOT_READ_AS_TEXT and reads:
                found.add(f"{command} {name}")
    return found


def argv_for(option: str, path: Path, model: Path, colours: Path) -> list:
    """The command line that makes `option` read `path`."""
    command, name = option.split(" ", 1)
    tiny = model_args(model)
    folder = ["--dataset", f"folder:{colours}"]
    table = {
        "classify --labels-file": ["classify", colours, *tiny, "--labels-file", path],
        "classify --templates": ["classify", colours, *tiny, "--labels", "a,b", "--templates", path],
        "classify --descriptions": ["classify", colours, *tiny, "--labels", "a,b", "--descriptions", path],
        "classify --hierarchy": ["classify", colours, *tiny, "--labels", "a,b", "--method", "chils",
                                 "--hierarchy", path],
        "classify --calibrate": ["classify", colours, *tiny, "--labels", "a,b", "--calibrate", f"csv:{path}"],
        "classify --dataset": ["classify", colours, *tiny, "--dataset", f"csv:{path}"],
        "eval --dataset": ["eval", *tiny, "--dataset", f"csv:{path}"],
        "eval --class-map": ["eval", *tiny, *folder, "--class-map", path],
        "eval --templates": ["eval", *tiny, *folder, "--templates", path],
        "eval --descriptions": ["eval", *tiny, *folder, "--descriptions", f"dclip:{path}"],
        "eval --hierarchy": ["eval", *tiny, *folder, "--method", "chils", "--hierarchy", path],
        "eval --calibrate": ["eval", *tiny, *folder, "--calibrate", f"csv:{path}"],
        "baseline --dataset": ["baseline", "--device", "cpu", "--dataset", f"csv:{path}"],
        "baseline --class-map": ["baseline", "--device", "cpu", *folder, "--class-map", path],
        "probe --dataset": ["probe", *tiny, "--dataset", f"csv:{path}", "--train-dataset", f"folder:{colours}"],
        "probe --class-map": ["probe", *tiny, *folder, "--class-map", path, "--train-dataset", f"folder:{colours}"],
        "probe --train-dataset": ["probe", *tiny, *folder, "--train-dataset", f"csv:{path}"],
        "probe --templates": ["probe", *tiny, *folder, "--train-dataset", f"folder:{colours}", "--templates", path],
        "probe --descriptions": ["probe", *tiny, *folder, "--train-dataset", f"folder:{colours}",
                                 "--descriptions", path],
        "select-templates --dataset": ["select-templates", *tiny, "--dataset", f"csv:{path}"],
        "select-templates --class-map": ["select-templates", *tiny, *folder, "--class-map", path],
        "select-templates --candidates": ["select-templates", *tiny, *folder, "--candidates", path],
        "select-templates --eval-dataset": ["select-templates", *tiny, *folder, "--eval-dataset", f"csv:{path}"],
        "bench --config": ["bench", "--config", path],
        "report results": ["report", path, "--output", path.parent / "report.html"],
        "compare results": ["compare", path, path],
        "serve --calibrate": None,  # a server: the same reader as eval's --calibrate, checked through eval
    }
    assert option in table, f"{option} reads a file but has no hostile-file case here: add one"
    return table[option] if table[option] is not None else table[f"eval {name}"]


#: What each option's file holds when it is well formed, by the reader it goes through.
KIND = {"--labels-file": "text", "--templates": "text", "--candidates": "text", "--config": "yaml",
        "--class-map": "json", "--descriptions": "json", "--hierarchy": "json", "results": "json"}


def hostile_file(kind: str, fault: str, folder: Path) -> Path:
    """A file of `kind` with `fault`: too large (over a cap of 256 bytes), a FIFO, a folder, not UTF-8, too deep."""
    path = folder / ("bad.json" if kind == "json" else "bad.yaml" if kind == "yaml" else "bad.txt")
    if fault == "fifo":
        os.mkfifo(path)
    elif fault == "folder":
        path.mkdir()
    elif fault == "not-utf8":
        path.write_bytes(b"path,label\n\xff\xfe\xc3(,a\n")
    elif fault == "too-large":
        path.write_text("a photo of a {}.\n" * 40)
    elif fault == "too-deep":
        path.write_text("[" * 5000 + "]" * 5000 if kind in ("json", "yaml") else "x\n")
    return path


def test_every_file_option_has_a_hostile_case():
    options = file_options()
    assert {"classify --labels-file", "bench --config", "report results", "eval --hierarchy", "eval --class-map",
            "eval --descriptions", "eval --templates", "eval --dataset"} <= options
    for option in options:
        argv_for(option, Path("x"), Path("m"), Path("c"))


@pytest.mark.parametrize("fault", ["too-large", "fifo", "folder", "not-utf8", "too-deep"])
@pytest.mark.parametrize("option", sorted(file_options()))
def test_a_hostile_file_is_one_line_and_exit_2(tiny_model_dirs, colours, tmp_path, capsys, monkeypatch, option,
                                               fault):
    kind = KIND.get(option.split(" ", 1)[1], "csv")
    if fault == "too-deep" and kind not in ("json", "yaml"):
        pytest.skip("only JSON and YAML nest")
    monkeypatch.setenv("PIXPROMPT_MAX_FILE_BYTES", "256")
    monkeypatch.chdir(tmp_path)
    path = hostile_file(kind, fault, tmp_path)
    code, out, err = run_cli(capsys, *argv_for(option, path, tiny_model_dirs["open_clip_clip"], colours))
    lines = [line for line in err.splitlines() if line.startswith("pixprompt: error")]
    assert code == 2 and out == "" and len(lines) == 1, err
    assert "bad." in lines[0] and len(lines[0]) < 400, lines[0]
    assert not (tmp_path / "report.html").exists()


def test_the_cap_is_overridable_and_a_file_under_it_is_read(tmp_path, monkeypatch):
    from pixprompt.errors import UsageError
    from pixprompt.readers import read_json, read_text

    path = tmp_path / "labels.txt"
    path.write_text("cat\n" * 100)
    monkeypatch.setenv("PIXPROMPT_MAX_FILE_BYTES", "399")
    with pytest.raises(UsageError, match="400 bytes, over the 399-byte limit"):
        read_text(path, "label file")
    monkeypatch.setenv("PIXPROMPT_MAX_FILE_BYTES", "400")
    assert read_text(path, "label file") == "cat\n" * 100
    deep = tmp_path / "deep.json"
    deep.write_text("[" * 64 + "]" * 64)
    assert read_json(deep, "file") is not None
    deep.write_text('["[[[[", ' + "[" * 63 + "]" * 63 + ', "\\"]]]"]')  # brackets inside strings do not count
    assert len(read_json(deep, "file")) == 3
    deep.write_text("[" * 65 + "]" * 65)
    with pytest.raises(UsageError, match="nests 65 levels deep"):
        read_json(deep, "file")

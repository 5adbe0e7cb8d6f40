"""The console: tables that fit the terminal, clean JSON, progress lines."""
from __future__ import annotations

import json
import re

import pytest

from pixprompt.cli import main


# -- console --------------------------------------------------------------------------------------------------
def test_tables_fit_the_terminal_and_json_stays_clean(tiny_model_dirs, colours, capsys, monkeypatch):
    import sys

    args = ["eval", "--model", str(tiny_model_dirs["open_clip_clip"]), "--device", "cpu", "--workers", "0",
            "--dataset", f"folder:{colours}", "--templates", "raw,standard", "--no-cache", "--verbose"]
    monkeypatch.setenv("COLUMNS", "80")
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True, raising=False)
    assert main(args) == 0
    out = re.sub(r"\x1b\[[0-9;]*m", "", capsys.readouterr().out)  # the terminal's colour codes take no room
    assert "top1" in out and max(len(line) for line in out.splitlines()) <= 80
    assert main([*args, "--json"]) == 0
    captured = capsys.readouterr()
    assert len(json.loads(captured.out)) == 2 and "pixprompt: INFO" in captured.err


@pytest.mark.parametrize("columns", [80, 120])
def test_tables_never_split_a_value_at_80_and_120_columns(tiny_model_dirs, colours, capsys, monkeypatch,
                                                          tmp_path, columns):
    import sys

    monkeypatch.setenv("COLUMNS", str(columns))
    monkeypatch.setenv("PIXPROMPT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True, raising=False)
    model = ["--model", str(tiny_model_dirs["open_clip_clip"]), "--device", "cpu", "--workers", "0", "--quiet"]
    (colours / "red" / "broken.jpg").write_bytes(b"not an image")
    runs = {
        "models": (["models", "--filter", "ViT-B-16"], None),
        "eval": (["eval", *model, "--dataset", f"folder:{colours}", "--templates", "raw,standard",
                  "--no-cache"], "eval"),
        "classify": (["classify", str(colours / "red"), *model, "--labels", "red,green,blue", "--top-k", "2"],
                     "classify"),
    }
    monkeypatch.chdir(colours.parent)  # images inside the working folder are shown relative to it
    for name, (argv, kind) in runs.items():
        main(argv)
        table = re.sub(r"\x1b\[[0-9;]*m", "", capsys.readouterr().out)
        lines = table.splitlines()
        assert max(len(line) for line in lines) <= columns, name
        main([*argv, "--json"])
        records = json.loads(capsys.readouterr().out)
        if kind is None:  # every model name a user must copy stands whole on its line
            assert all(any(line.split()[0] == r["name"] for line in lines) for r in records)
        elif kind == "eval":
            if lines[0].startswith("same in every row:"):  # at 80 columns, what no row differs in goes above
                lines = lines[next(i for i, line in enumerate(lines) if line.startswith("model ")):]
            assert lines[0].startswith("model ") and "top1 %" in lines[0] and "templates" in lines[0]
            assert lines[2].split()[0] == tiny_model_dirs["open_clip_clip"].name  # the folder's name, not its path
            assert f"{100 * records[0]['top1']:.2f}" in lines[2]
        else:  # each image once; the error column only because an image failed
            images = [line.split()[0] for line in lines[2:] if line.startswith("colours/red/")]
            assert len(images) == len(set(images)) == 9 and "probability %" in lines[0]
            assert lines[0].split()[-1] == "error" and "UnidentifiedImageError" in table


def test_slow_steps_are_announced_and_progress_off_a_terminal_is_plain_lines(tiny_model_dirs, colours, capsys):
    assert main(["eval", "--model", str(tiny_model_dirs["open_clip_clip"]), "--device", "cpu", "--workers", "0",
                 "--dataset", f"folder:{colours}", "--templates", "clip7", "--no-cache", "--json"]) == 0
    err = capsys.readouterr().err
    assert err.splitlines()[:3] == ["pixprompt: loading open_clip_clip (local folder) on cpu…",
                                    "pixprompt: encoding 24 of 24 images",
                                    "pixprompt: building classifier: 3 classes × 7 templates (21 prompts)"]
    assert "\r" not in err  # captured stderr is no terminal: no carriage-return redraws


def test_plain_progress_prints_occasional_lines():
    import io

    from pixprompt.progress import PlainProgress

    stream = io.StringIO()
    with PlainProgress(total=10, desc="encode images", unit="img", file=stream, interval=0.0) as bar:
        for _ in range(10):
            bar.update(1)
    lines = stream.getvalue().splitlines()
    assert lines[0].startswith("pixprompt: encode images: 1/10 img (10%)") and "\r" not in stream.getvalue()
    assert lines[-1].startswith("pixprompt: encode images: 10/10 img (100%)")

"""Every command's table in a real 80-column terminal (a pseudo-terminal): the answer stays on screen, paths and
long names are shortened first, and a table too wide for the screen is stacked in blocks, never cut."""
from __future__ import annotations

import json

import pytest

from cli_runner import in_terminal, model_args, run_cli

COLUMNS = 80


@pytest.fixture(scope="module")
def screens(tiny_model_dirs, tmp_path_factory):
    """One child process in an 80-column terminal runs every command once; its screens by command, beside the
    same commands' --json answers (run in this process)."""
    root = tmp_path_factory.mktemp("terminal")
    deep = root / "a rather long folder name" / "holiday photos 2024" / "camera roll"
    from bad_inputs import write_photos

    for seed, (name, colour) in enumerate({"red": (220, 40, 40), "green": (40, 200, 40),
                                           "blue": (40, 40, 220)}.items()):
        write_photos(deep / name, 6, colour, seed)
        write_photos(root / "train" / name, 3, colour, seed + 10)  # the probe's training images, apart
    model = [*model_args(tiny_model_dirs["open_clip_clip"]), "--quiet", "--cache-dir", str(root / "cache")]
    config = root / "grid.yaml"
    config.write_text(f"models:\n  - model: {tiny_model_dirs['open_clip_clip']}\n"
                      f"datasets:\n  - dataset: folder:{deep}\ntemplates: [raw, standard, clip80]\n")
    methods_config = root / "methods.yaml"
    methods_config.write_text(f"models:\n  - model: {tiny_model_dirs['open_clip_clip']}\n"
                              f"datasets:\n  - dataset: folder:{deep}\ntemplates: [clip7]\n"
                              "method: [plain, zpe, tda, frolic]\n")
    labels = ["--labels", "red car,green meadow,deep blue sea"]
    commands = {
        "classify": ["classify", str(deep / "red"), *model, *labels, "--top-k", "2"],
        "classify two sets": ["classify", str(deep / "blue"), *model, *labels, "--top-k", "2",
                              "--templates", "raw,standard"],
        "eval": ["eval", *model, "--dataset", f"folder:{deep}", "--templates", "raw,standard"],
        "eval calibrated": ["eval", *model, "--dataset", f"folder:{deep}", "--calibrate", f"folder:{deep}",
                            "--min-probability", "0.5"],
        "bench": ["bench", "--config", str(config), "--device", "cpu", "--workers", "0", "--quiet",
                  "--cache-dir", str(root / "cache")],
        "probe": ["probe", *model, "--dataset", f"folder:{deep}", "--train-dataset", f"folder:{root / 'train'}",
                  "--shots", "1,2", "--seeds", "1", "--methods", "linear,tip-adapter"],
        "eval methods": ["eval", *model, "--dataset", f"folder:{deep}", "--templates", "clip7", "--method",
                         "plain,zpe,autoclip,zlap"],
        "bench methods": ["bench", "--config", str(methods_config), "--device", "cpu", "--workers", "0", "--quiet",
                          "--cache-dir", str(root / "cache")],
        "datasets": ["datasets"],
        "models": ["models", "--filter", "ViT-B-16"],
    }
    shown = dict(zip(commands, in_terminal(list(commands.values()), COLUMNS, cwd="/")))
    return shown, commands


def answers(capsys, argv: list[str]):
    code, out, _ = run_cli(capsys, *argv, "--json")
    assert code == 0
    return json.loads(out)


def lines_of(screen: str) -> list[str]:
    lines = screen.splitlines()
    assert lines and max(map(len, lines)) <= COLUMNS, screen
    return lines


@pytest.mark.parametrize("name", ["classify", "classify two sets"])
def test_classify_keeps_label_and_probability_and_shortens_the_path(screens, capsys, name):
    shown, commands = screens
    lines = lines_of(shown[name])
    assert "label" in lines[0] and "probability %" in lines[0] and "not shown" not in shown[name]
    rows = answers(capsys, commands[name])
    for row in rows:
        for top in row["top"]:  # every answer on one line: its label beside its probability
            assert any(top["label"] in line and f"{100 * top['probability']:.2f}" in line for line in lines), top
    file_names = {row["image"].rsplit("/", 1)[1] for row in rows}
    assert all(any(line.split("…")[-1].endswith(name) or name in line for line in lines) for name in file_names)
    assert "…" in shown[name]  # the long folder was elided, the file name kept
    if name == "classify two sets":
        assert "templates" in lines[0] and "standard" in shown[name]


def test_eval_keeps_every_accuracy(screens):
    shown, _ = screens
    lines = lines_of(shown["eval"])
    (header,) = [line for line in lines if line.startswith("model ")]  # one block: two rows fit once folded
    folded = " ".join(lines[:lines.index(header)])  # what no row differs in, above the table
    assert all(column in header or f"{column} " in folded for column in ("top1 %", "top5 %", "mean recall %",
                                                                         "templates"))
    assert "top1 %" in header and "templates" in header
    assert lines[0].startswith("same in every row:") and "ensemble embedding" in folded


def test_eval_calibrated_shows_temperature_ece_and_coverage(screens, capsys):
    shown, commands = screens
    screen = shown["eval calibrated"]
    lines_of(screen)
    for column in ("top1 %", "T", "ECE before %", "ECE after %", "coverage %", "covered top1 %"):
        assert column in screen, column
    (record,) = answers(capsys, commands["eval calibrated"])
    assert f"{100 * record['open_set']['coverage']:.2f}" in screen and f"{record['temperature']:.3g}"[:4] in screen


def test_bench_paper_table_keeps_ours_reported_and_delta(screens):
    shown, _ = screens
    screen = shown["bench"]
    lines_of(screen)
    for column in ("ours raw", "ours standard", "ours clip80", "delta", "reported CLIP T11"):
        assert column in screen, column
    assert "more columns" not in screen


def test_eval_with_methods_keeps_each_methods_accuracy_on_its_line(screens, capsys):
    shown, commands = screens
    lines = lines_of(shown["eval methods"])
    for record in answers(capsys, commands["eval methods"]):
        shown_method = record["method"] + ("*" if record.get("transductive") else "")
        assert any(shown_method in line.split() and f"{100 * record['top1']:.2f}" in line for line in lines), record


def test_bench_with_methods_prints_them_beside_plain(screens):
    shown, _ = screens
    screen = shown["bench methods"]
    lines_of(screen)
    for column in ("plain %", "zpe* %", "tda* %", "frolic* %"):
        assert column in screen, column
    assert "more columns" not in screen


def test_probe_datasets_and_models_fit(screens):
    from pixprompt.data.catalog import catalog

    shown, _ = screens
    assert "score %" in lines_of(shown["probe"])[1]  # under the title
    datasets = lines_of(shown["datasets"])
    assert all(any(line.split() and line.split()[0] == name for line in datasets) for name in catalog())
    models = lines_of(shown["models"])
    assert any(line.startswith("ViT-B-16 ") for line in models) and "params" in shown["models"]


def test_tables_off_a_terminal_are_whole(screens, capsys):
    """A pipe gets every column in full: nothing elided, nothing stacked."""
    _, commands = screens
    code, out, _ = run_cli(capsys, *commands["classify"])
    assert code == 0 and "…" not in out and "not shown" not in out  # capsys is no terminal

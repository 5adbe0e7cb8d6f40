"""A working day, round two (#35): outputs that agree with each other, the bench table's default set, configs checked
by one schema, suites that say where they looked and how to fetch what is missing, DataComp's --data-dir layouts."""
from __future__ import annotations

import csv
import io
import json

import pytest

from cli_runner import model_args, run_cli, strict_json

OPTIONS = {
    "top-2": ["--top-k", "2"],
    "min-probability": ["--top-k", "2", "--min-probability", "0.4"],
    "multi-label": ["--multi-label", "--threshold", "0.3"],
}
FORMATS = ["--json", "--csv", "jsonl", "csv", "parquet"]


def read_rows(form: str, out: str, output) -> list[dict]:
    """The rows of one format, each as (image, templates, prediction, [(label, probability)], error)."""
    if form == "--json":
        raw = strict_json(out)
    elif form == "jsonl":
        raw = [strict_json(line) for line in output.read_text().splitlines()]
    elif form == "parquet":
        import pyarrow.parquet as pq

        raw = []
        for r in pq.read_table(output).to_pylist():
            pairs = zip(r.pop("labels"), r.pop("probabilities"))
            raw.append({**r, "top": [{"label": label, "probability": p} for label, p in pairs]})
    else:
        text = out if form == "--csv" else output.read_text()
        raw = []
        for r in csv.DictReader(io.StringIO(text)):
            ranks = sorted(int(k.split("_")[1]) for k in r if k.startswith("label_"))
            raw.append({**r, "top": [{"label": r[f"label_{n}"], "probability": float(r[f"probability_{n}"])}
                                     for n in ranks if r[f"label_{n}"]]})
    columns = {frozenset(k for k in row if k not in ("top",) and not k.startswith(("label_", "probability_")))
               for row in raw}
    return columns, sorted((r["image"], r["templates"], r.get("prediction") or None,  # CSV has no null
                            tuple((t["label"], round(t["probability"], 9)) for t in r.get("top", [])),
                            r.get("error") or None)
                           for r in raw)


@pytest.mark.parametrize("option", list(OPTIONS))
def test_every_output_format_has_the_same_columns_in_the_same_units(tiny_model_dirs, colours, tmp_path, capsys,
                                                                   option):
    (colours / "broken.png").write_bytes(b"not an image")
    argv = ["classify", colours, *model_args(tiny_model_dirs["open_clip_clip"]), "--labels", "red,green,blue",
            "--cache-dir", tmp_path / "cache", *OPTIONS[option]]
    answers = {}
    for form in FORMATS:
        output = tmp_path / f"out.{form}"
        code, out, err = run_cli(capsys, *argv, *([form] if form.startswith("--") else ["--output", output]))
        assert code == 1, err  # the broken image
        answers[form] = read_rows(form, out, output)
    first_columns, first_rows = answers["--json"]
    for form, (columns, rows) in answers.items():
        assert rows == first_rows, form
        assert {"image", "templates", "error"} | ({"prediction"} if option == "min-probability" else set()) \
            >= set().union(*columns) - {"top"}, (form, columns)
    assert all(0 <= p <= 1 for row in first_rows for _, p in row[3])  # 0–1 everywhere, not percent
    if option == "min-probability":
        assert {row[2] for row in first_rows if not row[4]} <= {"red", "green", "blue", "unknown"}
        assert all(row[2] is not None for row in first_rows if not row[4])


def test_bench_shows_the_default_template_set_and_its_delta(tiny_model_dirs, colours, tmp_path, capsys):
    config = tmp_path / "grid.yaml"
    config.write_text(f"models: [{tiny_model_dirs['open_clip_clip']}]\ndatasets: [folder:{colours}]\n"
                      "templates: [default, raw]\n")
    code, out, err = run_cli(capsys, "bench", "--config", config, "--device", "cpu", "--workers", "0", "--no-cache",
                             "--csv")
    assert code == 0, err
    (row,) = list(csv.DictReader(io.StringIO(out)))
    assert row["ours default"] not in ("", "-") and row["ours raw"] not in ("", "-"), row


@pytest.mark.parametrize(("line", "said"), [
    ("template: [raw]", "unknown key `template`: did you mean `templates`?"),
    ("max_images: 10", "unknown key `max_images`:"),
    ("download: maybe", "`download` must be true or false, not a text ('maybe')"),
    ("templates: 5", "`templates` must be a text or a list of texts, not a number (5)"),
])
def test_a_misspelt_or_mistyped_config_key_is_refused_before_anything_runs(tiny_model_dirs, colours, tmp_path,
                                                                          capsys, line, said):
    config = tmp_path / "grid.yaml"
    config.write_text(f"models: [{tiny_model_dirs['open_clip_clip']}]\ndatasets: [folder:{colours}]\n{line}\n")
    code, out, err = run_cli(capsys, "bench", "--config", config, "--device", "cpu")
    assert code == 2 and out == "" and said in err and "loading" not in err, err


def test_every_config_key_is_documented_in_readme():
    from pathlib import Path

    from pixprompt.evaluation.grid_schema import CONFIG_KEYS, DATASET_KEYS, MODEL_KEYS

    readme = (Path(__file__).parents[1] / "README.md").read_text(encoding="utf-8")
    for key in CONFIG_KEYS:
        assert f"| `{key}` |" in readme, key
    for key in MODEL_KEYS:
        assert f"| `models: [{{{key}}}]` |" in readme, key
    for key in DATASET_KEYS:
        assert f"| `datasets: [{{{key}}}]` |" in readme, key


def test_fetch_commands_name_every_hosted_copy(capsys):
    code, out, _ = run_cli(capsys, "datasets", "--filter", "datacomp", "--fetch-commands", "/data/dc")
    lines = [line for line in out.splitlines() if line and not line.startswith(("#", "set "))]
    assert code == 0 and len(lines) == 38
    assert "hf download --repo-type dataset djghosh/wds_vtab-dtd_test --local-dir /data/dc/wds_vtab-dtd_test" in lines
    assert "hf download --repo-type dataset nlphuji/flickr_1k_test_image_text_retrieval --local-dir " \
           "/data/dc/flickr_1k_test_image_text_retrieval" in lines
    assert any("save_to_disk('/data/dc/winogavil')" in line for line in lines)


def test_datacomp_tables_read_from_a_folder_holding_them_as_readme_lays_it_out(loaded_models, tmp_path):
    """README: `--data-dir` may be DataComp's --data_dir, a folder holding `winogavil/` and
    `flickr_1k_test_image_text_retrieval/data/*.parquet`, or the task's own folder."""
    import datasets
    from PIL import Image

    from fake_datasets import write_winogavil_table
    from pixprompt.data.datasets import DatasetOptions, load_dataset

    root = tmp_path / "datacomp-eval"
    write_winogavil_table(root / "winogavil")
    table = datasets.Dataset.from_dict({"image": [Image.new("RGB", (16, 16), (i * 40, 90, 30)) for i in range(3)],
                                        "caption": [[f"caption {i}", f"another {i}"] for i in range(3)]},
                                       features=datasets.Features({"image": datasets.Image(), "caption":
                                                                   datasets.Sequence(datasets.Value("string"))}))
    (root / "flickr_1k_test_image_text_retrieval" / "data").mkdir(parents=True)
    table.to_parquet(str(root / "flickr_1k_test_image_text_retrieval" / "data" / "test-0.parquet"))
    for where in (root, root / "winogavil"):
        games = load_dataset("datacomp/misc/winogavil", DatasetOptions(str(where)))
        assert len(games.games) == 6
    for where in (root, root / "flickr_1k_test_image_text_retrieval",
                  root / "flickr_1k_test_image_text_retrieval" / "data"):
        flickr = load_dataset("datacomp/retrieval/flickr_1k_test_image_text_retrieval", DatasetOptions(str(where)))
        assert len(flickr.images) == 3 and json.dumps(flickr.captions[0]) == '["caption 0", "another 0"]'


def test_wrapped_tables_repeat_the_columns_that_tell_rows_apart(tmp_path):
    from pixprompt.reports.tables import SUMMARY_LAYOUT, fit_table, summary_columns, summary_row

    combos = [(d, t, m) for d in ("imagenet", "imagenet-sketch") for t in ("clip80", "standard")
              for m in ("plain", "zpe")]
    records = [{"model": "ViT-B-32", "pretrained": "openai", "dataset": dataset, "templates": templates,
                "ensemble": "embedding", "method": method, "top1": 0.6 + i / 100, "top5": 0.8 + i / 100,
                "mean_per_class_recall": 0.59 + i / 100, "ece": 0.04 + i / 1000, "images": 50000 - i, "skipped": i,
                **({"temperature": 1.2 + i / 10, "ece_uncalibrated": 0.05 + i / 100} if method == "plain" else {}),
                "open_set": {"threshold": 0.5, "coverage": 0.7 - i / 100, "accuracy": 0.81 + i / 100}}
               for i, (dataset, templates, method) in enumerate(combos)]
    rows = [summary_row(r) for r in records]
    lines = fit_table(rows, summary_columns(records), 80, SUMMARY_LAYOUT)
    assert max(map(len, lines)) <= 80
    blocks = [block.splitlines() for block in "\n".join(lines).split("\n\n")]
    blocks = [block[next(i for i, line in enumerate(block) if line.startswith("model")):] for block in blocks]
    assert len(blocks) >= 2
    for block in blocks:  # every block names each row by what differs between rows
        assert all(word in block[0] for word in ("model", "dataset", "templates", "method")), block[0]
        assert len(block) == 2 + len(records)
    assert all(r["ECE after %"] is None for r in rows if r["method"] == "zpe")  # never its uncalibrated ECE


def test_numbers_in_one_column_share_their_decimals():
    from pixprompt.reports.tables import fit_table

    lines = fit_table([{"name": "a", "T": 1.5}, {"name": "b", "T": 0.123}, {"name": "c", "T": 12.0}],
                      ["name", "T"], None)
    assert [line.split()[-1] for line in lines[2:]] == ["1.500", "0.123", "12.000"]


def test_report_keeps_results_of_different_runs_apart(tiny_model_dirs, colours, tmp_path, capsys):
    from cli_runner import eval_args

    runs = {}
    for name, extra in (("all", []), ("some", ["--max-images", "12"])):
        runs[name] = tmp_path / f"{name}.json"
        code, _, err = run_cli(capsys, *eval_args(tiny_model_dirs["open_clip_clip"], colours, "--no-cache",
                                                  "--output", runs[name]))
        assert code == 0, err
        if extra:  # a second run on fewer images, under the same model, dataset and templates
            code, _, err = run_cli(capsys, *eval_args(tiny_model_dirs["open_clip_clip"], colours, "--no-cache",
                                                      "--output", runs[name], *extra))
    code, _, err = run_cli(capsys, "report", runs["all"], runs["some"], "--output", tmp_path / "report.html")
    assert code == 0, err
    assert "all.json and some.json both hold" in err and "kept apart as 'some'" in err
    html = (tmp_path / "report.html").read_text()
    assert "open_clip_clip · some" in html and html.count("open_clip_clip") >= 2


def test_ctrl_c_without_a_cache_says_what_was_kept_and_the_resume_is_no_warning(tiny_model_dirs, tmp_path):
    """A real SIGINT to `classify -o … --no-cache` once a part is written: the words say the features were not
    cached and the finished rows were kept; the rerun joins them and says so as information."""
    import signal
    import subprocess
    import sys
    import time

    from launching import TIMEOUT, launch_env, wait_for, write_slow_photos

    photos = write_slow_photos(tmp_path / "photos", per_class=12)
    output = tmp_path / "preds.jsonl"
    command = [sys.executable, "-m", "pixprompt", "classify", photos, *model_args(tiny_model_dirs["open_clip_clip"]),
               "--labels", "red,blue", "--no-cache", "--output", output]
    env = launch_env(tmp_path / "unused-cache", PIXPROMPT_SHARD_SIZE="4")
    job = subprocess.Popen(list(map(str, command)), env=env, stderr=subprocess.PIPE, text=True)
    parts = tmp_path / ".preds.jsonl.parts"
    wait_for(lambda: len(list(parts.glob("0*-r*"))) >= 1, time.monotonic() + TIMEOUT, "a part")
    job.send_signal(signal.SIGINT)
    _, err = job.communicate(timeout=TIMEOUT)
    assert job.returncode == 130, err
    assert "are not cached (--no-cache): the next run encodes them again" in err
    assert "shard(s) finished so far are kept in" in err and str(parts) in err
    rerun = subprocess.run(list(map(str, command)), env=env, capture_output=True, text=True, timeout=TIMEOUT)
    assert rerun.returncode == 0, rerun.stderr
    assert "shard(s) were already written by an earlier run; joined as they were" in rerun.stderr
    assert "WARNING" not in rerun.stderr
    assert len(output.read_text().splitlines()) == 24


def test_an_offline_datacomp_suite_is_one_summary_with_the_way_forward(tiny_model_dirs, tmp_path, capsys,
                                                                       monkeypatch):
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # a Hub nobody answers for, as offline
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")
    config = tmp_path / "grid.yaml"
    config.write_text(f"models: [{tiny_model_dirs['open_clip_clip']}]\nsuite: datacomp\n"
                      f"data_root: {tmp_path / 'nothing-here'}\n")
    code, out, err = run_cli(capsys, "bench", "--config", config, "--device", "cpu")
    lines = [line for line in err.splitlines() if line.startswith("pixprompt")]
    assert code == 3 and out == "", err
    assert len([line for line in lines if "left out" in line]) == 1 and len(lines) == 2, err
    assert "38 dataset(s) left out" in err and "--fetch-commands" in err
    assert "thrown while requesting" not in err  # no library retrying the Hub task after task

"""Integrity at scale (#20): no silent wrong number, no stale, mixed or damaged row.

Every fault is produced for real: two torchrun nodes that really list different folders, a run really
SIGKILLed part-way, an image really replaced between runs, a second real process writing the same output,
part files really truncated, overwritten, replaced by links and FIFOs.
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bad_inputs import text_named_jpg, truncated_jpeg, write_photos, zero_byte
from cli_runner import model_args, run_cli, strict_json
from launching import (
    TIMEOUT,
    finished,
    free_port,
    has_pixprompt_frame,
    launch_env,
    torchrun,
    wait_for,
    write_slow_photos,
)


@pytest.fixture(scope="module")
def slow_photos(tmp_path_factory) -> Path:
    return write_slow_photos(tmp_path_factory.mktemp("slow-photos"))


# -- ranks that see different listings ---------------------------------------------------------------------------
def node_views(colours: Path, tmp_path: Path, extra: str) -> list[Path]:
    """Two nodes' working folders, each with `photos/` linking the same files; node 1's also holds one more
    real photo (`extra`, relative to photos/), as a folder still being written shows it to a later listing."""
    folders = []
    for node in (0, 1):
        folder = tmp_path / f"node{node}"
        for photo in sorted(colours.rglob("*.png")):
            link = folder / "photos" / photo.parent.name / photo.name
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(photo)
        folders.append(folder)
    shutil.copy(next(colours.rglob("*.png")), folders[1] / "photos" / extra)
    return folders


@pytest.mark.parametrize(("command", "extra", "said"), [
    ("eval", "blue/photo-000a.png", "rank 1 sees other items than rank 0 in shard 1"),
    ("classify", "red/zz-late.png", "rank 1 lists more items than rank 0 (shard 3 exists on rank 1 only)"),
])
def test_ranks_that_list_different_files_stop_the_job_naming_the_shard(tiny_model_dirs, colours, tmp_path, command,
                                                                       extra, said):
    folders = node_views(colours, tmp_path, extra)
    model = model_args(tiny_model_dirs["open_clip_clip"])
    args = ["eval", *model, "--dataset", "folder:photos", "--templates", "raw", "--json"] if command == "eval" \
        else ["classify", "photos", *model, "--labels", "red,green,blue", "--output", "preds.jsonl"]
    port = free_port()
    nodes = [torchrun(args, launch_env(tmp_path / "cache"), nproc=1, node=(n, 2, port), cwd=folders[n])
             for n in (0, 1)]
    (code0, out0, err0), (code1, out1, err1) = map(finished, nodes)
    assert code0 != 0 and code1 != 0
    assert out0 == out1 == ""  # no records, no rows
    assert said in err0 and "every rank must list the same files" in err0, err0
    assert not has_pixprompt_frame(err0 + err1)  # torchrun prints its own frames for a failed child, never ours
    assert not (folders[0] / "preds.jsonl").exists()


def test_ranks_with_different_shard_sizes_get_one_line(tiny_model_dirs, colours, tmp_path):
    args = ["eval", *model_args(tiny_model_dirs["open_clip_clip"]), "--dataset", f"folder:{colours}",
            "--templates", "raw", "--json"]
    port = free_port()
    nodes = [torchrun(args, launch_env(tmp_path / "cache", PIXPROMPT_SHARD_SIZE=size), nproc=1, node=(n, 2, port))
             for n, size in ((0, "8"), (1, "16"))]
    (code0, out0, err0), (code1, _, err1) = map(finished, nodes)
    assert code0 != 0 and code1 != 0 and out0 == ""  # torchrun exits 1 for any failed child
    assert "rank 0 uses 8 items, rank 1 16 (PIXPROMPT_SHARD_SIZE differs)" in err0
    assert not has_pixprompt_frame(err0 + err1) and "TypeError" not in err0 + err1


@pytest.mark.parametrize(("variables", "said"), [
    ({"PIXPROMPT_SHARD_SIZE": "0"}, "PIXPROMPT_SHARD_SIZE=0 is out of range"),
    ({"PIXPROMPT_SHARD_SIZE": "-1"}, "PIXPROMPT_SHARD_SIZE=-1 is out of range"),
    ({"PIXPROMPT_SHARD_SIZE": "1" + "0" * 30}, "PIXPROMPT_SHARD_SIZE=1000"),
    ({"PIXPROMPT_SHARD_SIZE": "abc"}, "PIXPROMPT_SHARD_SIZE='abc' is not a whole number"),
    ({"PIXPROMPT_SHARD_SIZE": "1e3"}, "PIXPROMPT_SHARD_SIZE='1e3' is not a whole number"),
    ({"RANK": "abc", "WORLD_SIZE": "2"}, "RANK='abc' is not a whole number"),
    ({"SLURM_PROCID": "0", "SLURM_NTASKS": "two"}, "SLURM_NTASKS='two' is not a whole number"),
    ({"RANK": "3", "WORLD_SIZE": "2"}, "RANK=3 is not a rank of a job of WORLD_SIZE=2 processes"),
    ({"RANK": "0", "WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1", "PIXPROMPT_DIST_TIMEOUT": "abc"},
     "PIXPROMPT_DIST_TIMEOUT='abc' is not a number"),
])
def test_a_bad_setting_is_one_line_naming_the_variable(tmp_path, variables, said):
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "SLURM_PROCID", "SLURM_NTASKS")}
    result = subprocess.run([sys.executable, "-m", "pixprompt", "datasets", "--json"], capture_output=True,
                            text=True, env={**env, "PIXPROMPT_CACHE": str(tmp_path), **variables}, timeout=TIMEOUT)
    assert result.returncode == 2 and result.stdout == ""
    assert said in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr


# -- resumable output ---------------------------------------------------------------------------------------------
def classify_command(inputs: list[Path], model_dir: Path, output: Path, *extra) -> list[str]:
    return [sys.executable, "-m", "pixprompt", "classify", *map(str, inputs), *model_args(model_dir), "--labels",
            "red,blue,green", "--output", str(output), *map(str, extra)]


def killed_after_parts(command: list[str], env: dict, parts: Path, count: int) -> list[Path]:
    """Run `command`, SIGKILL it once `count` parts are written; the parts it left."""
    job = subprocess.Popen(command, env=env, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: len(list(parts.glob("0*-r*"))) >= count, time.monotonic() + TIMEOUT, f"{count} parts")
    finally:
        job.send_signal(signal.SIGKILL)
        job.wait(TIMEOUT)
    left = sorted(parts.glob("0*-r*"))
    assert count <= len(left) < 10, "the run finished before it could be killed"
    return left


def read_rows(path: Path) -> list[dict]:
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        return pq.read_table(path).to_pylist()
    return [strict_json(line) for line in path.read_text().splitlines()]


def clean_rows(inputs: list[Path], model_dir: Path, tmp_path: Path, suffix: str) -> list[dict]:
    """The rows of an uninterrupted run without any cache."""
    output = tmp_path / f"clean{suffix}"
    result = subprocess.run(classify_command(inputs, model_dir, output, "--no-cache"), capture_output=True,
                            text=True, env=launch_env(tmp_path / "clean-cache"), timeout=TIMEOUT)
    assert result.returncode == 0, result.stderr
    return read_rows(output)


def test_an_image_replaced_between_runs_is_classified_again_on_resume(tiny_model_dirs, slow_photos, tmp_path):
    mine = tmp_path / "mine"
    write_photos(mine / "a", 8, (200, 40, 40), seed=1)  # exactly shard 0
    inputs, model = [mine, slow_photos], tiny_model_dirs["open_clip_clip"]
    output = tmp_path / "preds.jsonl"
    env = launch_env(tmp_path / "cache")
    killed_after_parts(classify_command(inputs, model, output), env, tmp_path / ".preds.jsonl.parts", 2)
    replaced = mine / "a" / "photo-000.png"
    write_photos(tmp_path / "other", 1, (30, 30, 220), seed=9)
    shutil.copy(tmp_path / "other" / "photo-000.png", replaced)  # same path, other picture
    rerun = subprocess.run(classify_command(inputs, model, output), env=env, capture_output=True, text=True,
                           timeout=TIMEOUT)
    assert rerun.returncode == 0, rerun.stderr
    rows, expected = read_rows(output), clean_rows(inputs, model, tmp_path, ".jsonl")
    # the replaced image was encoded alone, the clean run encoded it in a batch: float32 sums agree to ~1e-7
    assert rows[0]["image"] == str(replaced)
    assert rows == [{**row, "top": [{**top, "probability": pytest.approx(top["probability"], rel=1e-5)}
                                    for top in row["top"]]} for row in expected]


def test_damaged_parts_are_classified_again_never_joined(tiny_model_dirs, slow_photos, tmp_path):
    model, output = tiny_model_dirs["open_clip_clip"], tmp_path / "preds.jsonl"
    parts = tmp_path / ".preds.jsonl.parts"
    env = launch_env(tmp_path / "cache")
    first, second, third, fourth = killed_after_parts(classify_command([slow_photos], model, output), env, parts,
                                                      4)[:4]
    secret = tmp_path / "secret.jsonl"
    secret.write_text('{"image": "ZZTOPSECRET_4242"}\n')
    first.write_bytes(first.read_bytes()[: first.stat().st_size // 2])  # truncated
    second.write_bytes(b"GARBAGE NOT JSON\n")  # garbage under a part's name
    third.unlink()
    third.symlink_to(secret)  # a planted link
    fourth.unlink()
    os.mkfifo(fourth)  # a FIFO: reading it would hang
    (parts / "unrelated.txt").write_text("x")
    rerun = subprocess.run(classify_command([slow_photos], model, output), env=env, capture_output=True, text=True,
                           timeout=TIMEOUT)
    assert rerun.returncode == 0, rerun.stderr
    text = output.read_text()
    assert "ZZTOPSECRET" not in text and "GARBAGE" not in text
    assert secret.read_text() == '{"image": "ZZTOPSECRET_4242"}\n'  # the link's target untouched
    assert rerun.stderr.count("is damaged") == 4, rerun.stderr
    assert read_rows(output) == clean_rows([slow_photos], model, tmp_path, ".jsonl")
    assert not parts.exists()


def test_a_tiny_parquet_part_is_classified_again(tiny_model_dirs, slow_photos, tmp_path):
    model, output = tiny_model_dirs["open_clip_clip"], tmp_path / "preds.parquet"
    env = launch_env(tmp_path / "cache")
    left = killed_after_parts(classify_command([slow_photos], model, output), env, tmp_path / ".preds.parquet.parts",
                              2)
    left[0].write_bytes(b"PAR1 fifteen b.")  # 15 bytes
    for _ in range(2):  # every rerun works, not only the first
        rerun = subprocess.run(classify_command([slow_photos], model, output), env=env, capture_output=True,
                               text=True, timeout=TIMEOUT)
        assert rerun.returncode == 0, rerun.stderr
    assert read_rows(output) == clean_rows([slow_photos], model, tmp_path, ".parquet")


def test_a_second_run_into_the_same_output_refuses_at_once(tiny_model_dirs, slow_photos, tmp_path):
    model, output = tiny_model_dirs["open_clip_clip"], tmp_path / "same.jsonl"
    parts = tmp_path / ".same.jsonl.parts"
    env = launch_env(tmp_path / "cache")
    first = subprocess.Popen(classify_command([slow_photos], model, output, "--top-k", "2"), env=env,
                             stderr=subprocess.PIPE, text=True)
    wait_for(lambda: (parts / "owner.pid").exists(), time.monotonic() + TIMEOUT, "the first run's lock")
    assert parts.stat().st_mode & 0o777 == 0o700  # private: no other user can plant a part
    started = time.monotonic()
    second = subprocess.run(classify_command([slow_photos], model, output, "--top-k", "3"), env=env,
                            capture_output=True, text=True, timeout=TIMEOUT)
    assert second.returncode == 2
    assert f"another pixprompt run (pid {first.pid}) is writing {output}" in second.stderr
    assert time.monotonic() - started < 30  # refused before any model is loaded or image encoded
    _, err = first.communicate(timeout=TIMEOUT)
    assert first.returncode == 0, err
    assert {len(row["top"]) for row in read_rows(output)} == {2}


def test_a_dead_runs_lock_is_taken_over(tiny_model_dirs, slow_photos, tmp_path):
    model, output = tiny_model_dirs["open_clip_clip"], tmp_path / "same.jsonl"
    env = launch_env(tmp_path / "cache")
    killed_after_parts(classify_command([slow_photos], model, output, "--top-k", "2"), env,
                       tmp_path / ".same.jsonl.parts", 1)
    rerun = subprocess.run(classify_command([slow_photos], model, output, "--top-k", "3"), env=env,
                           capture_output=True, text=True, timeout=TIMEOUT)
    assert rerun.returncode == 0, rerun.stderr
    assert "made with other settings; starting it over" in rerun.stderr
    assert {len(row["top"]) for row in read_rows(output)} == {3}


@pytest.mark.parametrize("kind", ["link", "file"])
def test_a_parts_path_that_is_a_link_or_a_file_is_one_line(tiny_model_dirs, colours, tmp_path, capsys, kind):
    output, parts = tmp_path / "x.jsonl", tmp_path / ".x.jsonl.parts"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "keep.txt").write_text("mine")
    if kind == "link":
        parts.symlink_to(elsewhere)
    else:
        parts.write_text("a file")
    code, out, err = run_cli(capsys, "classify", colours, *model_args(tiny_model_dirs["open_clip_clip"]),
                             "--labels", "a,b", "--output", output)
    assert code == 2 and out == ""
    assert ("is a link" if kind == "link" else "is not a folder") in err and len(err.strip().splitlines()) == 1
    assert sorted(p.name for p in elsewhere.iterdir()) == ["keep.txt"] and not output.exists()


def test_a_refused_run_and_a_killed_join_leave_nothing_behind(tiny_model_dirs, colours, tmp_path, capsys):
    from pixprompt.storage import _HOST

    empty = tmp_path / "empty"
    empty.mkdir()
    model = model_args(tiny_model_dirs["open_clip_clip"])
    code, _, err = run_cli(capsys, "classify", empty, *model, "--labels", "a,b", "--output", tmp_path / "x.jsonl")
    assert code == 2 and "no images found" in err
    assert not (tmp_path / ".x.jsonl.parts").exists()
    gone = subprocess.Popen(["true"])
    gone.wait()
    leftover = tmp_path / f".x.jsonl.{_HOST}.{gone.pid}.abc123.partial"  # what a join killed mid-write leaves
    leftover.write_text('{"image": "half')
    code, _, err = run_cli(capsys, "classify", colours, *model, "--labels", "a,b", "--output", tmp_path / "x.jsonl")
    assert code == 0, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["colours", "empty", "x.jsonl"]


# -- no usable image is a failed run ---------------------------------------------------------------------------
def test_a_dataset_with_no_readable_image_fails_with_one_line(tiny_model_dirs, tmp_path, capsys):
    for name in ("cat", "dog"):
        (tmp_path / "bad" / name).mkdir(parents=True)
        text_named_jpg(tmp_path / "bad" / name / "a")
        truncated_jpeg(tmp_path / "bad" / name / "b")
        zero_byte(tmp_path / "bad" / name / "c")
    code, out, err = run_cli(capsys, "eval", *model_args(tiny_model_dirs["open_clip_clip"]), "--dataset",
                             f"folder:{tmp_path / 'bad'}", "--templates", "raw", "--json", "--no-cache")
    assert code == 3 and out == ""
    assert "no image of " in err and "could be read: 6 skipped, e.g. " in err
    assert len([line for line in err.splitlines() if "error:" in line]) == 1


# -- strict JSON -------------------------------------------------------------------------------------------------
def test_every_json_output_is_strict_json(tiny_model_dirs, colours, tmp_path, capsys):
    """`open_set.accuracy` of a threshold no image reaches has no value: null, never NaN."""
    model = model_args(tiny_model_dirs["open_clip_clip"])
    records = tmp_path / "records.json"
    code, out, err = run_cli(capsys, "eval", *model, "--dataset", f"folder:{colours}", "--templates", "raw",
                             "--min-probability", "1.0", "--json", "--output", records)
    assert code == 0, err
    for text in (out, records.read_text()):
        (record,) = strict_json(text)
        assert record["open_set"]["accuracy"] is None and record["open_set"]["coverage"] == 0.0
    code, out, _ = run_cli(capsys, "classify", colours, *model, "--labels", "a,b", "--json", "--output",
                           tmp_path / "rows.jsonl")
    assert code == 0
    for line in (tmp_path / "rows.jsonl").read_text().splitlines():
        strict_json(line)
    for command in (["datasets", "--json"], ["classify", colours, *model, "--labels", "a,b", "--json"]):
        code, out, _ = run_cli(capsys, *command)
        assert code == 0 and strict_json(out)

"""Scale-out: torchrun with 2 CPU processes (gloo), shared and node-local caches, real SIGKILLs, resumable
classify output, and the streamed listing."""
from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from PIL import Image

from cli_runner import model_args, run_cli
from launching import TIMEOUT, finished, free_port, launch_env, torchrun, wait_for, write_slow_photos
from pixprompt.distributed import Ranks, discover, shard_ranges

#: Record fields computed from float32 probabilities: a process with other thread counts (torchrun gives each rank
#: one) sums the same matrix products in another order, so they agree to about 1e-7, not bit for bit.
PROBABILITY_FIELDS = ("ece", "nll", "brier", "reliability", "ci")


def without_timing(records: list[dict]) -> list[dict]:
    """Records without their timing; probability-based fields (see PROBABILITY_FIELDS) as `Close` numbers, equal to
    another within 1e-5 (a rounding to fixed places would split two values on either side of a boundary)."""
    def close(value):
        if isinstance(value, float):
            return Close(value)
        if isinstance(value, list):
            return [close(v) for v in value]
        if isinstance(value, dict):
            return {k: close(v) for k, v in value.items()}
        return value

    return [{k: close(v) if k in PROBABILITY_FIELDS else v for k, v in record.items() if k != "elapsed_s"}
            for record in records]


class Close(float):
    """A float equal to any number within 1e-5 of it."""

    def __eq__(self, other: object) -> bool:
        return isinstance(other, float) and math.isclose(self, other, rel_tol=1e-5, abs_tol=1e-7)

    __hash__ = float.__hash__


def rank_processes(marker: str, rank: int) -> dict[int, int]:
    """{pid: parent pid} of the processes with RUN_MARKER=`marker` and RANK=`rank` (the rank and its
    decoding workers), read from /proc."""
    found = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                environ = (entry / "environ").read_bytes().split(b"\0")
                status = (entry / "status").read_text()
            except OSError:
                continue
            if f"RUN_MARKER={marker}".encode() in environ and f"RANK={rank}".encode() in environ:
                found[int(entry.name)] = int(status.split("PPid:")[1].split()[0])
    return found


def rank_pid(marker: str, rank: int, deadline: float) -> int:
    """The pid of the launched rank `rank` (not one of its workers)."""
    while time.monotonic() < deadline:
        processes = rank_processes(marker, rank)
        ranks = [pid for pid, parent in processes.items() if parent not in processes]
        if ranks:
            return ranks[0]
        time.sleep(0.05)
    raise AssertionError(f"no rank {rank} process appeared")


@pytest.fixture(scope="module")
def slow_photos(tmp_path_factory) -> Path:
    return write_slow_photos(tmp_path_factory.mktemp("slow-photos"))


def real_folder(shared_data: Path, tmp_path: Path, per_class: int = 6) -> Path:
    """A few real CIFAR-10 test images per class, in the folder layout."""
    root = tmp_path / "cifar"
    for folder in sorted((shared_data / "cifar10-test").iterdir()):
        (root / folder.name).mkdir(parents=True)
        for image in sorted(folder.iterdir())[:per_class]:
            (root / folder.name / image.name).symlink_to(image)
    return root


# -- rank discovery and shards -----------------------------------------------------------------------------------
def test_ranks_come_from_torchrun_slurm_or_mpi_and_default_to_one_process():
    assert discover({}) == Ranks(0, 1, 0)
    assert discover({"RANK": "3", "WORLD_SIZE": "8", "LOCAL_RANK": "1"}) == Ranks(3, 8, 1)
    assert discover({"SLURM_PROCID": "5", "SLURM_NTASKS": "6", "SLURM_LOCALID": "2"}) == Ranks(5, 6, 2)
    assert discover({"OMPI_COMM_WORLD_RANK": "1", "OMPI_COMM_WORLD_SIZE": "2"}) == Ranks(1, 2, 0)
    # a SLURM batch step with one task is one process, whatever the allocation
    assert discover({"SLURM_PROCID": "0", "SLURM_NTASKS": "1"}) == Ranks()
    # torchrun's variables win over the SLURM job torchrun itself runs in
    assert discover({"RANK": "1", "WORLD_SIZE": "2", "SLURM_PROCID": "0", "SLURM_NTASKS": "4"}) == Ranks(1, 2, 0)


def test_shards_do_not_depend_on_the_number_of_ranks():
    shards = shard_ranges(20, 8)
    assert shards == [range(0, 8), range(8, 16), range(16, 20)]
    assert sorted(i for shard in shards for i in shard) == list(range(20))  # no padding, nothing lost


# -- eval under torchrun -------------------------------------------------------------------------------------
def test_torchrun_eval_equals_one_process_with_a_shared_cache(tiny_model_dirs, shared_data, tmp_path, capsys):
    folder = real_folder(shared_data, tmp_path)
    args = ["eval", *model_args(tiny_model_dirs["open_clip_clip"]), "--dataset", f"folder:{folder}",
            "--templates", "raw,standard", "--json"]
    code, out, err = finished(torchrun(args, launch_env(tmp_path / "shared")))
    assert code == 0, err
    distributed = json.loads(out)  # rank 0 alone printed: one JSON document
    assert distributed[0]["encoded_images"] == 60 and "encoding 60 of 60 images on 2 processes" in err
    code, single_out, _ = run_cli(capsys, *args, "--no-cache")
    single = json.loads(single_out)
    assert without_timing(distributed) == [{**r, "encoded_images": 60, "cached_images": 0}
                                           for r in without_timing(single)]
    # one process again on the shared cache: every shard the two ranks wrote is reused
    code, again, _ = run_cli(capsys, *args, "--cache-dir", tmp_path / "shared")
    assert json.loads(again)[0]["encoded_images"] == 0 and json.loads(again)[0]["top1"] == single[0]["top1"]


def test_two_nodes_with_node_local_caches_send_features_to_rank_0(tiny_model_dirs, shared_data, tmp_path, capsys):
    folder = real_folder(shared_data, tmp_path)
    args = ["eval", *model_args(tiny_model_dirs["open_clip_clip"]), "--dataset", f"folder:{folder}",
            "--templates", "raw", "--json"]
    port = free_port()
    nodes = [torchrun(args, launch_env(tmp_path / f"node{n}-cache"), nproc=1, node=(n, 2, port)) for n in (0, 1)]
    (code0, out0, err0), (code1, out1, err1) = map(finished, nodes)
    assert code0 == code1 == 0, err0 + err1
    assert out1 == ""  # only rank 0 prints results
    code, single, _ = run_cli(capsys, *args, "--no-cache")
    assert without_timing(json.loads(out0)) == without_timing(json.loads(single))
    for node in (0, 1):  # each node cached only its own shards (rank r: shards r, r+2, …)
        chunks = list((tmp_path / f"node{node}-cache").rglob("chunk-*.safetensors"))
        assert len(chunks) == 4  # 60 images in 8 shards: 0, 2, 4, 6 on rank 0; 1, 3, 5, 7 (short) on rank 1


def test_a_rank_killed_mid_run_loses_only_its_shard_and_the_rerun_is_identical(tiny_model_dirs, slow_photos,
                                                                               tmp_path, capsys):
    args = ["eval", *model_args(tiny_model_dirs["open_clip_clip"]), "--dataset", f"folder:{slow_photos}",
            "--templates", "raw", "--json"]
    marker = uuid.uuid4().hex
    env = launch_env(tmp_path / "cache", RUN_MARKER=marker)
    job = torchrun(args, env)
    deadline = time.monotonic() + TIMEOUT
    victim = rank_pid(marker, 1, deadline)
    wait_for(lambda: len(list((tmp_path / "cache").rglob("chunk-*.safetensors"))) >= 2, deadline, "two shards")
    os.kill(victim, signal.SIGKILL)
    code, out, err = finished(job)
    assert code != 0 and out == ""
    kept = len(list((tmp_path / "cache").rglob("chunk-*.safetensors")))
    assert 2 <= kept < 10  # 80 images in 10 shards: some were done, not all
    code, out, err = finished(torchrun(args, env))
    assert code == 0, err
    (resumed,) = json.loads(out)
    assert 0 < resumed["encoded_images"] < 80 and resumed["cached_images"] == 80 - resumed["encoded_images"]
    code, single, _ = run_cli(capsys, *args, "--no-cache")
    (clean,) = json.loads(single)
    assert without_timing([resumed])[0] | {"encoded_images": 80, "cached_images": 0} == without_timing([clean])[0]


def test_a_rank_that_fails_stops_the_job_with_one_line_naming_it(tiny_model_dirs, colours, tmp_path):
    """Node 1 lacks the model folder (relative path, other working folder): it names itself and the reason;
    node 0 does not hang."""
    (tmp_path / "node0").mkdir()
    (tmp_path / "node1").mkdir()
    (tmp_path / "node0" / "model").symlink_to(tiny_model_dirs["open_clip_clip"])
    args = ["eval", "--model", "local-dir:model", "--device", "cpu", "--dataset", f"folder:{colours}", "--json"]
    port = free_port()
    started = time.monotonic()
    nodes = [torchrun(args, launch_env(tmp_path / "cache"), nproc=1, node=(n, 2, port), cwd=tmp_path / f"node{n}")
             for n in (0, 1)]
    (code0, _, err0), (code1, _, err1) = map(finished, nodes)
    assert code0 != 0 and code1 != 0 and time.monotonic() - started < 120
    (line,) = [line for line in err1.splitlines() if line.startswith("pixprompt [rank 1/2]: error:")]
    assert "model" in line
    assert "pixprompt [rank 0/2]: error: rank 0: lost contact with the other ranks" in err0


def test_a_failure_inside_a_rank_stops_every_rank_and_rank_0_names_it(tiny_model_dirs, slow_photos, tmp_path):
    """Rank 1's image-decoding worker is killed: rank 1's DataLoader raises, and the whole job stops with
    one error line, from rank 0, naming rank 1 and the reason."""
    args = ["eval", "--model", tiny_model_dirs["open_clip_clip"], "--device", "cpu", "--workers", "1",
            "--dataset", f"folder:{slow_photos}", "--templates", "raw", "--json"]
    marker = uuid.uuid4().hex
    job = torchrun(args, launch_env(tmp_path / "cache", RUN_MARKER=marker))
    deadline = time.monotonic() + TIMEOUT
    rank1 = rank_pid(marker, 1, deadline)
    # rank 1's decoding workers (one per shard), killed as they appear until the job ends: a worker killed just
    # after its shard's last image fails nothing, so one kill alone would make the test a race
    while job.poll() is None:
        assert time.monotonic() < deadline
        for pid in [pid for pid, parent in rank_processes(marker, 1).items() if parent == rank1]:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.01)
    code, out, err = finished(job)
    assert code != 0 and out == ""
    (line,) = [line for line in err.splitlines() if line.startswith("pixprompt") and "error:" in line]
    assert line.startswith("pixprompt [rank 0/2]: error: rank 1 of 2 failed:") and "DataLoader worker" in line


def test_torchrun_bench_shards_each_job_and_rank_0_alone_writes_the_files(tiny_model_dirs, colours, tmp_path,
                                                                           capsys):
    config = tmp_path / "grid.yaml"
    config.write_text(f"models:\n  - model: {tiny_model_dirs['open_clip_clip']}\n"
                      f"  - model: {tiny_model_dirs['open_clip_siglip']}\n"
                      f"datasets:\n  - dataset: folder:{colours}\ntemplates: [raw, standard]\n")
    args = ["bench", "--config", config, "--device", "cpu", "--workers", "0"]
    code, out, err = finished(torchrun([*args, "--output", tmp_path / "two.json", "--report", tmp_path / "two.html"],
                                       launch_env(tmp_path / "cache")))
    assert code == 0, err
    assert "ours raw" in out and err.count("report written to") == 1
    code, _, _ = run_cli(capsys, *args, "--no-cache", "--output", tmp_path / "one.json")
    two, one = (json.loads((tmp_path / name).read_text()) for name in ("two.json", "one.json"))
    assert len(two) == 4 and all(r["encoded_images"] == 24 for r in two)  # each (model, dataset) job encoded once
    assert without_timing(two) == without_timing(one)


def test_the_python_api_streams_predictions_shard_by_shard(loaded_models, colours, tmp_path, monkeypatch):
    from pixprompt import build_classifier, resolve_templates
    from pixprompt.data.images import iter_images
    from pixprompt.evaluation.predict import classify_many, iter_predictions

    monkeypatch.setenv("PIXPROMPT_SHARD_SIZE", "5")
    model = loaded_models["open_clip_clip"]
    classifier = build_classifier(model, ["red", "green", "blue"], resolve_templates("raw")[0])
    shards = list(iter_predictions(model, [classifier], iter_images([str(colours)]), top_k=2, workers=0,
                                   cache_root=tmp_path))
    assert [number for number, _, _ in shards] == [0, 1, 2, 3, 4] and [len(paths) for _, paths, _ in shards] == \
        [5, 5, 5, 5, 4]
    streamed = [prediction for _, _, (predictions,) in shards for prediction in predictions]
    (held,) = classify_many(model, [classifier], sorted(colours.rglob("*.png")), top_k=2, workers=0, cache_root=None)
    assert streamed == held


# -- classify at scale ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("suffix", [".jsonl", ".parquet"])
def test_classify_output_killed_and_rerun_has_every_image_exactly_once(tiny_model_dirs, slow_photos, tmp_path,
                                                                       suffix):
    def read(path: Path) -> list[dict]:
        if suffix == ".parquet":
            import pyarrow.parquet as pq

            return pq.read_table(path).to_pylist()
        return [json.loads(line) for line in path.read_text().splitlines()]

    output = tmp_path / f"preds{suffix}"
    command = [sys.executable, "-m", "pixprompt", "classify", slow_photos,
               *model_args(tiny_model_dirs["open_clip_clip"]), "--labels", "red,blue,green", "--output", output]
    env = launch_env(tmp_path / "cache")
    job = subprocess.Popen(list(map(str, command)), env=env, stderr=subprocess.PIPE, text=True)
    parts = tmp_path / f".{output.name}.parts"
    deadline = time.monotonic() + TIMEOUT
    wait_for(lambda: len(list(parts.glob(f"0*{suffix}"))) >= 2, deadline, "two written shards")
    job.send_signal(signal.SIGKILL)
    job.wait(TIMEOUT)
    assert not output.exists()
    written = len(list(parts.glob(f"0*{suffix}")))
    assert 2 <= written < 10
    rerun = subprocess.run(list(map(str, command)), env=env, stderr=subprocess.PIPE, text=True, timeout=TIMEOUT)
    assert rerun.returncode == 0, rerun.stderr
    assert f"{written} shard(s) were already written by an earlier run" in rerun.stderr or written == 0
    assert not parts.exists()
    clean_output = tmp_path / f"clean{suffix}"
    clean = subprocess.run(list(map(str, [*command[:-1], clean_output, "--no-cache"])), env=env, timeout=TIMEOUT,
                           stderr=subprocess.PIPE, text=True)
    assert clean.returncode == 0, clean.stderr
    rows, expected = read(output), read(clean_output)
    assert [row["image"] for row in rows] == sorted(str(p) for p in slow_photos.rglob("*.jpg"))  # each once
    assert rows == expected


def test_torchrun_classify_writes_one_csv_equal_to_one_process(tiny_model_dirs, shared_data, tmp_path):
    folder = real_folder(shared_data, tmp_path, per_class=3)
    args = ["classify", folder, *model_args(tiny_model_dirs["open_clip_clip"]), "--labels", "cat,dog,ship",
            "--top-k", "2"]
    code, out, err = finished(torchrun([*args, "--output", tmp_path / "two.csv"], launch_env(tmp_path / "cache")))
    assert code == 0 and out == "", err
    single = subprocess.run([sys.executable, "-m", "pixprompt", *map(str, args), "--output", tmp_path / "one.csv",
                             "--no-cache"], env=launch_env(tmp_path / "cache"), capture_output=True, text=True)
    assert single.returncode == 0, single.stderr
    lines = (tmp_path / "two.csv").read_text().splitlines()
    assert lines == (tmp_path / "one.csv").read_text().splitlines()
    assert lines[0] == "image,templates,error,label_1,probability_1,label_2,probability_2" and len(lines) == 31


def test_folder_listing_streams(tmp_path):
    """The walk yields the first image before later folders are read: a folder made inside a later one after
    the first image was handed out is still listed."""
    from pixprompt.data.images import iter_images

    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        Image.new("RGB", (4, 4)).save(tmp_path / name / "1.png")
    stream = iter_images([str(tmp_path)])
    assert next(stream) == tmp_path / "a" / "1.png"
    (tmp_path / "b" / "later").mkdir()
    Image.new("RGB", (4, 4)).save(tmp_path / "b" / "later" / "1.png")
    assert list(stream) == [tmp_path / "b" / "1.png", tmp_path / "b" / "later" / "1.png"]


def test_cached_features_are_one_contiguous_matrix(loaded_models, colours, tmp_path):
    from pixprompt.data.datasets import load_dataset
    from pixprompt.features.cache import extract_features

    dataset = load_dataset(f"folder:{colours}")
    first = extract_features(loaded_models["open_clip_clip"], dataset, tmp_path, workers=0)
    again = extract_features(loaded_models["open_clip_clip"], dataset, tmp_path, workers=0)
    assert again.encoded == 0 and again.features.is_contiguous() and again.features.shape == first.features.shape
    assert again.features.equal(first.features)

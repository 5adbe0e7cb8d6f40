"""Hardening (#11): hostile web requests, real full disks, SIGKILL, replaced and damaged files, huge images.

Every fault here is produced for real: a tmpfs that is really full, a process really killed, bytes really
flipped on disk, raw sockets sending what a browser never would.
"""
from __future__ import annotations

import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from bad_inputs import elongated_png, jpeg_claiming, over_pixel_budget, write_photos
from cli_runner import model_args, run_cli
from pixprompt.data.datasets import DatasetOptions, load_dataset
from pixprompt.prompts import resolve_templates

METRICS = ("top1", "top5", "mean_per_class_recall", "per_class_accuracy", "confusion_matrix")


def eval_args(model_dir, dataset: Path, *extra) -> list:
    return ["eval", *model_args(model_dir), "--dataset", f"folder:{dataset}", "--templates", "raw", "--json",
            *extra]


# -- 1. the web page ------------------------------------------------------------------------------------
@pytest.fixture()
def app_client(loaded_models):
    from fastapi.testclient import TestClient

    from pixprompt.web import create_app

    return TestClient(create_app(loaded_models["open_clip_clip"], max_upload_mb=1, allow_hosts=["testserver"]))


def png_upload(folder: Path, name: str = "photo.png"):
    return ("files", (name, (folder / "red" / "photo-000.png").read_bytes(), "image/png"))


def test_web_never_opens_a_path_a_client_names(app_client, colours, tmp_path, monkeypatch):
    secret = tmp_path / "secret.txt"
    secret.write_text("top secret {} value\n")
    monkeypatch.setenv("PIXPROMPT_TEST_SECRET", "hunter2-env-value")
    for name in ("/proc/self/environ", "/etc/passwd", str(secret), f"raw,{secret}", "../../etc/passwd"):
        response = app_client.post("/api/classify", data={"labels": "a,b", "templates": name},
                                   files=[png_upload(colours)])
        body = response.text
        assert response.status_code == 400 and "unknown template set" in response.json()["error"]
        assert "secret" not in body and "hunter2" not in body and "root:" not in body and name not in body


def test_web_errors_carry_no_object_reprs(app_client, colours):
    response = app_client.post("/api/classify", data={"labels": "a,b"},
                               files=[("files", ("broken.jpg", b"not a jpeg at all", "image/jpeg"))])
    error = response.json()["results"][0]["error"]
    assert "could not be read as an image (not a recognised image format)" in error
    assert "0x" not in error and "<" not in error and "BytesIO" not in error


@pytest.mark.parametrize(("host", "answered"), [
    ("127.0.0.1:7860", True), ("localhost:7860", True), ("[::1]:7860", True), ("LOCALHOST", True),
    ("attacker.example:7860", False), ("127.0.0.1.attacker.example", False), ("", False),
])
def test_web_answers_only_its_own_host_names(loaded_models, host, answered):
    from fastapi.testclient import TestClient

    from pixprompt.web import create_app

    client = TestClient(create_app(loaded_models["open_clip_clip"]))
    response = client.get("/api/info", headers={"host": host})
    assert (response.status_code == 200) == answered


def test_web_allow_host_and_the_served_address(loaded_models):
    from fastapi.testclient import TestClient

    from pixprompt.web import create_app

    client = TestClient(create_app(loaded_models["open_clip_clip"], host="10.1.2.3", allow_hosts=["box.lan"]))
    assert client.get("/", headers={"host": "10.1.2.3:7860"}).status_code == 200
    assert client.get("/", headers={"host": "box.lan"}).status_code == 200
    assert client.get("/", headers={"host": "other.lan"}).status_code == 400


def test_web_clean_answers(app_client, colours):
    cases = [
        ({"labels": "a,b", "templates": "custom", "custom_templates": "a {} and a {}"}, "2 placeholders"),
        ({"labels": "a,b", "templates": "raw,standard"}, "unknown template set"),
        ({"labels": "  ", "templates": "raw"}, "type the class names"),
        ({"labels": "a, ,b"}, "class name number 2 is empty"),
    ]
    for data, message in cases:
        response = app_client.post("/api/classify", data=data, files=[png_upload(colours)])
        assert response.status_code == 400 and message in response.json()["error"], data
    response = app_client.post("/api/classify", data={"labels": "a,b"})
    assert response.status_code == 400 and "at least one image" in response.json()["error"]
    response = app_client.post("/api/classify", content=b"{}", headers={"content-type": "application/json"})
    assert response.status_code == 400 and "error" in response.json()
    assert app_client.head("/").status_code == 200
    for hidden in ("/openapi.json", "/docs", "/redoc"):
        assert app_client.get(hidden).status_code == 404


def test_web_caps_prompts_per_request(app_client, colours):
    labels = ",".join(f"class {i}" for i in range(1000))
    started = time.perf_counter()
    response = app_client.post("/api/classify", data={"labels": labels, "templates": "clip80"},
                               files=[png_upload(colours)])
    assert response.status_code == 400 and time.perf_counter() - started < 5
    assert "1000 classes × 80 templates = 80,000 prompts: at most 2,000 per request" in response.json()["error"]


def test_web_refuses_images_over_the_pixel_budget_without_decoding(app_client):
    response = app_client.post("/api/classify", data={"labels": "a,b"},
                               files=[("files", ("bomb.jpg", jpeg_claiming(11000, 11000), "image/jpeg"))])
    assert "over the 64-megapixel decoding budget" in response.json()["results"][0]["error"]


def test_web_bounds_concurrent_decodes(loaded_models, colours, monkeypatch):
    from fastapi.testclient import TestClient

    from pixprompt.web import app as web_app

    active, peak, guard = 0, 0, threading.Lock()
    decode = web_app.decode_rgb

    def observed_decode(*args, **kwargs):
        nonlocal active, peak
        with guard:
            active += 1
            peak = max(peak, active)
        time.sleep(0.05)
        try:
            return decode(*args, **kwargs)
        finally:
            with guard:
                active -= 1

    monkeypatch.setattr(web_app, "decode_rgb", observed_decode)
    client = TestClient(web_app.create_app(loaded_models["open_clip_clip"], allow_hosts=["testserver"]))

    def ask(_):
        return client.post("/api/classify", data={"labels": "red,blue"},
                           files=[png_upload(colours, f"{i}.png") for i in range(4)]).status_code

    with ThreadPoolExecutor(8) as pool:
        assert set(pool.map(ask, range(8))) == {200}
    assert peak == web_app.DECODE_SLOTS


@pytest.fixture()
def small_server(loaded_models):
    """The app behind real uvicorn on a free port, with a 1 MB upload limit (so a 17 MB body cap)."""
    import uvicorn

    from pixprompt.web import create_app

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(create_app(loaded_models["open_clip_clip"], max_upload_mb=1),
                                           host="127.0.0.1", port=port, log_level="error"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.time() + 20
    while not server.started and time.time() < deadline:
        time.sleep(0.05)
    yield port
    server.should_exit = True
    thread.join(10)


def test_web_chunked_upload_is_capped_while_it_streams(small_server):
    """A body without Content-Length (chunked) is cut off at the cap, not read whole."""
    boundary = "pixpromptboundary"
    head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"labels\"\r\n\r\na,b\r\n"
            f"--{boundary}\r\nContent-Disposition: form-data; name=\"files\"; filename=\"x.png\"\r\n"
            "Content-Type: image/png\r\n\r\n").encode()
    connection = http.client.HTTPConnection("127.0.0.1", small_server, timeout=30)
    connection.putrequest("POST", "/api/classify")
    connection.putheader("Content-Type", f"multipart/form-data; boundary={boundary}")
    connection.putheader("Transfer-Encoding", "chunked")
    connection.endheaders()
    sent, chunk = 0, b"\0" * 2**20

    def send(data: bytes) -> None:
        connection.send(f"{len(data):x}\r\n".encode() + data + b"\r\n")

    try:
        send(head)
        while sent < 300 * 2**20:  # what the attacker would send: 300 MB
            send(chunk)
            sent += len(chunk)
    except (BrokenPipeError, ConnectionResetError):
        pass  # the server stopped reading and closed: the point of the cap
    response = connection.getresponse()
    assert response.status == 413 and "larger than 16 files of 1 MB" in json.loads(response.read())["error"]
    assert sent < 100 * 2**20


def test_web_bounds_text_and_answers_a_small_request_while_a_large_one_runs(small_server, colours):
    """Two real concurrent requests: a 180,000-word template is refused at once, and a small request beside
    the largest one allowed (2,000 prompts of 300 characters) is answered within seconds."""
    import httpx

    from pixprompt.web import app as web_app

    url = f"http://127.0.0.1:{small_server}/api/classify"
    photo = (colours / "red" / "photo-000.png").read_bytes()

    def ask(labels: str, custom: str = "") -> tuple[int, dict, float]:
        started = time.perf_counter()
        response = httpx.post(url, data={"labels": labels, "templates": "custom" if custom else "standard",
                                         "custom_templates": custom},
                              files=[("files", ("p.png", photo, "image/png"))], timeout=120)
        return response.status_code, response.json(), time.perf_counter() - started

    huge = "a photo of a {} " + "word " * 180_000
    code, body, seconds = ask("cat,dog", huge)
    assert code == 400 and seconds < 5
    assert "characters: at most 20,000 per request" in body["error"]
    code, body, _ = ask("cat,dog", "a photo of a {} " + "x" * 400)
    assert code == 400 and "a template of 416 characters" in body["error"]
    code, body, _ = ask("cat," + "d" * 400)
    assert code == 400 and "a class name of 400 characters" in body["error"]
    longest = "{} " + "y" * (web_app.MAX_TEXT_CHARS - 3)
    largest = ("\n".join(f"{longest[:-4]}{n:04d}" for n in range(40)), ",".join(f"c{n}" for n in range(50)))
    with ThreadPoolExecutor(2) as pool:
        big = pool.submit(ask, largest[1], largest[0])
        time.sleep(0.2)
        small = pool.submit(ask, "cat,dog")
        (small_code, _, small_seconds), (big_code, big_body, _) = small.result(), big.result()
    assert big_code == 200, big_body
    assert small_code == 200 and small_seconds < 10


# -- 2. a real full disk --------------------------------------------------------------------------------------
@pytest.fixture()
def full_disk(tmp_path):
    """A 1 MB tmpfs filled to the last byte: writes there fail as on a real full disk."""
    mount = tmp_path / "full-disk"
    mount.mkdir()
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)], capture_output=True)
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({result.stderr.decode().strip()}); needs root")
    try:
        filler = os.open(mount / "filler", os.O_WRONLY | os.O_CREAT)
        try:
            while os.write(filler, b"\0" * 4096):
                pass
        except OSError:  # ENOSPC: full to the last page
            pass
        finally:
            os.close(filler)
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_a_real_full_disk_costs_only_the_caching(tiny_model_dirs, colours, full_disk, capsys):
    model = tiny_model_dirs["open_clip_clip"]
    code, clean, _ = run_cli(capsys, *eval_args(model, colours, "--no-cache", "--batch-size", "4"))
    assert code == 0
    for attempt in range(2):  # a rerun on the still-full disk is as good
        code, out, err = run_cli(capsys, *eval_args(model, colours, "--cache-dir", full_disk / "cache",
                                                    "--batch-size", "4"))
        assert code == 0, err
        assert all(json.loads(out)[0][k] == json.loads(clean)[0][k] for k in METRICS)
        assert err.count("No space left on device") == (1 if attempt == 0 else 0)
        assert not list(full_disk.rglob("*.partial")) and not list(full_disk.rglob("chunk-*"))


def test_a_classifier_file_on_a_full_disk_is_only_not_saved(tiny_model_dirs, colours, full_disk, capsys):
    args = ["classify", colours / "red", *model_args(tiny_model_dirs["transformers_clip"]), "--labels", "red,blue",
            "--templates", "clip80", "--classifier", full_disk / "pets.safetensors", "--json"]
    code, out, err = run_cli(capsys, *args)
    assert code == 0 and len(json.loads(out)) == 8
    assert "could not write cache file" in err and "No space left on device" in err
    assert not list(full_disk.glob("pets*")) and not list(full_disk.glob(".pets*"))


def test_results_survive_an_output_file_on_a_full_disk(tiny_model_dirs, colours, full_disk, capsys, monkeypatch):
    from pixprompt.models.catalog import _library_version, shipped_catalog

    code, out, err = run_cli(capsys, *eval_args(tiny_model_dirs["open_clip_clip"], colours, "--no-cache",
                                                "--output", full_disk / "results.json"))
    assert code == 1 and json.loads(out)[0]["images"] == 24  # the results reached stdout first
    assert err.strip().splitlines()[-1] == f"pixprompt: error: could not write {full_disk / 'results.json'}: " \
                                           "No space left on device"
    monkeypatch.setenv("PIXPROMPT_CACHE", str(full_disk / "cache"))
    code, out, err = run_cli(capsys, "models", "--filter", "ViT-B-32-256", "--json")
    assert code == 0 and json.loads(out)  # the listing needs no cache (another open_clip: it warns it cannot keep it)
    assert shipped_catalog()["open_clip_version"] == _library_version("open_clip_torch") \
        or "No space left on device" in err


def test_file_size_limit_in_a_subprocess_costs_only_the_caching(tiny_model_dirs, colours, tmp_path):
    """The same with RLIMIT_FSIZE (no root needed): the kernel refuses writes past 2 KB with EFBIG."""
    script = ("import resource, signal, sys\n"
              "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
              "resource.setrlimit(resource.RLIMIT_FSIZE, (2048, 2048))\n"
              "from pixprompt.cli import main\n"
              "sys.exit(main(sys.argv[1:]))\n")
    args = [str(a) for a in eval_args(tiny_model_dirs["open_clip_clip"], colours, "--cache-dir", tmp_path / "c")]
    result = subprocess.run([sys.executable, "-c", script, *args], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)[0]["images"] == 24
    assert "File too large" in result.stderr and not list((tmp_path / "c").rglob("*.partial"))


# -- 3. bounded memory per image --------------------------------------------------------------------------------
def test_elongated_images_preprocess_like_open_clip_without_the_full_resize():
    import open_clip

    from pixprompt.models.preprocessing import bounded

    reference = open_clip.image_transform(224, is_train=False)
    fused = bounded(reference)
    rng = np.random.default_rng(0)
    for width, height in [(3, 900), (900, 3), (17, 2500), (2500, 40), (1, 700)]:
        image = Image.fromarray(rng.integers(0, 255, (height, width, 3), dtype=np.uint8))
        expected, got = reference(image), fused(image)
        levels = ((expected - got).abs() * 0.27 * 255).max()  # normalised back to 0..255 levels (std ≥ 0.26)
        assert got.shape == (3, 224, 224) and levels <= 2.01
        cosine = torch.nn.functional.cosine_similarity(expected.flatten(), got.flatten(), dim=0)
        assert cosine > 0.9999


def _peak_rss_mb(image_path: Path) -> float:
    script = ("import resource, sys, open_clip\n"
              "from pixprompt.data.images import open_rgb\n"
              "from pixprompt.models.preprocessing import bounded\n"
              "transform = bounded(open_clip.image_transform(224, is_train=False))\n"
              "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
              "assert transform(open_rgb(sys.argv[1])).shape == (3, 224, 224)\n"
              "print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024)\n")
    result = subprocess.run([sys.executable, "-c", script, str(image_path)], capture_output=True, text=True,
                            timeout=300, check=True)
    return float(result.stdout.strip().splitlines()[-1])


def test_an_elongated_png_costs_no_more_than_a_photo(tmp_path):
    photo = tmp_path / "photo.jpg"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (3000, 4000, 3), dtype=np.uint8)).save(photo)
    needle = elongated_png(tmp_path / "needle", 1, 60000)
    assert needle.stat().st_size < 2000
    assert _peak_rss_mb(needle) < max(50.0, 2 * _peak_rss_mb(photo))  # the full resize would take ~10 GB


def test_transformers_models_skip_elongated_images_with_a_message(tiny_model_dirs, tmp_path, capsys):
    elongated_png(tmp_path / "needle", 1, 60000)
    code, out, _ = run_cli(capsys, "classify", tmp_path / "needle.png",
                           *model_args(tiny_model_dirs["transformers_clip"]), "--labels", "a,b", "--json")
    assert code == 1 and "too elongated for this model's preprocessing" in json.loads(out)[0]["error"]


def test_the_pixel_budget_skips_before_decoding_and_is_not_remembered(tiny_model_dirs, colours, tmp_path, capsys):
    over_pixel_budget(colours / "red" / "huge")
    args = eval_args(tiny_model_dirs["open_clip_clip"], colours, "--cache-dir", tmp_path / "cache")
    code, out, err = run_cli(capsys, *args)
    assert code == 0 and json.loads(out)[0]["skipped"] == 1
    assert "huge.jpg: 11000×11000 is 121 megapixels, over the 64-megapixel decoding budget (raise it with " \
           "--max-pixels)" in err
    code, out, err = run_cli(capsys, *args, "--max-pixels", "130M")  # retried: libjpeg fills the missing data grey
    assert code == 0 and "decoding budget" not in err and json.loads(out)[0]["skipped"] == 0


# -- 4. never stale or damaged ------------------------------------------------------------------------------------
def test_replaced_weights_at_the_same_path_are_not_served_from_the_cache(tiny_model_dirs, colours, tmp_path, capsys):
    from tiny_models import make_open_clip_clip

    model = shutil.copytree(tiny_model_dirs["open_clip_clip"], tmp_path / "model")
    args = eval_args(model, colours, "--cache-dir", tmp_path / "cache")
    assert run_cli(capsys, *args)[0] == 0
    weights = model / "open_clip_model.safetensors"
    size = weights.stat().st_size
    torch.manual_seed(1)
    retrained = make_open_clip_clip(tmp_path / "retrained")
    shutil.copyfile(retrained / "open_clip_model.safetensors", weights)  # same size, other values
    assert weights.stat().st_size == size
    code, out, _ = run_cli(capsys, *args)
    (record,) = json.loads(out)
    _, fresh, _ = run_cli(capsys, *eval_args(model, colours, "--no-cache"))
    assert code == 0 and record["cached_images"] == 0 and record["top1"] == json.loads(fresh)[0]["top1"]


def test_a_checkpoint_file_stamps_the_cache(tmp_path):
    from pixprompt.models.registry import local_weights_stamp

    checkpoint = tmp_path / "ckpt.safetensors"
    checkpoint.write_bytes(b"a" * 64)
    before = local_weights_stamp("ViT-B-32", str(checkpoint))
    checkpoint.write_bytes(b"b" * 64)
    os.utime(checkpoint, ns=(time.time_ns(), time.time_ns() + 10**9))
    assert before and local_weights_stamp("ViT-B-32", str(checkpoint)) != before
    assert local_weights_stamp("ViT-B-32", "openai") == ""  # a tag: the Hub's file, not stamped


def flip_last_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[-1] ^= 0x01
    path.write_bytes(bytes(data))


def test_flipped_bytes_in_cached_features_and_classifiers_are_caught(tiny_model_dirs, colours, tmp_path, capsys):
    args = eval_args(tiny_model_dirs["open_clip_clip"], colours, "--cache-dir", tmp_path / "cache")
    code, clean, _ = run_cli(capsys, *args)
    (chunk,) = (tmp_path / "cache").rglob("chunk-*.safetensors")
    (classifier,) = (tmp_path / "cache" / "classifiers").glob("*.safetensors")
    flip_last_byte(chunk)
    flip_last_byte(classifier)
    code, out, err = run_cli(capsys, *args)
    assert code == 0 and json.loads(out)[0]["top1"] == json.loads(clean)[0]["top1"]
    assert json.loads(out)[0]["cached_images"] == 0
    assert "removing damaged cache chunk" in err and "checksum does not match" in err
    assert "is damaged: its checksum is missing or does not match its contents; rebuilding it" in err
    classifier.write_bytes(classifier.read_bytes()[:100])  # truncated
    code, out, err = run_cli(capsys, *args)
    assert code == 0 and "is not a pixprompt classifier file" in err and "rebuilding it" in err
    code, _, err = run_cli(capsys, *args)
    assert code == 0 and "rebuilding" not in err and "damaged" not in err


def test_io_failures_are_retried_and_decode_failures_remembered(tiny_model_dirs, colours, tmp_path, capsys):
    target = tmp_path / "later.png"
    (colours / "red" / "link.png").symlink_to(target)  # a file that is not there (yet)
    (colours / "red" / "broken.jpg").write_bytes(b"not an image")
    args = eval_args(tiny_model_dirs["open_clip_clip"], colours, "--cache-dir", tmp_path / "cache")
    code, out, err = run_cli(capsys, *args)
    assert json.loads(out)[0]["skipped"] == 2 and "No such file" in err
    Image.new("RGB", (20, 20), (200, 30, 30)).save(target)
    code, out, err = run_cli(capsys, *args)
    (record,) = json.loads(out)
    assert record["skipped"] == 1 and record["encoded_images"] == 1  # the link's target, now there
    assert "broken.jpg: UnidentifiedImageError" in err and "remembered from an earlier run" in err


def test_partials_left_by_a_killed_writer_are_removed(tmp_path):
    from pixprompt.storage import atomic_path, remove_stale_partials

    folder = tmp_path / "chunks"
    script = ("import sys, time\n"
              "from pixprompt.storage import atomic_path\n"
              "with atomic_path(sys.argv[1]) as tmp:\n"
              "    tmp.write_bytes(b'half a chunk')\n"
              "    print('writing', flush=True)\n"
              "    time.sleep(60)\n")
    writer = subprocess.Popen([sys.executable, "-c", script, str(folder / "chunk-1.safetensors")],
                              stdout=subprocess.PIPE, text=True)
    assert writer.stdout.readline().strip() == "writing"
    with atomic_path(folder / "chunk-2.safetensors"):  # this live process's partial must survive
        assert remove_stale_partials(folder) == 0  # the writer still runs
        writer.send_signal(signal.SIGKILL)
        writer.wait(10)
        assert len(list(folder.glob(".*.partial"))) == 2
        assert remove_stale_partials(folder) == 1
        assert [p.name.startswith(".chunk-2") for p in folder.glob(".*.partial")] == [True]


def test_a_subset_shares_the_whole_datasets_cache(tiny_model_dirs, colours, tmp_path, capsys):
    args = eval_args(tiny_model_dirs["open_clip_clip"], colours, "--cache-dir", tmp_path / "cache")
    assert run_cli(capsys, *args, "--max-images", "10")[0] == 0
    code, out, _ = run_cli(capsys, *args)
    assert json.loads(out)[0]["cached_images"] == 10 and json.loads(out)[0]["encoded_images"] == 14


# -- 5. fail before the work -------------------------------------------------------------------------------------
@pytest.mark.parametrize(("extra", "text"), [
    (["--output", "res.txt"], "--output res.txt: use a .json, .csv or .md file name"),
    (["--output", "/no/such/dir/x.json"], "folder /no/such/dir does not exist"),
    (["--report", "/no/such/dir/r.html"], "folder /no/such/dir does not exist"),
    (["--report", "r.pdf"], "use a .html or .htm file name"),
])
def test_bad_output_paths_are_refused_before_the_model_loads(colours, capsys, extra, text):
    started = time.perf_counter()
    code, out, err = run_cli(capsys, *eval_args("/no/such/model", colours, *extra))
    assert code == 2 and text in err and time.perf_counter() - started < 2  # a model load would be exit 3


def test_serve_refuses_a_bad_or_busy_port_before_the_model_loads(capsys):
    with pytest.raises(SystemExit) as stop:
        run_cli(capsys, "serve", "--model", "/no/such/model", "--port", "99999")
    assert stop.value.code == 2 and "not a TCP port" in capsys.readouterr().err
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        code, _, err = run_cli(capsys, "serve", "--model", "/no/such/model", "--port", busy.getsockname()[1])
    assert code == 2 and "cannot listen on 127.0.0.1" in err


# -- 6. the rest of the bad-input table ------------------------------------------------------------------------------
@pytest.mark.parametrize("argv", [["--max-images", "0"], ["--max-images", "-3"], ["--batch-size", "0"],
                                  ["--workers", "-1"], ["--max-pixels", "lots"]])
def test_out_of_range_numbers_are_usage_errors(colours, capsys, argv):
    with pytest.raises(SystemExit) as stop:
        run_cli(capsys, *eval_args("/no/such/model", colours, *argv))
    assert stop.value.code == 2 and "Traceback" not in capsys.readouterr().err


def test_top_k_below_one_is_a_usage_error(colours, capsys):
    with pytest.raises(SystemExit) as stop:
        run_cli(capsys, "classify", colours, "--model", "/no/such/model", "--labels", "a,b", "--top-k", "0")
    assert stop.value.code == 2


def test_a_csv_row_without_a_label_names_its_line(tiny_model_dirs, colours, tmp_path, capsys):
    table = tmp_path / "data.csv"
    table.write_text(f"path,label\n{colours}/red/photo-000.png,red\n{colours}/blue/photo-000.png\n")
    code, _, err = run_cli(capsys, *eval_args(tiny_model_dirs["open_clip_clip"], colours)[:-5], "--dataset",
                           f"csv:{table}")
    assert code == 2 and "line 3: no label" in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("make", [lambda folder: None, lambda folder: (folder / "part-0.parquet").write_bytes(b"")])
def test_hf_folders_without_data_are_one_clear_line(tiny_model_dirs, tmp_path, capsys, make):
    folder = tmp_path / "hf"
    folder.mkdir()
    make(folder)
    code, _, err = run_cli(capsys, "eval", *model_args(tiny_model_dirs["open_clip_clip"]), "--dataset", f"hf:{folder}")
    assert code == 3 and f"hf dataset {folder}" in err and len(err.strip().splitlines()) == 1


def test_cifar100_from_a_partial_folder_keeps_all_100_classes(tmp_path):
    for seed, name in enumerate(("apple", "willow_tree")):
        write_photos(tmp_path / name, 2, (50 * seed, 90, 90), seed)
    dataset = load_dataset("cifar100", DatasetOptions(str(tmp_path)))
    assert len(dataset.classnames) == 100 and dataset.classnames[96] == "willow tree"
    assert sorted(set(dataset.labels)) == [0, 96]


def test_library_warnings_obey_quiet(tiny_model_dirs, colours, capsys):
    exif = Image.Exif()
    exif[0x0112] = 6
    bad = colours / "red" / "bad-exif.jpg"
    Image.new("RGB", (30, 20)).save(bad, exif=exif.tobytes()[:-4])  # an EXIF block cut short
    code, _, noisy = run_cli(capsys, *eval_args(tiny_model_dirs["open_clip_clip"], colours, "--no-cache"))
    code, _, quiet = run_cli(capsys, *eval_args(tiny_model_dirs["open_clip_clip"], colours, "--no-cache", "--quiet"))
    assert code == 0 and "Corrupt EXIF data" in noisy and quiet == ""


def test_a_fifo_is_named_as_one_and_never_blocks(tiny_model_dirs, colours, capsys):
    os.mkfifo(colours / "red" / "pipe.jpg")
    code, out, err = run_cli(capsys, *eval_args(tiny_model_dirs["open_clip_clip"], colours, "--no-cache"))
    assert code == 0 and "pipe.jpg: a named pipe (FIFO), not an image file" in err


def test_indented_comment_lines_are_not_templates(tmp_path):

    (tmp_path / "t.txt").write_text("  # a note about {}\na photo of a {}.\n\t# another {}\n")
    (prompt_set,) = resolve_templates(str(tmp_path / "t.txt"))
    assert prompt_set.templates == ("a photo of a {}.",)


def test_one_class_with_softmax_is_warned_about(tiny_model_dirs, colours, capsys):
    code, _, err = run_cli(capsys, "classify", colours / "red", *model_args(tiny_model_dirs["open_clip_clip"]),
                           "--labels", "cat", "--json")
    assert code == 0 and "only one class (cat)" in err
    code, _, err = run_cli(capsys, "classify", colours / "red", *model_args(tiny_model_dirs["open_clip_siglip"]),
                           "--labels", "cat", "--json")
    assert code == 0 and "only one class" not in err  # a sigmoid scores each class on its own


def test_a_class_folder_linking_to_a_sibling_is_warned_about(colours, caplog):
    (colours / "red" / "also-green").symlink_to(colours / "green")
    load_dataset(f"folder:{colours}")
    assert "8 image(s) are counted in two classes through links" in caplog.text


# -- #12 item 4: files any tool would write; --pretrained where it cannot apply ------------------------------------
def test_written_files_honour_the_umask(tiny_model_dirs, colours, tmp_path, capsys):
    previous = os.umask(0o022)
    try:
        code, _, _ = run_cli(capsys, *eval_args(tiny_model_dirs["open_clip_clip"], colours, "--cache-dir",
                                                tmp_path / "cache", "--output", tmp_path / "r.json", "--report",
                                                tmp_path / "r.html"))
    finally:
        os.umask(previous)
    assert code == 0
    written = [tmp_path / "r.json", tmp_path / "r.html", *(tmp_path / "r_figures").glob("*.png"),
               *(tmp_path / "cache").rglob("*.safetensors")]
    assert len(written) > 4 and {oct(p.stat().st_mode & 0o777) for p in written} == {"0o644"}


def test_pretrained_with_a_model_folder_is_refused(tiny_model_dirs, colours, capsys):
    code, _, err = run_cli(capsys, *eval_args(tiny_model_dirs["open_clip_clip"], colours, "--pretrained", "openai"))
    assert code == 2 and "does not apply to local-dir:" in err

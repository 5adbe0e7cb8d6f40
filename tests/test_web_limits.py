"""The web page as a network service (#11): hostile requests, bounded uploads, text, decodes and time; raw
sockets sending what a browser never would."""
from __future__ import annotations

import http.client
import json
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from bad_inputs import jpeg_claiming


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

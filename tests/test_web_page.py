"""The web page: its API, the server's refusals, a real browser (headless Chromium)."""
from __future__ import annotations

import os
import shutil
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

ARTIFACTS = Path(os.environ.get("PIXPROMPT_TEST_ARTIFACTS", Path(__file__).resolve().parents[1] / "artifacts"))


# -- web app ----------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def web_model(loaded_models):
    return loaded_models["open_clip_siglip"]


@pytest.fixture()
def client(web_model):
    from fastapi.testclient import TestClient

    from pixprompt.web import create_app

    return TestClient(create_app(web_model, max_upload_mb=1, allow_hosts=["testserver"]))


def upload(path: Path, name: str | None = None, content_type: str = "image/png"):
    return ("files", (name or path.name, path.read_bytes(), content_type))


def test_web_ranks_every_label_for_each_image(client, colours):
    info = client.get("/api/info").json()
    assert "clip80" in info["template_sets"] and info["scoring"] == "sigmoid"
    response = client.post("/api/classify", data={"labels": "red, green, blue", "templates": "clip7"},
                           files=[upload(colours / "red" / "photo-000.png"),
                                  upload(colours / "blue" / "photo-001.png")])
    body = response.json()
    assert response.status_code == 200 and len(body["results"]) == 2 and len(body["templates"]) == 7
    for result in body["results"]:
        probabilities = [r["probability"] for r in result["ranked"]]
        assert sorted(r["label"] for r in result["ranked"]) == ["blue", "green", "red"]
        assert probabilities == sorted(probabilities, reverse=True)


def test_web_bad_uploads_get_messages_and_the_server_goes_on(client, colours, tmp_path):
    big = tmp_path / "big.png"
    big.write_bytes(b"\x89PNG" + os.urandom(2 * 2**20))
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    response = client.post("/api/classify", data={"labels": "red,blue"},
                           files=[upload(text, content_type="text/plain"), upload(big),
                                  upload(colours / "red" / "photo-000.png", "fake.png", "image/png"),
                                  ("files", ("broken.jpg", b"not a jpeg", "image/jpeg"))])
    errors = [r.get("error", "") for r in response.json()["results"]]
    assert response.status_code == 200
    assert "is not an image" in errors[0] and "upload limit" in errors[1] and errors[2] == ""
    assert "could not be read as an image" in errors[3]
    for data, message in [({"labels": "red,red"}, "duplicate class names"),
                          ({"labels": "red,blue", "templates": "custom", "custom_templates": "a photo"}, "{}"),
                          ({"labels": "red,blue", "templates": "nonsense"}, "unknown template set")]:
        response = client.post("/api/classify", data=data, files=[upload(colours / "red" / "photo-000.png")])
        assert response.status_code == 400 and message in response.json()["error"]
    assert client.get("/api/info").status_code == 200


def test_web_concurrent_requests_share_one_classifier(client, web_model, colours, monkeypatch):
    from pixprompt.web import app as web_app

    builds = []
    original = web_app.build_classifier
    monkeypatch.setattr(web_app, "build_classifier", lambda *a, **k: builds.append(1) or original(*a, **k))
    image = colours / "green" / "photo-002.png"

    def ask(_):
        return client.post("/api/classify", data={"labels": "red,green,blue", "templates": "standard"},
                           files=[upload(image)]).json()["results"][0]["ranked"]

    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(ask, range(16)))
    assert all(answer == answers[0] for answer in answers) and len(builds) == 1


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture()
def live_server(loaded_models):
    """The app on a free local port, serving the softmax (CLIP) tiny model, in a background thread."""
    import uvicorn

    from pixprompt.web import create_app

    app = create_app(loaded_models["open_clip_clip"])
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.time() + 20
    while not server.started and time.time() < deadline:
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}/"
    server.should_exit = True
    thread.join(10)


def chromium_driver():
    """Headless Chromium driven by Debian's chromedriver; None (with the reason) where they are missing."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    chromedriver = shutil.which("chromedriver")
    if not (chromium and chromedriver):
        return None, "Chromium and chromedriver are not installed (.ci/run installs Debian's chromium packages)"
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        return None, "selenium is not installed (pip install -e '.[dev]')"
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--window-size=1100,1300"):
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(chromedriver), options=options), ""


def test_browser_upload_labels_and_ranked_results(live_server, shared_data, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.ui import WebDriverWait

    driver, reason = chromium_driver()
    if driver is None:
        pytest.skip(reason)
    image = sorted((shared_data / "imagenette-val").rglob("*.JPEG"))[0]
    labels = ["tench", "church", "parachute", "golf ball"]
    try:
        driver.get(live_server)
        wait = WebDriverWait(driver, 30)
        wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#templates option")) > 1)
        driver.find_element(By.ID, "files").send_keys(str(image))
        driver.find_element(By.ID, "labels").send_keys(", ".join(labels))
        driver.find_element(By.ID, "classify").click()
        wait.until(expected_conditions.presence_of_all_elements_located((By.CSS_SELECTOR, ".result .bar-row")))
        rows = driver.find_elements(By.CSS_SELECTOR, ".result .bar-row")
        shown = [(r.find_element(By.CLASS_NAME, "label").text,
                  float(r.find_element(By.CLASS_NAME, "probability").text.rstrip("%"))) for r in rows]
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(str(ARTIFACTS / "serve-ranked-results.png"))
        assert sorted(label for label, _ in shown) == sorted(labels)
        assert [p for _, p in shown] == sorted((p for _, p in shown), reverse=True)
        assert driver.find_element(By.ID, "error").text == ""
        assert len(driver.find_elements(By.CSS_SELECTOR, "#prompt-list li")) == 1  # "a photo of a {}."
    finally:
        driver.quit()


def test_browser_shows_the_servers_refusals_as_messages(live_server, shared_data):
    """A request over the prompt cap, and a custom template with two placeholders, read as messages."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select, WebDriverWait

    driver, reason = chromium_driver()
    if driver is None:
        pytest.skip(reason)
    image = sorted((shared_data / "imagenette-val").rglob("*.JPEG"))[0]
    try:
        driver.get(live_server)
        wait = WebDriverWait(driver, 30)
        wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#templates option")) > 1)
        assert "2,000 prompts" in driver.find_element(By.ID, "model").text
        driver.find_element(By.ID, "files").send_keys(str(image))
        driver.find_element(By.ID, "labels").send_keys("tench, church")
        driver.find_element(By.ID, "classify").click()  # an answer first: the refusal must not stand beside it
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#prompt-list li"))
        driver.find_element(By.ID, "labels").clear()
        driver.find_element(By.ID, "labels").send_keys(", ".join(f"class {i}" for i in range(100)))
        Select(driver.find_element(By.ID, "templates")).select_by_value("clip80")
        driver.find_element(By.ID, "classify").click()
        wait.until(lambda d: d.find_element(By.ID, "error").text)
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(str(ARTIFACTS / "serve-prompt-cap.png"))
        assert driver.find_element(By.ID, "error").text.startswith("100 classes × 80 templates = 8,000 prompts")
        assert not driver.find_elements(By.CSS_SELECTOR, "#prompt-list li, #results .result")
        # Starlette's and FastAPI's refusals carry `detail`, as text or as a list: the page shows their words
        assert driver.execute_script("return serverMessage({detail: 'Bad boundary'}, 400)") == "Bad boundary"
        assert driver.execute_script("return serverMessage({detail: [{msg: 'Field required'}]}, 422)") == \
            "Field required"
        Select(driver.find_element(By.ID, "templates")).select_by_value("custom")
        custom = driver.find_element(By.ID, "custom")
        custom.clear()
        custom.send_keys("a {} next to a {}")
        driver.find_element(By.ID, "classify").click()
        wait.until(lambda d: "placeholders" in d.find_element(By.ID, "error").text)
        assert "did not answer" not in driver.find_element(By.ID, "error").text
    finally:
        driver.quit()




def test_web_page_banner_and_template_menu(client):
    info = client.get("/api/info").json()
    assert info["model"] == "open_clip_siglip" and ":" not in info["model"]
    assert "cifar100" in info["template_sets"]
    page = client.get("/").text
    assert "each with one {} where the class" in page and "raw ( 1 templates)" not in page

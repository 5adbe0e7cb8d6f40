"""What people look at: the HTML report, the web page (API and a real browser), the notebook, the console."""
from __future__ import annotations

import json
import os
import re
import shutil
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from pixprompt.cli import main

ARTIFACTS = Path(os.environ.get("PIXPROMPT_TEST_ARTIFACTS", Path(__file__).resolve().parents[1] / "artifacts"))


# -- report --------------------------------------------------------------------------------------------------
def test_eval_report_is_one_self_contained_file_with_png_figures(tiny_model_dirs, colours, tmp_path, capsys):
    results, report = tmp_path / "results.json", tmp_path / "report.html"
    code = main(["eval", "--model", str(tiny_model_dirs["open_clip_clip"]), "--device", "cpu", "--workers", "0",
                 "--dataset", f"folder:{colours}", "--templates", "raw,clip7", "--no-cache", "--quiet",
                 "--output", str(results), "--report", str(report)])
    assert code == 0
    html = report.read_text()
    pngs = sorted(p.name for p in (tmp_path / "report_figures").glob("*.png"))
    assert pngs == ["accuracy-by-template-set.png", "accuracy-vs-parameters.png", "confusions-0.png",
                    "examples-0.png", "per-template-0.png", "reliability-0.png"]
    assert html.count('src="data:image/png;base64,') == len(pngs)
    assert "http://" not in html and "https://" not in html and 'src="/' not in html  # nothing to fetch
    record = json.loads(results.read_text())[-1]
    assert f"{100 * record['top1']:.2f}" in html and "Beside the reported accuracies" in html
    assert len(record["examples"]) == 3 * 4 and {e["true"] for e in record["examples"]} == {"red", "green", "blue"}
    assert all(e["thumbnail"].startswith("data:image/jpeg;base64,") for e in record["examples"])

    again = tmp_path / "again.html"
    assert main(["report", str(results), "-o", str(again), "--figures", str(tmp_path / "figs")]) == 0
    assert again.read_text().count("data:image/png;base64,") == len(pngs)
    assert '<div class="scroll"><table>' in html  # a wide table scrolls within the page's margin


def test_report_figures_keep_their_parts_apart(tiny_model_dirs, colours, tmp_path, capsys):
    """Examples one row per class; the template-set legend beside the bars, not over them."""
    from pixprompt.reports import figures

    results = tmp_path / "results.json"
    assert main(["eval", "--model", str(tiny_model_dirs["open_clip_clip"]), "--device", "cpu", "--workers", "0",
                 "--dataset", f"folder:{colours}", "--templates", "raw,clip7", "--no-cache", "--quiet",
                 "--examples", "3", "--output", str(results)]) == 0
    records = json.loads(results.read_text())
    grid = figures.example_grid(records[0])
    rows = {}
    for axis in grid.axes:
        if axis.get_title(loc="left"):
            rows.setdefault(round(axis.get_position().y0, 3), set()).add(axis.get_title(loc="left"))
    assert len(rows) == 3 and all(len(titles) == 1 for titles in rows.values())  # one class per row
    bars = figures.accuracy_by_template_set(records)
    bars.canvas.draw()
    (axis,) = bars.axes
    legend = axis.get_legend().get_window_extent()
    assert legend.x0 >= axis.get_window_extent().x1  # right of the plotting area


def test_report_refuses_files_that_are_not_results(tmp_path, capsys):
    (tmp_path / "notes.json").write_text('{"hello": 1}')
    assert main(["report", str(tmp_path / "notes.json"), "-o", str(tmp_path / "r.html")]) == 2
    err = capsys.readouterr().err
    assert "holds no pixprompt result records" in err and len(err.strip().splitlines()) == 1


def test_many_classes_show_top_confused_pairs_instead_of_a_matrix():
    from pixprompt.reports import figures

    names = [f"class {i}" for i in range(40)]
    record = {"model": "m", "dataset": "d", "templates": "raw", "per_class_accuracy": dict.fromkeys(names, 0.5),
              "top_confusions": [{"true": "class 1", "predicted": "class 2", "count": 7}]}
    figure = figures.confusions(record)
    assert [label.get_text() for label in figure.axes[0].get_yticklabels()] == ["class 1 → class 2"]


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


# -- notebook -------------------------------------------------------------------------------------------------
def test_tutorial_notebook_runs_end_to_end_on_the_tiny_model(tiny_model_dirs, shared_data, tmp_path, monkeypatch):
    """README's command, `jupyter execute`, as the `[dev]` install has it (on a copy, so the checkout stays clean)."""
    import subprocess
    import sys

    import nbformat

    copy = tmp_path / "pixels_to_prompts.ipynb"
    shutil.copy(Path(__file__).resolve().parents[1] / "notebooks" / "pixels_to_prompts.ipynb", copy)
    for name, value in {"MODEL": str(tiny_model_dirs["open_clip_clip"]), "PRETRAINED": "",
                        "DATA": str(shared_data), "MAX_IMAGES": "40"}.items():
        monkeypatch.setenv(f"PIXPROMPT_NOTEBOOK_{name}", value)
    monkeypatch.setenv("PIXPROMPT_CACHE", str(tmp_path / "cache"))
    run = subprocess.run([str(Path(sys.executable).parent / "jupyter"), "execute", str(copy), "--output", "executed",
                          "--timeout", "600"], capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stderr[-3000:]
    notebook = nbformat.read(tmp_path / "executed.ipynb", 4)
    outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    assert sum("image/png" in o.get("data", {}) for o in outputs) >= 4
    assert (tmp_path / "outputs" / "pixels_to_prompts_report.html").is_file()  # where .gitignore covers it
    text = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    assert "raw (1 template):" in text and "( 1 templates)" not in text
    assert "raw 59.0% → 'a photo of a {}.' 61.9% → 80 templates 63.3%" in text  # from the shipped figures
    assert "do worse alone than together" in text and "here, ensembling" in text  # measured, not asserted


def test_tutorial_notebook_offline_stops_with_the_short_message(tmp_path, monkeypatch):
    """Its default model without weights or network: one message saying what to do, in Python's terms."""
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    notebook = nbformat.read(Path(__file__).resolve().parents[1] / "notebooks" / "pixels_to_prompts.ipynb", 4)
    for name in ("MODEL", "PRETRAINED", "DATA", "MAX_IMAGES"):
        monkeypatch.delenv(f"PIXPROMPT_NOTEBOOK_{name}", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "empty-hf-home"))
    with pytest.raises(CellExecutionError):
        NotebookClient(notebook, timeout=300, kernel_name="python3",
                       resources={"metadata": {"path": str(tmp_path)}}).execute()
    (error,) = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs
                if o.output_type == "error"]
    assert error.ename == "SystemExit" and error.evalue.startswith("cannot load ViT-B-32: the weights of")
    assert 'In Python: pixprompt.load_model("ViT-B-32-quickgelu", "/path/open_clip_pytorch_model.bin")' in error.evalue
    assert "UnavailableError" not in "".join(error.traceback) and len(error.traceback) <= 3


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
                lines = lines[1:]
            assert lines[0].startswith("model ") and "top1 %" in lines[0] and "templates" in lines[0]
            assert lines[2].split()[0] == tiny_model_dirs["open_clip_clip"].name  # the folder's name, not its path
            assert f"{100 * records[0]['top1']:.2f}" in lines[2]
        else:  # each image once; the error column only because an image failed
            images = [line.split()[0] for line in lines[2:] if line.startswith("colours/red/")]
            assert len(images) == len(set(images)) == 9 and "probability %" in lines[0]
            assert lines[0].split()[-1] == "error" and "UnidentifiedImageError" in table


def test_report_reads_without_stumbling(tiny_model_dirs, colours, tmp_path, capsys):
    """Local models by folder name, the ensembling mode named, the papers' table explained and cited."""
    results, report = tmp_path / "results.json", tmp_path / "report.html"
    assert main(["eval", "--model", str(tiny_model_dirs["open_clip_clip"]), "--device", "cpu", "--workers", "0",
                 "--dataset", f"folder:{colours}", "--templates", "raw,clip7", "--ensemble", "vote,embedding",
                 "--no-cache", "--quiet", "--output", str(results), "--report", str(report)]) == 0
    html = report.read_text()
    assert "local-dir:" not in html and str(tiny_model_dirs["open_clip_clip"]) not in html
    assert "Radford et al." in html and "delta: ours with the first set" in html
    records = json.loads(results.read_text())
    from pixprompt.evaluation.grid import paper_table

    (row,), _ = paper_table(records, ["raw", "clip7"])
    vote = next(r for r in records if r["templates"] == "clip7" and r["ensemble"] == "vote")
    assert row["ours clip7"] == round(100 * vote["top1"], 2)  # the first mode given, not whichever came last


def test_imagenettes_reported_figure_is_not_filed_under_standard():
    from pixprompt.reports.reference import reported_for

    figures = reported_for("openai/clip-vit-base-patch32", None, "imagenette")
    assert "standard" not in figures and figures["a photo of a {}"] == 98.7


def test_web_page_banner_and_template_menu(client):
    info = client.get("/api/info").json()
    assert info["model"] == "open_clip_siglip" and ":" not in info["model"]
    assert "cifar100" in info["template_sets"]
    page = client.get("/").text
    assert "each with one {} where the class" in page and "raw ( 1 templates)" not in page


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

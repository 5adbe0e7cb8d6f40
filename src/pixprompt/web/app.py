"""`pixprompt serve`: a local page to try class names and templates on images with one loaded model.

The model is loaded once; text classifiers are kept (least recently used first out) between requests.
Forward passes are serialised by a lock, so concurrent requests are safe; bad uploads get a message.
"""
from __future__ import annotations

import io
import threading
from collections import OrderedDict
from importlib import resources
from pathlib import Path
from typing import Any

import torch
from fastapi import FastAPI, Form, Request, UploadFile
from fastapi.responses import HTMLResponse, JSONResponse

from pixprompt.data.images import IMAGE_EXTENSIONS, decode_rgb
from pixprompt.errors import PixpromptError
from pixprompt.models.base import VisionLanguageModel
from pixprompt.prompts import PromptSet, build_classifier, parse_labels, resolve_templates
from pixprompt.prompts.classifier import ZeroShotClassifier
from pixprompt.prompts.templates import TEMPLATE_SETS, validate_template

MAX_FILES = 16
SHOWN_TEMPLATE_SETS = ("raw", "standard", "clip7", "clip80", "imagenet", "cifar10")


class ClassifierCache:
    """Classifiers by (class names, templates), built under the model's lock, the oldest dropped first."""

    def __init__(self, model: VisionLanguageModel, lock: threading.Lock, size: int = 32):
        self.model = model
        self.lock = lock
        self.size = size
        self.entries: OrderedDict[tuple, ZeroShotClassifier] = OrderedDict()

    def get(self, classnames: list[str], prompt_set: PromptSet) -> ZeroShotClassifier:
        key = (tuple(classnames), prompt_set.templates)
        with self.lock:
            if key in self.entries:
                self.entries.move_to_end(key)
                return self.entries[key]
            classifier = build_classifier(self.model, classnames, prompt_set)
            self.entries[key] = classifier
            if len(self.entries) > self.size:
                self.entries.popitem(last=False)
            return classifier


def prompt_set_from_form(name: str, custom: str) -> PromptSet:
    """A named template set, or the user's own templates (one per line) when `name` is `custom`."""
    if name != "custom":
        (prompt_set,) = resolve_templates(name)
        return prompt_set
    templates = tuple(validate_template(line.strip()) for line in custom.splitlines() if line.strip())
    if not templates:
        raise PixpromptError("write at least one template, e.g. a photo of a {}.")
    return PromptSet("custom", templates)


def read_upload(upload: UploadFile, limit_bytes: int):
    """The uploaded image decoded to RGB; a one-line error for anything that is not a usable image."""
    name = upload.filename or "upload"
    suffix = Path(name).suffix.lower()
    if not (upload.content_type or "").startswith("image/") and suffix not in IMAGE_EXTENSIONS:
        raise PixpromptError(f"{name} is not an image ({upload.content_type or 'unknown type'})")
    data = upload.file.read(limit_bytes + 1)
    if len(data) > limit_bytes:
        raise PixpromptError(f"{name} is larger than the {limit_bytes // 2**20} MB upload limit")
    if not data:
        raise PixpromptError(f"{name} is empty")
    try:
        return decode_rgb(io.BytesIO(data))
    except Exception as error:  # Pillow's many decoding errors, including its decompression-bomb guard
        raise PixpromptError(f"{name} could not be read as an image ({type(error).__name__}: {error})") from None


def create_app(model: VisionLanguageModel, max_upload_mb: int = 10) -> FastAPI:
    """The web app around one loaded model."""
    app = FastAPI(title="pixprompt", docs_url=None, redoc_url=None)
    lock = threading.Lock()
    classifiers = ClassifierCache(model, lock)
    limit_bytes = max_upload_mb * 2**20
    page = resources.files("pixprompt.resources").joinpath("serve.html").read_text(encoding="utf-8")

    @app.middleware("http")
    async def refuse_huge_bodies(request: Request, call_next):
        length = request.headers.get("content-length")
        if length and length.isdigit() and int(length) > limit_bytes * MAX_FILES + 2**20:
            return JSONResponse({"error": f"the upload is larger than {max_upload_mb} MB × {MAX_FILES} files"},
                                status_code=413)
        return await call_next(request)

    @app.exception_handler(PixpromptError)
    async def user_error(request: Request, error: PixpromptError):
        return JSONResponse({"error": str(error)}, status_code=400)

    @app.get("/", response_class=HTMLResponse)
    def index() -> str:
        return page

    @app.get("/api/info")
    def info() -> dict[str, Any]:
        return {"model": model.info.identity, "scoring": model.scoring, "max_files": MAX_FILES,
                "max_upload_mb": max_upload_mb,
                "template_sets": {name: list(TEMPLATE_SETS[name]) for name in SHOWN_TEMPLATE_SETS}}

    @app.post("/api/classify")
    def classify(files: list[UploadFile], labels: str = Form(...), templates: str = Form("standard"),
                 custom_templates: str = Form("")) -> dict[str, Any]:
        classnames = parse_labels(labels)
        prompt_set = prompt_set_from_form(templates, custom_templates)
        if len(files) > MAX_FILES:
            raise PixpromptError(f"{len(files)} files: send at most {MAX_FILES} at a time")
        classifier = classifiers.get(classnames, prompt_set)
        results = []
        for upload in files:
            try:
                pixels = model.preprocess(read_upload(upload, limit_bytes))[None]
            except PixpromptError as error:
                results.append({"file": upload.filename, "error": str(error)})
                continue
            with lock:
                features = model.encode_images(pixels)
            probabilities = classifier.probabilities(classifier.scores(features))[0]
            order = torch.argsort(probabilities, descending=True).tolist()
            results.append({"file": upload.filename,
                            "ranked": [{"label": classnames[c], "probability": round(float(probabilities[c]), 4)}
                                       for c in order]})
        return {"results": results, "templates": list(prompt_set.templates), "scoring": classifier.scoring,
                "example_prompts": prompt_set.prompts_for(classnames[:1])[0][:5]}

    return app


def serve(model: VisionLanguageModel, host: str = "127.0.0.1", port: int = 7860, max_upload_mb: int = 10) -> None:
    """Run the app with uvicorn until Ctrl-C."""
    import uvicorn

    uvicorn.run(create_app(model, max_upload_mb), host=host, port=port, log_level="warning")

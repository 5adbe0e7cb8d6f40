"""`pixprompt serve`: a local page to try class names and templates on images with one loaded model.

The model is loaded once; text classifiers are kept (least recently used first out) between requests.
Forward passes are serialised by a lock, so concurrent requests are safe; bad uploads get a message.

Every request is treated as hostile: only the served host names are answered (DNS rebinding), bodies
are capped while they stream in, prompts per request and concurrent decodes are bounded, template
sets are looked up by name among the built-in ones (nothing a client sends is opened as a path), and
error messages never carry file contents or object reprs.
"""
from __future__ import annotations

import contextlib
import io
import logging
import socket
import threading
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from dataclasses import replace
from importlib import resources
from pathlib import Path
from typing import Annotated, Any

import torch
from fastapi import FastAPI, File, Form, HTTPException, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse
from PIL import Image, UnidentifiedImageError
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from pixprompt.data.images import DEFAULT_MAX_PIXELS, IMAGE_EXTENSIONS, ImageRejected, decode_rgb, decoded_bytes
from pixprompt.errors import PixpromptError
from pixprompt.models.base import VisionLanguageModel
from pixprompt.prompts import PromptSet, build_classifier, parse_labels
from pixprompt.prompts.classifier import ZeroShotClassifier
from pixprompt.prompts.templates import TEMPLATE_SETS, validate_template

log = logging.getLogger(__name__)

MAX_FILES = 16
#: Class names × templates one request may ask for: about a second of text encoding on a laptop CPU.
DEFAULT_MAX_PROMPTS = 2000
#: Characters of one class name or template: text models read at most 64–77 tokens of it, and tokenising
#: a longer text only costs the server time (a 180,000-word template held it for a minute).
MAX_TEXT_CHARS = 300
#: Characters of one request's class names and templates together.
MAX_REQUEST_CHARS = 20_000
#: Prompts encoded per hold of the model lock: a large classifier lets other requests in between batches.
TEXT_BATCH = 32
#: Images decoded and preprocessed at once, whatever the number of concurrent requests.
DECODE_SLOTS = 2
SHOWN_TEMPLATE_SETS = ("raw", "standard", "clip7", "clip80", "imagenet", "cifar10", "cifar100")
LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "[::1]")


class ClassifierCache:
    """Classifiers by (class names, templates), built under the model's lock, the oldest dropped first."""

    def __init__(self, model: VisionLanguageModel, lock: threading.Lock, size: int = 32, temperature: float = 1.0):
        self.model = model
        self.lock = lock
        self.size = size
        self.temperature = temperature
        self.entries: OrderedDict[tuple, ZeroShotClassifier] = OrderedDict()
        self.entries_lock = threading.Lock()
        self.building: dict[tuple, threading.Lock] = {}

    def get(self, classnames: list[str], prompt_set: PromptSet) -> ZeroShotClassifier:
        key = (tuple(classnames), prompt_set.templates)
        with self.entries_lock:
            if key in self.entries:
                self.entries.move_to_end(key)
                return self.entries[key]
            building = self.building.setdefault(key, threading.Lock())
        with building:  # concurrent requests for one classifier build it once
            with self.entries_lock:
                if key in self.entries:
                    return self.entries[key]
            # built batch by batch under the model lock: a small request is answered while a large one builds
            classifier = replace(build_classifier(self.model, classnames, prompt_set, TEXT_BATCH,
                                                  lambda: self.lock), temperature=self.temperature)
            with self.entries_lock:
                self.entries[key] = classifier
                self.building.pop(key, None)
                if len(self.entries) > self.size:
                    self.entries.popitem(last=False)
            return classifier


def allowed_hosts(host: str, extra: Sequence[str] = ()) -> list[str]:
    """Host header values to answer: the loopback names, the served address, and `extra` (--allow-host).

    Served on every interface (0.0.0.0 or ::), this machine's name and addresses are allowed too. Any
    other name is refused, so a web page cannot reach the server through a rebound DNS name.
    """
    hosts = [*LOOPBACK_HOSTS]
    if host in ("0.0.0.0", "::", ""):
        name = socket.gethostname()
        hosts += [name, socket.getfqdn()]
        try:
            hosts += socket.gethostbyname_ex(name)[2]
        except OSError:  # a host name that does not resolve: its addresses stay unknown
            pass
    else:
        hosts.append(f"[{host}]" if ":" in host and not host.startswith("[") else host)
    hosts += list(extra)
    return list(dict.fromkeys(h.lower() for h in hosts if h))


class BodyTooLarge(HTTPException):
    """Raised while a request body streams in, as soon as it passes the cap (Content-Length or not)."""


class BodyLimit:
    """ASGI middleware counting request-body bytes as they arrive, chunked uploads included."""

    def __init__(self, app: ASGIApp, limit_bytes: int, message: str):
        self.app = app
        self.limit_bytes = limit_bytes
        self.message = message

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = dict(scope["headers"]).get(b"content-length", b"")
        if length.isdigit() and int(length) > self.limit_bytes:
            await _error(self.message, 413)(scope, receive, send)
            return
        received = 0

        async def counted() -> Message:
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.limit_bytes:
                raise BodyTooLarge(413, self.message)
            return message

        await self.app(scope, counted, send)


def prompt_set_from_form(name: str, custom: str) -> PromptSet:
    """A built-in template set by name, or the user's own templates (one per line) when `name` is `custom`.

    Never a file: a name that is not a built-in set is refused without being looked up anywhere.
    """
    if name != "custom":
        if name not in TEMPLATE_SETS:
            raise PixpromptError(f"unknown template set: choose one of {', '.join(TEMPLATE_SETS)} or custom")
        return PromptSet(name, TEMPLATE_SETS[name])
    templates = tuple(validate_template(line.strip(), "your templates") for line in custom.splitlines()
                      if line.strip())
    if not templates:
        raise PixpromptError("write at least one template, e.g. a photo of a {}.")
    return PromptSet("custom", templates)


def _unreadable_reason(error: Exception) -> str:
    """Why Pillow could not read an upload, in words that carry nothing from the file or the server."""
    if isinstance(error, ImageRejected):
        return str(error)
    if isinstance(error, UnidentifiedImageError):
        return "not a recognised image format"
    if isinstance(error, Image.DecompressionBombError):
        return "too many pixels"
    return "damaged or truncated image data"


class MemoryBudget:
    """Bytes of decoded images held at once, across all requests: an image waits until its share is free (one
    larger than the whole budget waits for all of it), so concurrency bounds memory, not only decodes."""

    def __init__(self, total: int):
        self.total = self.free = total
        self.changed = threading.Condition()

    @contextlib.contextmanager
    def hold(self, amount: int) -> Iterator[None]:
        amount = min(amount, self.total)
        with self.changed:
            self.changed.wait_for(lambda: self.free >= amount)
            self.free -= amount
        try:
            yield
        finally:
            with self.changed:
                self.free += amount
                self.changed.notify_all()


def upload_bytes(upload: UploadFile, limit_bytes: int) -> bytes:
    """The uploaded file's bytes, refused when it is not an image by name and type, empty or too large."""
    name = upload.filename or "upload"
    suffix = Path(name).suffix.lower()
    if not (upload.content_type or "").startswith("image/") and suffix not in IMAGE_EXTENSIONS:
        raise PixpromptError(f"{name} is not an image ({upload.content_type or 'unknown type'})")
    data = upload.file.read(limit_bytes + 1)
    if len(data) > limit_bytes:
        raise PixpromptError(f"{name} is larger than the {limit_bytes / 2**20:g} MB upload limit")
    if not data:
        raise PixpromptError(f"{name} is empty")
    return data


def decoded_size(name: str, data: bytes) -> int:
    """The bytes an upload will take decoded, read from its header alone (nothing is decoded)."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            return decoded_bytes(*image.size)
    except Exception as error:
        raise PixpromptError(f"{name} could not be read as an image ({_unreadable_reason(error)})") from None


def read_upload(name: str, data: bytes, max_pixels: int | None) -> Image.Image:
    """The uploaded image decoded to RGB; a one-line error for anything that is not a usable image."""
    try:
        return decode_rgb(io.BytesIO(data), max_pixels=max_pixels)
    except Exception as error:  # Pillow's many decoding errors, including its decompression-bomb guard
        raise PixpromptError(f"{name} could not be read as an image ({_unreadable_reason(error)})") from None


def _error(message: str, status: int = 400) -> JSONResponse:
    # after a 413 the rest of the body is not wanted: closing stops the client sending (and uvicorn draining) it
    headers = {"connection": "close"} if status == 413 else None
    return JSONResponse({"error": message}, status_code=status, headers=headers)


def create_app(model: VisionLanguageModel, max_upload_mb: int = 10, *, host: str = "127.0.0.1",
               allow_hosts: Sequence[str] = (), max_prompts: int = DEFAULT_MAX_PROMPTS,
               max_pixels: int | None = DEFAULT_MAX_PIXELS, temperature: float = 1.0) -> FastAPI:
    """The web app around one loaded model, answering only requests addressed to `host` (or `allow_hosts`);
    probabilities are shown at `temperature` (fitted by `serve --calibrate`)."""
    app = FastAPI(title="pixprompt", docs_url=None, redoc_url=None, openapi_url=None)
    lock = threading.Lock()
    decode_slots = threading.BoundedSemaphore(DECODE_SLOTS)
    memory = MemoryBudget(DECODE_SLOTS * 4 * (max_pixels or DEFAULT_MAX_PIXELS))  # DECODE_SLOTS full-budget images
    classifiers = ClassifierCache(model, lock, temperature=temperature)
    limit_bytes = max_upload_mb * 2**20
    page = resources.files("pixprompt.resources").joinpath("serve.html").read_text(encoding="utf-8")
    # middleware added last runs first: the Host check, then the body cap
    app.add_middleware(BodyLimit, limit_bytes=limit_bytes * MAX_FILES + 2**20,
                       message=f"the upload is larger than {MAX_FILES} files of {max_upload_mb} MB")
    app.add_middleware(TrustedHostMiddleware, allowed_hosts=allowed_hosts(host, allow_hosts), www_redirect=False)

    @app.exception_handler(PixpromptError)
    async def user_error(request: Request, error: PixpromptError):
        return _error(str(error))

    @app.exception_handler(BodyTooLarge)
    async def too_large(request: Request, error: BodyTooLarge):
        return _error(str(error.detail), 413)

    @app.exception_handler(RequestValidationError)
    async def malformed(request: Request, error: RequestValidationError):
        return _error("the request is not a form with images, class names and templates: use the page")

    @app.exception_handler(Exception)
    async def internal(request: Request, error: Exception):
        log.error("request failed: %s: %s", type(error).__name__, error)
        return _error("the server could not answer this request (its log has the details)", 500)

    @app.api_route("/", methods=["GET", "HEAD"], response_class=HTMLResponse)
    def index() -> str:
        return page

    @app.get("/api/info")
    def info() -> dict[str, Any]:
        return {"model": model.info.label, "scoring": model.scoring, "max_files": MAX_FILES,
                "max_upload_mb": max_upload_mb, "max_prompts": max_prompts,
                "template_sets": {name: list(TEMPLATE_SETS[name]) for name in SHOWN_TEMPLATE_SETS}}

    def decoded(upload: UploadFile) -> torch.Tensor:
        name = upload.filename or "upload"
        data = upload_bytes(upload, limit_bytes)
        # a bounded number of decodes at once, and a bounded number of bytes of full-size images
        with decode_slots, memory.hold(decoded_size(name, data)):
            return model.preprocess(read_upload(name, data, max_pixels))[None]

    @app.post("/api/classify")
    def classify(files: Annotated[list[UploadFile] | None, File()] = None, labels: Annotated[str, Form()] = "",
                 templates: Annotated[str, Form()] = "standard",
                 custom_templates: Annotated[str, Form()] = "") -> dict[str, Any]:
        if not labels.strip():
            raise PixpromptError("type the class names to choose from, separated by commas")
        if not files:
            raise PixpromptError("choose or drop at least one image")
        if len(files) > MAX_FILES:
            raise PixpromptError(f"{len(files)} files: send at most {MAX_FILES} at a time")
        if len(labels) + len(custom_templates) > MAX_REQUEST_CHARS:
            raise PixpromptError(f"the class names and templates are {len(labels) + len(custom_templates):,} "
                                 f"characters: at most {MAX_REQUEST_CHARS:,} per request")
        classnames = parse_labels(labels)
        prompt_set = prompt_set_from_form(templates, custom_templates)
        for kind, texts in (("class name", classnames), ("template", prompt_set.templates)):
            long = next((text for text in texts if len(text) > MAX_TEXT_CHARS), None)
            if long is not None:
                tokens = model.info.context_length or 77
                raise PixpromptError(f"a {kind} of {len(long):,} characters ({long[:40]!r}…): at most "
                                     f"{MAX_TEXT_CHARS} (the model reads only its first {tokens} tokens)")
        prompts = len(classnames) * len(prompt_set.templates)
        if prompts > max_prompts:
            raise PixpromptError(f"{len(classnames)} classes × {len(prompt_set.templates)} templates = {prompts:,} "
                                 f"prompts: at most {max_prompts:,} per request; use fewer classes or templates")
        classifier = classifiers.get(classnames, prompt_set)
        results = []
        for upload in files:
            try:
                pixels = decoded(upload)
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


def serve(model: VisionLanguageModel, host: str = "127.0.0.1", port: int = 7860, max_upload_mb: int = 10,
          allow_hosts: Sequence[str] = (), max_prompts: int = DEFAULT_MAX_PROMPTS,
          max_pixels: int | None = DEFAULT_MAX_PIXELS, temperature: float = 1.0) -> None:
    """Run the app with uvicorn until Ctrl-C."""
    import uvicorn

    app = create_app(model, max_upload_mb, host=host, allow_hosts=allow_hosts, max_prompts=max_prompts,
                     max_pixels=max_pixels, temperature=temperature)
    uvicorn.run(app, host=host, port=port, log_level="warning")

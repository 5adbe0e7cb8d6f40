"""Shared fixtures: tiny random-weight models saved to disk, and the real images in ../shared/data."""
from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

from tiny_models import BUILDERS

# The references the tests compare with (open_clip, transformers, CLIP_benchmark) run in fp32: so does every test,
# and its child processes, unless it asks for `auto`'s bf16 itself (tests/test_cpu_precision.py).
os.environ["PIXPROMPT_CPU_BF16"] = "off"

DATA_ENV = "PIXPROMPT_TEST_DATA"
DEFAULT_DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"


@pytest.fixture(autouse=True, scope="session")
def private_cache(tmp_path_factory):
    """The Python API caches by default: tests never touch a developer's ~/.cache/pixprompt."""
    previous = os.environ.get("PIXPROMPT_CACHE")
    os.environ["PIXPROMPT_CACHE"] = str(tmp_path_factory.mktemp("pixprompt-cache"))
    yield
    if previous is None:
        os.environ.pop("PIXPROMPT_CACHE", None)
    else:
        os.environ["PIXPROMPT_CACHE"] = previous


@pytest.fixture(autouse=True)
def fresh_logging_state():
    """`cli.main` sets log levels, warning capture and progress bars for its whole process (--quiet, --verbose);
    tests run many commands in one process, so each test gets back the state it started with."""
    from pixprompt import progress, storage

    loggers = [logging.getLogger(), logging.getLogger("pixprompt"), logging.getLogger("py.warnings")]
    levels, progress_enabled = [logger.level for logger in loggers], progress.ENABLED
    storage._warned_reasons.clear()  # each test sees its own first cache-write warning
    yield
    for logger, level in zip(loggers, levels):
        logger.setLevel(level)
    logging.captureWarnings(False)
    progress.ENABLED = progress_enabled


@pytest.fixture(scope="session")
def tiny_model_dirs(tmp_path_factory) -> dict[str, Path]:
    """Folders of the four tiny models, built once per test session."""
    root = tmp_path_factory.mktemp("tiny-models")
    return {name: build(root / name) for name, build in BUILDERS.items()}


@pytest.fixture(scope="session")
def loaded_models(tiny_model_dirs):
    """The tiny models loaded through pixprompt's public `load_model`, on the CPU in fp32."""
    from pixprompt import load_model

    return {name: load_model(str(path), device="cpu") for name, path in tiny_model_dirs.items()}


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The shared real-image folder (env PIXPROMPT_TEST_DATA, default ../shared/data); skip if absent."""
    root = Path(os.environ.get(DATA_ENV, DEFAULT_DATA)).resolve()
    if not (root / "imagenette-val").is_dir():
        pytest.skip(f"real images not found at {root}: set {DATA_ENV} to the shared data folder")
    return root


COLOURS = {"red": (220, 40, 40), "green": (40, 200, 40), "blue": (40, 40, 220)}


def colour_photos(root: Path, per_class: int, first_seed: int = 0) -> Path:
    """Three classes of plain-colour photos (with noise drawn from `first_seed` on), in the folder layout."""
    from bad_inputs import write_photos

    for seed, (name, colour) in enumerate(COLOURS.items(), start=first_seed):
        write_photos(root / name, per_class, colour, seed)
    return root


@pytest.fixture()
def colours(tmp_path) -> Path:
    """Three classes of 8 plain-colour photos each, in the folder layout."""
    return colour_photos(tmp_path / "colours", 8)


@pytest.fixture()
def colours_train(tmp_path) -> Path:
    """Other photos of `colours`' three classes (4 each, other noise): a training set apart from the test images."""
    return colour_photos(tmp_path / "colours-train", 4, first_seed=10)

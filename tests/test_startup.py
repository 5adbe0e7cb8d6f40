"""The first hour (#12): the package, --help, the cached model list and usage errors start without torch."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

HEAVY = ("torch", "torchvision", "open_clip", "transformers")
PROBE = """
import json, sys
{setup}
try:
    code = {call}
except SystemExit as stop:
    code = stop.code
print(json.dumps({{"code": code, "heavy": [m for m in {heavy!r} if m in sys.modules]}}))
"""


def imported_after(call: str, setup: str = "", env: dict | None = None) -> dict:
    """Exit code and heavy modules in sys.modules after `call` runs in a fresh interpreter."""
    script = PROBE.format(setup=setup, call=call, heavy=HEAVY)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300, env=env)
    return json.loads(result.stdout.strip().splitlines()[-1])


def cli(*argv: str) -> str:
    return f"__import__('pixprompt.cli').cli.main({list(argv)!r})"


def test_importing_the_package_and_naming_its_api_imports_no_model_library():
    outcome = imported_after("0", setup="import pixprompt, pixprompt.prompts, pixprompt.models, pixprompt.evaluation\n"
                                        "from pixprompt.prompts import TEMPLATE_SETS, resolve_templates\n"
                                        "assert len(TEMPLATE_SETS['clip80']) == 80 and 'load_model' in dir(pixprompt)")
    assert outcome == {"code": 0, "heavy": []}


def test_the_lazy_names_are_the_real_objects():
    import pixprompt
    from pixprompt.models.registry import load_model
    from pixprompt.prompts.classifier import build_classifier

    assert pixprompt.load_model is load_model and pixprompt.build_classifier is build_classifier
    assert "load_model" in dir(pixprompt)
    with pytest.raises(AttributeError):
        pixprompt.no_such_name  # noqa: B018


@pytest.mark.parametrize("argv", [
    ["--help"], ["classify", "--help"], ["eval", "--help"], ["bench", "--help"], ["serve", "--help"],
    ["report", "--help"], ["baseline", "--help"], ["models", "--help"], ["datasets"],
    ["classify", "missing.jpg", "--model", "ViT-B-32", "--labels", "a,b"],
    ["classify", ".", "--model", "ViT-B-32", "--labels", "a,a"],
    ["classify", ".", "--model", "ViT-B-32", "--labels", "a,b", "--templates", "nope"],
    ["classify", ".", "--model", "ViT-B-32", "--labels", "a,b", "--top-k", "0"],
    ["eval", "--model", "ViT-B-32", "--dataset", "nope"],
    ["eval", "--model", "ViT-B-32", "--dataset", "folder:.", "--output", "results.txt"],
    ["eval", "--model", "ViT-B-32", "--dataset", "imagenet", "--ensemble", "mean"],
    ["serve", "--model", "ViT-B-32", "--port", "99999"],
])
def test_help_and_usage_errors_import_no_model_library(argv, tmp_path):
    outcome = imported_after(cli(*argv))
    assert outcome["heavy"] == [] and outcome["code"] in (0, 2)


def test_listings_import_no_model_library_even_the_first_time(tmp_path):
    """The shipped catalog answers a first `models` for its open_clip release; `datasets` needs no torch."""
    import os

    from pixprompt.models.catalog import _library_version, shipped_catalog

    env = {**os.environ, "PIXPROMPT_CACHE": str(tmp_path)}
    first = imported_after(cli("models", "--filter", "ViT-B-32", "--json"), env=env)
    if shipped_catalog()["open_clip_version"] == _library_version("open_clip_torch"):
        assert first == {"code": 0, "heavy": []}
    else:  # another open_clip: its entries are read once, then cached
        assert first["code"] == 0 and "open_clip" in first["heavy"]
    assert imported_after(cli("models", "--filter", "ViT-B-32", "--json"), env=env) == {"code": 0, "heavy": []}
    assert imported_after(cli("datasets", "--json")) == {"code": 0, "heavy": []}


def test_the_shipped_model_catalog_is_open_clips():
    """Each shipped parameter count equals the architecture's built on the meta device (a sample), every config
    digest equals the installed open_clip's where the shipped release is the installed one, and a changed
    config is counted afresh rather than given an old count."""
    import open_clip

    from pixprompt.models.catalog import (
        _library_version,
        _open_clip_entries,
        _open_clip_params,
        _parameter_count,
        config_digest,
        shipped_catalog,
    )

    shipped = shipped_catalog()
    architectures = shipped["architectures"]
    if shipped["open_clip_version"] == _library_version("open_clip_torch"):
        assert shipped["entries"] == [entry.to_dict() for entry in _open_clip_entries()]
        assert all(known["config"] == config_digest(open_clip.get_model_config(name) or {})
                   for name, known in architectures.items())
    sample = ["RN50", "ViT-B-32", "ViT-L-14", "ViT-B-16-SigLIP", "convnext_base"]
    for name in sample:
        assert _parameter_count(name, architectures) == _open_clip_params(name), name
    assert architectures["ViT-B-32"]["params"] == 151_277_313  # OpenAI's ViT-B/32, as the CLIP repository counts
    changed = {"ViT-B-32": {**architectures["ViT-B-32"], "config": "0" * 16, "params": 1}}
    assert _parameter_count("ViT-B-32", changed) == architectures["ViT-B-32"]["params"]

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
    ["report", "--help"], ["baseline", "--help"], ["models", "--help"],
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


def test_a_cached_model_listing_imports_no_model_library(tmp_path):
    import os

    env = {**os.environ, "PIXPROMPT_CACHE": str(tmp_path)}
    first = imported_after(cli("models", "--filter", "ViT-B-32", "--json"), env=env)
    assert first["code"] == 0 and "open_clip" in first["heavy"]  # the first listing reads open_clip's configs
    assert imported_after(cli("models", "--filter", "ViT-B-32", "--json"), env=env) == {"code": 0, "heavy": []}

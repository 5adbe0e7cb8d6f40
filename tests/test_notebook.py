"""The tutorial notebook, run as README says (`jupyter execute`), online and offline."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest


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

"""The experiment grid behind `bench`: models × datasets × template sets, one image pass per (model, dataset)."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pixprompt.data.images import DEFAULT_MAX_PIXELS
from pixprompt.errors import UsageError
from pixprompt.progress import announce
from pixprompt.prompts.labels import read_text_file


@dataclass
class Grid:
    models: list[dict[str, Any]]
    datasets: list[dict[str, Any]]
    templates: list[str] = field(default_factory=lambda: ["clip80", "standard", "raw"])
    ensemble: str = "embedding"


def load_grid(path: str | Path) -> Grid:
    """Read a YAML grid: `models: [{model, pretrained}]`, `datasets: [{dataset, data_dir}]`, `templates: [...]`."""
    import yaml

    try:
        data = yaml.safe_load(read_text_file(path, "bench config"))
    except yaml.YAMLError as error:
        raise UsageError(f"bench config {path} is not valid YAML ({str(error).splitlines()[0]})") from None
    if not isinstance(data, dict) or not data.get("models") or not data.get("datasets"):
        raise UsageError(f"bench config {path} needs non-empty `models` and `datasets` lists")
    models = [m if isinstance(m, dict) else {"model": m} for m in data["models"]]
    datasets = [d if isinstance(d, dict) else {"dataset": d} for d in data["datasets"]]
    for entry in models:
        if "model" not in entry:
            raise UsageError(f"bench config {path}: every model entry needs `model:` ({entry})")
    for entry in datasets:
        if "dataset" not in entry:
            raise UsageError(f"bench config {path}: every dataset entry needs `dataset:` ({entry})")
    templates = data.get("templates", ["clip80", "standard", "raw"])
    return Grid(models, datasets, [templates] if isinstance(templates, str) else list(templates),
                data.get("ensemble", "embedding"))


def run_grid(grid: Grid, device: str = "auto", precision: str = "auto",
             cache_root: Path | str | bool | None = True,
             batch_size: int | None = None, workers: int | None = None,
             jpeg_draft: bool = False, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> list[dict[str, Any]]:
    """Evaluate each model on each dataset with all template sets; each model is loaded once.

    `jpeg_draft` decodes JPEG files at reduced scale for each model, `max_pixels` skips larger images
    (see `ImageDataset.decoded_with`).
    """
    from pixprompt.data.datasets import DatasetOptions, load_dataset
    from pixprompt.evaluation.runs import evaluate
    from pixprompt.models import load_model
    from pixprompt.prompts import resolve_templates

    prompt_sets = resolve_templates(",".join(grid.templates))
    datasets = [load_dataset(d["dataset"], DatasetOptions(d.get("data_dir"), d.get("class_map")))
                for d in grid.datasets]
    records, jobs = [], len(grid.models) * len(datasets)
    for model_number, entry in enumerate(grid.models):
        model = load_model(entry["model"], entry.get("pretrained"), device=device, precision=precision)
        for dataset_number, dataset in enumerate(datasets):
            pretrained = f" ({entry['pretrained']})" if entry.get("pretrained") else ""
            announce(f"[{model_number * len(datasets) + dataset_number + 1}/{jobs}] {entry['model']}{pretrained} "
                     f"on {dataset.name}")
            decoded = dataset.decoded_with(model.decode_size if jpeg_draft else None, max_pixels)
            records += evaluate(model, decoded, prompt_sets, [grid.ensemble], cache_root, batch_size, workers)
    return records


def paper_table(records: list[dict[str, Any]], templates: list[str]) -> tuple[list[dict[str, Any]], list[str]]:
    """Rows = (model, dataset); reported CLIP Table 11 and SigLIP Table 3, then ours per template set, and
    `delta` = ours with the first template set − the paper's figure (CLIP's, else SigLIP's)."""
    from pixprompt.models.info import model_label
    from pixprompt.reports.reference import reported_for

    rows: dict[tuple, dict[str, Any]] = {}
    for record in records:
        key = (record["model"], record["pretrained"], record["dataset"])
        if key not in rows:
            reported = reported_for(record["model"], record["pretrained"], record["dataset"])
            rows[key] = {"model": model_label(record["model"], record["pretrained"]),
                         "reference": reported.get("label"), "dataset": record["dataset"],
                         "reported CLIP T11": reported.get("clip_table11"),
                         "reported SigLIP T3": reported.get("siglip_table3"),
                         **{f"reproduced {t}": reported.get(t) for t in templates}}
        # the first ensembling mode run stands for the template set (the papers' recipe, embedding, by default)
        rows[key].setdefault(templates_column(record["templates"]), round(100 * record["top1"], 2))
    for row in rows.values():
        paper = row["reported CLIP T11"] if row["reported CLIP T11"] is not None else row["reported SigLIP T3"]
        ours = row.get(templates_column(templates[0]))
        row["delta"] = round(ours - paper, 2) if paper is not None and ours is not None else None
    columns = ["model", "reference", "dataset", "reported CLIP T11", "reported SigLIP T3",
               *[templates_column(t) for t in templates], "delta", *[f"reproduced {t}" for t in templates]]
    return list(rows.values()), columns


def templates_column(name: str) -> str:
    return f"ours {name}"

"""The experiment grid behind `bench`: models × datasets × template sets, one image pass per (model, dataset)."""
from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from pixprompt.data.images import DEFAULT_MAX_PIXELS
from pixprompt.errors import UsageError
from pixprompt.evaluation.grid_schema import check_config
from pixprompt.evaluation.label_free import PLAIN, checked_methods, load_hierarchy
from pixprompt.evaluation.settings import RunSettings, run_settings
from pixprompt.progress import announce
from pixprompt.readers import read_yaml

log = logging.getLogger(__name__)


#: In a grid's `templates`, each dataset's own template set (the CLIP paper's for the suite datasets).
DATASET_TEMPLATES = "default"


@dataclass
class Grid:
    models: list[dict[str, Any]]
    datasets: list[dict[str, Any]]
    templates: list[str] = field(default_factory=lambda: ["clip80", "standard", "raw"])
    ensemble: str = "embedding"
    #: Named suites asked for (`suite: clip`), in order; their datasets are in `datasets`, marked `suite`.
    suites: list[str] = field(default_factory=list)
    #: The language of every dataset's ImageNet class names and templates (`language: it`), None for English.
    language: str | None = None
    #: `plain` and/or label-free methods (`method: [plain, zpe]`), and the hierarchy file CHiLS reads.
    methods: list[str] = field(default_factory=lambda: [PLAIN])
    hierarchy: str | None = None
    #: A --descriptions spec added to every dataset's template sets (`descriptions: waffle`).
    descriptions: str | None = None
    #: The folder a suite's datasets are read from (`data_root: DIR`, each in DIR/NAME).
    data_root: str | None = None


def _suite_datasets(name: str, data_root: str | None, download: bool) -> list[dict[str, Any]]:
    """A suite's datasets, each read from `<data_root>/<name>` when that folder exists, else from pixprompt's
    cache folder (downloaded there when it can be and `download` allows it)."""
    from pixprompt.data.catalog import catalog, suite

    known, entries = catalog(), []
    for dataset in suite(name):
        folder = Path(data_root).expanduser() / known[dataset].folder if data_root else None
        entries.append({"dataset": dataset, "data_dir": str(folder) if folder and folder.is_dir() else None,
                        "suite": name, "download": download, "data_root_tried": str(folder) if folder else None})
    return entries


def load_grid(path: str | Path) -> Grid:
    """Read a YAML grid: `models: [{model, pretrained}]`, `datasets: [{dataset, data_dir}]` and/or
    `suite: NAME` (or a list; `data_root: DIR` holds their datasets' folders, `download: false` keeps to what
    is on disk), `templates: [...]`, `language: XX` (every dataset's, or one dataset's `language:`), `method: [...]`
    (label-free methods beside `plain`; `hierarchy: FILE` for CHiLS) and `descriptions: SPEC` (as --descriptions)."""
    data = check_config(read_yaml(path, "bench config"), f"bench config {path}")
    if not data.get("models") or not (data.get("datasets") or data.get("suite")):
        raise UsageError(f"bench config {path} needs a non-empty `models` list, and `datasets` or `suite`")
    models = [m if isinstance(m, dict) else {"model": m} for m in data["models"]]
    suites = data.get("suite") or []
    suites = [suites] if isinstance(suites, str) else list(suites)
    datasets = []
    for entry in data.get("datasets") or []:
        entry = entry if isinstance(entry, dict) else {"dataset": entry}
        if "suite" in entry:
            suites.append(entry["suite"])
        else:
            datasets.append(entry)
    listed = {entry["dataset"] for entry in datasets}
    download = bool(data.get("download", True))
    for name in dict.fromkeys(suites):
        datasets += [entry for entry in _suite_datasets(name, data.get("data_root"), download)
                     if entry["dataset"] not in listed]
        listed |= {entry["dataset"] for entry in datasets}
    default = [DATASET_TEMPLATES] if suites else ["clip80", "standard", "raw"]
    templates = data.get("templates", default)
    methods = data.get("method", PLAIN)
    methods = checked_methods([methods] if isinstance(methods, str) else list(methods), data.get("hierarchy"))
    return Grid(models, datasets, [templates] if isinstance(templates, str) else list(templates),
                data.get("ensemble", "embedding"), list(dict.fromkeys(suites)), data.get("language"), methods,
                data.get("hierarchy"), data.get("descriptions"), data.get("data_root"))


def _where_to_put(entry: dict[str, Any]) -> str:
    """What a dataset's messages tell the user to give: the path a suite's `data_root` made and found missing."""
    if "suite" not in entry:
        return "data_dir: in the config"
    tried = entry.get("data_root_tried")
    if tried:
        return f"its folder at {tried} (data_root's {Path(tried).name}/, not there)"
    return "data_root: DIR (holding its folder) in the config"


def available_datasets(grid: Grid) -> list[Any]:
    """The grid's datasets, loaded; a suite's datasets that are not on disk (or not readable there) and cannot be
    downloaded are left out with a warning saying why (a dataset listed by name must be there)."""
    from pixprompt.data.datasets import DatasetOptions, load_dataset
    from pixprompt.errors import UnavailableError

    datasets, left_out = [], {}
    for entry in grid.datasets:
        try:
            options = DatasetOptions(entry.get("data_dir"), entry.get("class_map"), entry.get("download", True),
                                     language=entry.get("language", grid.language),
                                     data_dir_option=_where_to_put(entry),
                                     download_option="set download: true in the config")
            datasets.append(load_dataset(entry["dataset"], options))
        except (UnavailableError, UsageError) as error:  # a suite's: not under data_root, or not as expected there
            if "suite" not in entry:
                raise
            log.info("suite %s: %s left out: %s", entry["suite"], entry["dataset"], str(error).splitlines()[0])
            left_out.setdefault(entry["suite"], []).append((entry["dataset"], str(error).splitlines()[0]))
    for name, missing in left_out.items():  # one summary per suite, each dataset's reason with --verbose
        first, reason = missing[0]
        root = grid.data_root or "DATA_ROOT"
        log.warning("suite %s: %d dataset(s) left out (%s), e.g. %s: %s; to fetch them on a connected machine: "
                    "pixprompt datasets --filter %s --fetch-commands %s > fetch.sh (--verbose names each reason)",
                    name, len(missing), ", ".join(d for d, _ in missing),
                    first, reason, name, root)
    if not datasets:
        raise UnavailableError("none of the grid's datasets is available: see the summary above")
    return datasets


def run_grid(grid: Grid, device: str = "auto", precision: str = "auto", jpeg_draft: bool = False,
             max_pixels: int | None = DEFAULT_MAX_PIXELS, settings: RunSettings | None = None,
             **options: Any) -> list[dict[str, Any]]:
    """Evaluate each model on each dataset with all template sets; each model is loaded once.

    `jpeg_draft` decodes JPEG files at reduced scale for each model, `max_pixels` skips larger images
    (see `ImageDataset.decoded_with`); `settings` (see `RunSettings`) or its fields as keywords say how to encode
    and cache.
    """
    settings = run_settings(settings, options)
    from pixprompt.evaluation.runs import evaluate
    from pixprompt.models import load_model
    from pixprompt.prompts import resolve_templates
    from pixprompt.prompts.descriptors import resolve_descriptions

    datasets = available_datasets(grid)
    prompt_sets = {dataset.name: resolve_templates(",".join(dataset.default_templates if t == DATASET_TEMPLATES else t
                                                            for t in grid.templates))
                   + ([resolve_descriptions(grid.descriptions, dataset.classnames)] if grid.descriptions else [])
                   for dataset in datasets}
    if grid.hierarchy:
        settings = replace(settings, hierarchy=load_hierarchy(grid.hierarchy))
    records, jobs = [], len(grid.models) * len(datasets)
    for model_number, entry in enumerate(grid.models):
        model = load_model(entry["model"], entry.get("pretrained"), device=device, precision=precision)
        for dataset_number, dataset in enumerate(datasets):
            pretrained = f" ({entry['pretrained']})" if entry.get("pretrained") else ""
            announce(f"[{model_number * len(datasets) + dataset_number + 1}/{jobs}] {entry['model']}{pretrained} "
                     f"on {dataset.name}")
            decoded = dataset.decoded_with(model.decode_size if jpeg_draft else None, max_pixels)
            evaluated = evaluate(model, decoded, prompt_sets[dataset.name], [grid.ensemble], settings, grid.methods)
            if DATASET_TEMPLATES in grid.templates:  # which records answer the grid's `default` column
                own = {prompt_set.name for prompt_set in resolve_templates(dataset.default_templates)}
                evaluated = [{**r, "templates_spec": DATASET_TEMPLATES} if r.get("templates") in own else r
                             for r in evaluated]
            records += evaluated
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
        rows[key].setdefault(templates_column(record.get("templates_spec", record["templates"])),
                             round(100 * record["top1"], 2))
    for row in rows.values():
        paper = row["reported CLIP T11"] if row["reported CLIP T11"] is not None else row["reported SigLIP T3"]
        ours = row.get(templates_column(templates[0]))
        row["delta"] = round(ours - paper, 2) if paper is not None and ours is not None else None
    # the papers' figure, ours and their difference first; a narrow terminal leaves out the last ones first
    columns = ["model", "dataset", "reported CLIP T11", "reported SigLIP T3", *[templates_column(t) for t in templates],
               "delta", "reference", *[f"reproduced {t}" for t in templates]]
    return list(rows.values()), columns


def templates_column(name: str) -> str:
    return f"ours {name}"

"""A self-contained HTML report (figures embedded) plus the same figures as PNG files beside it."""
from __future__ import annotations

import base64
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from importlib import resources
from pathlib import Path
from typing import Any

from pixprompt.errors import UsageError, first_line
from pixprompt.evaluation.label_free import is_label_free
from pixprompt.readers import read_json
from pixprompt.reports import figures
from pixprompt.reports.figures import Record, best_per_model_and_dataset
from pixprompt.reports.tables import format_cell, summary_columns, summary_row
from pixprompt.storage import atomic_path, write_text_atomic

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ReportFigure:
    slug: str
    title: str
    png: bytes

    @property
    def data_uri(self) -> str:
        return "data:image/png;base64," + base64.b64encode(self.png).decode("ascii")


def load_records(paths: Sequence[str | Path]) -> list[Record]:
    """Result records from JSON files written by `eval`/`bench --output x.json` (a list or one record)."""
    records: list[Record] = []
    seen: dict[tuple, tuple[Path, Record]] = {}
    for path in paths:
        path = Path(path)
        data = read_json(path, "results file (write one with --output FILE.json)")
        rows = data if isinstance(data, list) else [data]
        if not rows or not all(isinstance(r, dict) and "model" in r and ("top1" in r or is_classless(r)) for r in rows):
            raise UsageError(f"{path} holds no pixprompt result records (each needs model and top1)")
        for number, row in enumerate(rows, start=1):
            problem = record_problem(row)
            if problem:
                raise UsageError(f"{path}: record {number} is not one pixprompt wrote ({problem}); nothing was "
                                 "written")
        records += [_kept_apart(row, path, seen) for row in rows]
    return records


#: What names a result in a report's tables and figures; two records of other runs under one of these are kept apart.
_RESULT_KEY = ("model", "pretrained", "dataset", "templates", "ensemble", "method", "shots", "seed", "train_dataset",
               "task")


def _kept_apart(record: Record, path: Path, seen: dict[tuple, tuple[Path, Record]]) -> Record:
    """`record`, labelled by its file (`run_label`, shown beside its model) when an earlier file holds a result of
    the same name from another run (other images, another run digest), so neither is merged into or hides the other."""
    key = tuple(json.dumps(record.get(field), sort_keys=True) for field in _RESULT_KEY)
    earlier = seen.get(key)
    if earlier is None:
        seen[key] = (path, record)
        return record
    first_path, first = earlier
    differs = next((field for field in ("run_digest", "split", "images", "skipped")
                    if first.get(field) != record.get(field)), None)
    if differs is None or first_path == path:
        return record
    log.warning(
        "%s and %s both hold %s on %s (%s) from different runs (%s differs): kept apart as %r", first_path.name,
        path.name, record["model"], record.get("dataset"), record.get("templates"), differs, path.stem)
    return {**record, "run_label": path.stem}


#: The fields every report figure and table reads, with the types pixprompt writes them in.
TEXT_FIELDS = ("model", "dataset", "templates", "ensemble", "method", "pretrained", "split")
NUMBER_FIELDS = ("top1", "top5", "mean_per_class_recall", "score", "images", "skipped", "params", "shots",
                 "ece", "nll", "brier", "temperature", "mean_average_precision", "mean_recall@1",
                 "avg_jaccard_score")


#: The tasks without classes (retrieval's recalls, association games' Jaccard indices), by the field each is summed
#: up by: in the report's tables, not in its classification figures.
CLASSLESS_TASKS = {"retrieval": "mean_recall@1", "association": "jaccard_score_10-12"}


def is_classless(record: Record) -> bool:
    """A retrieval or association record: no classes, so no top-1."""
    return record.get("task") in CLASSLESS_TASKS


def record_problem(record: Record) -> str | None:
    """What makes `record` unlike a pixprompt record (a missing field, a field of the wrong type), or None."""
    needed = ("model", "dataset", CLASSLESS_TASKS.get(record.get("task"), "top1"))
    missing = [key for key in needed if key not in record]
    if missing:
        return f"it has no {', '.join(missing)}"
    for key in TEXT_FIELDS:
        if record.get(key) is not None and not isinstance(record[key], str):
            return f"{key} is {type(record[key]).__name__}, not text"
    for key in NUMBER_FIELDS:
        value = record.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
            return f"{key} is {type(value).__name__}, not a number"
    return None


def report_figures(records: Sequence[Record], max_each: int = 4) -> list[ReportFigure]:
    """Every figure the report shows, in order (retrieval records have none: their recalls are in the tables)."""
    from pixprompt.evaluation.probing import summary, zero_shot_sentence
    from pixprompt.evaluation.suites import robustness

    records = [r for r in records if not is_classless(r)]
    if not records:
        return []

    zero_shot = figures.zero_shot(records)
    probe_ids = {id(r) for r in figures.probes(records)} - {id(r) for r in zero_shot}
    # no probe learner's nor label-free method's top-1 among the zero-shot figures (their tables show them)
    plain = [r for r in records if id(r) not in probe_ids and not is_label_free(r)]
    made = [ReportFigure("accuracy-by-template-set", "Accuracy per template set and model",
                         figures.png_bytes(figures.accuracy_by_template_set(plain)))]
    if any(r.get("params") for r in plain):
        made.append(ReportFigure("accuracy-vs-parameters", "Accuracy against parameter count",
                                 figures.png_bytes(figures.accuracy_vs_parameters(plain))))
    by_templates = best_per_model_and_dataset(
        sorted(zero_shot, key=lambda r: -len(r.get("per_template_accuracy") or {})),
        lambda r: len(r.get("per_template_accuracy") or {}) > 1)
    for i, record in enumerate(by_templates[:max_each]):
        made.append(ReportFigure(f"per-template-{i}", f"Each template alone: {figures.model_label(record)}, "
                                 f"{record['templates']}", figures.png_bytes(figures.per_template_accuracy(record))))
    for i, record in enumerate(best_per_model_and_dataset(zero_shot)[:max_each]):
        made.append(ReportFigure(f"confusions-{i}", f"Confusions: {figures.model_label(record)}, "
                                 f"{record['dataset']}", figures.png_bytes(figures.confusions(record))))
    for i, record in enumerate(best_per_model_and_dataset(zero_shot, lambda r: bool(r.get("examples")))[:max_each]):
        made.append(ReportFigure(f"examples-{i}", f"Examples: {figures.model_label(record)}, {record['dataset']}",
                                 figures.png_bytes(figures.example_grid(record))))
    for i, record in enumerate(best_per_model_and_dataset(zero_shot, lambda r: bool(r.get("reliability")))[:max_each]):
        made.append(ReportFigure(f"reliability-{i}", f"Calibration: {figures.model_label(record)}, "
                                 f"{record['dataset']}, {record['templates']}",
                                 figures.png_bytes(figures.reliability_diagram(record))))
    for i, record in enumerate(r for r in records if r.get("selection_path")):
        made.append(ReportFigure(f"selection-{i}", f"Template selection: {figures.model_label(record)}, "
                                 f"{record['candidates']} on {record['dataset']}",
                                 figures.png_bytes(figures.selection_path(record))))
    probes = figures.probes(records)
    if probes:
        rows = summary(probes)
        made.append(ReportFigure("few-shot", "Few-shot learners against zero-shot",
                                 figures.png_bytes(figures.few_shot_curve(rows, zero_shot_sentence(rows)))))
    shifts = robustness(records)
    if shifts:
        made.append(ReportFigure("robustness", "Robustness to ImageNet's distribution shifts",
                                 figures.png_bytes(figures.robustness_scatter(shifts))))
    return made


def results_tables(records: Sequence[Record]) -> list[dict[str, Any]]:
    """The summary table, and the zero-shot results beside the papers' reported accuracies."""
    from pixprompt.evaluation.grid import paper_table
    from pixprompt.evaluation.label_free import methods_beside_plain
    from pixprompt.evaluation.probing import summary
    from pixprompt.evaluation.suites import datacomp_aggregate, group_table, robustness
    from pixprompt.reports.reference import reported

    probes = figures.probes(records)
    probe_ids = {id(r) for r in probes}
    others = [r for r in records if id(r) not in probe_ids]
    ensembles = [r for r in records if not is_label_free(r)]  # the papers' and DataComp's tables
    tables = [{"title": "Results", "columns": summary_columns(others), "rows": [summary_row(r) for r in others]}] \
        if others else []
    classified = [r for r in records if not is_classless(r)]
    if probes:
        tables.append({"title": "Few-shot learners (mean over draws ± their standard deviation)",
                       "columns": ["method", "shots", "draws", "score %", "± %", "metric"], "rows": summary(probes),
                       "note": "Each (method, shots) over its random draws of training images; zero-shot once."})
    zero_shot = figures.zero_shot(classified)
    if zero_shot:
        templates = list(dict.fromkeys(r["templates"] for r in zero_shot))
        rows, columns = paper_table(zero_shot, templates)
        sources = reported()["sources"]
        note = ("reported CLIP T11: the zero-shot top-1 the CLIP paper reports (" + sources["clip_table11"] + "). "
                "reported SigLIP T3: " + sources["siglip_table3"] + ". ours SET: this run's top-1 with that template "
                "set (its first ensembling mode). delta: ours with the first set − the paper's figure (CLIP's, "
                "else SigLIP's). reproduced SET: " + sources["reproduced"] + ", with the same template set. "
                "– : no published figure for this model and dataset.")
        tables.append({"title": "Beside the reported accuracies (top-1 %)", "columns": columns, "rows": rows,
                       "note": note})
    if len({r["dataset"] for r in records}) > 1:
        rows, columns = group_table(ensembles)
        tables.append({"title": "Means per group (main metric %)", "columns": columns, "rows": rows,
                       "note": "Each dataset's main metric (top-1; mean per-class recall for FGVC Aircraft, Pets, "
                               "Caltech-101 and Flowers-102; mAP for VOC 2007, as the CLIP paper's Table 9; the mean "
                               "recall@1 of both directions for retrieval, as DataComp), averaged "
                               "over the datasets of each group that ran (ran/all in the header), as DataComp "
                               "reports them."})
    aggregate = datacomp_aggregate(ensembles)
    if aggregate:
        tables.append({"title": "DataComp's aggregate (%)", "columns": aggregate[1], "rows": aggregate[0],
                       "note": "As DataComp's aggregate_scores.py: ImageNet 1k's top-1, the mean main metric of its "
                               "ImageNet distribution shifts (6), VTAB (13) and retrieval (3) tasks, and the Average "
                               "over all 38; each over the tasks that ran (tasks), so a row with fewer than 38 is a "
                               "partial mean, not DataComp's number; missing: the tasks that did not run."})
    beside, method_columns = methods_beside_plain(records)
    if beside:
        tables.append({"title": "Label-free methods beside the plain ensemble (main metric %)",
                       "columns": method_columns, "rows": beside,
                       "note": "plain: the template set's ensemble (its first ensembling mode); each method on the "
                               "same cached features. * transductive: the method read the unlabeled test images. "
                               "Sources and settings: each record's method_citation and method_params."})
    shifts = robustness([r for r in classified if not is_label_free(r)])
    if shifts:
        tables.append({"title": "ImageNet distribution shifts (top-1 %)", "columns": shifts["columns"],
                       "rows": shifts["rows"],
                       "note": "shifts mean: over " + ", ".join(shifts["shifts"]) + " (those every model ran). "
                               "effective robustness: the shifts mean above what the supervised models' line predicts "
                               "at the same ImageNet accuracy (a least-squares line in logit space, Taori et al., "
                               "2020); it needs two supervised runs (`pixprompt baseline` runs two ResNet-50s)."})
    return tables


def write_report(records: Sequence[Record], path: str | Path, figures_dir: str | Path | None = None) -> Path:
    """Write the HTML report to `path` and its figures as PNG to `figures_dir` (default: `<name>_figures/`)."""
    import jinja2

    if not records:
        raise UsageError("no result records to report")
    path = Path(path)
    folder = Path(figures_dir) if figures_dir else path.with_name(path.stem + "_figures")
    try:  # everything is made before anything is written: a record that breaks a figure leaves no file
        made = report_figures(records)
        environment = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined)
        template = environment.from_string(
            resources.files("pixprompt.resources").joinpath("report.html.j2").read_text(encoding="utf-8"))
        html = template.render(tables=results_tables(records), figures=made,
                               skipped=[r for r in records if r.get("skipped")],
                               cell=partial(format_cell, float_format=".2f", missing="–"))
    except (KeyError, TypeError, ValueError, AttributeError, IndexError) as error:
        raise UsageError(f"the records do not make a report ({type(error).__name__}: {first_line(error, 120)}): "
                         "give records pixprompt wrote; nothing was written") from None
    for figure in made:
        with atomic_path(folder / f"{figure.slug}.png") as tmp:
            tmp.write_bytes(figure.png)
    write_text_atomic(path, html)
    return path


"""Suite results as tables: each dataset's main metric per model, averages per group (as DataComp reports
them), and effective robustness on ImageNet's distribution shifts (Taori et al., 2020; CLIP paper, Fig. 13).

Pure functions of result records; one record stands for each (model, dataset): the first one run (the first
template set and ensembling mode).
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from pixprompt.data.catalog import catalog, suite
from pixprompt.models.info import model_label

Record = dict[str, Any]

#: ImageNet's distribution shifts, as the robustness table averages them.
SHIFTS = tuple(name for name in suite("imagenet-shifts") if name != "imagenet")


def score(record: Record) -> float:
    """A record's main metric (top-1 for records written before records named theirs)."""
    return record["score"] if "score" in record else record["top1"]


def scores_by_model(records: Sequence[Record]) -> dict[str, dict[str, float]]:
    """model label → dataset → main metric, the first record of each (model, dataset)."""
    table: dict[str, dict[str, float]] = {}
    for record in records:
        table.setdefault(model_label(record["model"], record.get("pretrained")), {}).setdefault(
            record["dataset"], score(record))
    return table


def percent(value: float | None) -> float | None:
    return None if value is None else round(100 * value, 2)


def mean(values: Sequence[float]) -> float | None:
    return sum(values) / len(values) if values else None


def suite_table(records: Sequence[Record], datasets: Sequence[str]) -> tuple[list[Record], list[str]]:
    """Rows = datasets (in suite order; those without results say so), columns = models' main metric in %."""
    by_model = scores_by_model(records)
    entries = catalog()
    rows = []
    for dataset in datasets:
        metric = entries[dataset].metric if dataset in entries else "top1"
        row: Record = {"dataset": dataset, "metric": metric}
        for model, scores in by_model.items():
            row[model] = percent(scores.get(dataset))
        rows.append(row)
    return rows, ["dataset", "metric", *by_model]


def group_table(records: Sequence[Record]) -> tuple[list[Record], list[str]]:
    """Rows = models; columns = the mean main metric (%) of each catalog group present (with how many of its
    datasets ran), the VTAB mean over its three groups' tasks, and the mean over every dataset run."""
    by_model = scores_by_model(records)
    entries = catalog()
    ran = {dataset for scores in by_model.values() for dataset in scores}
    groups: dict[str, list[str]] = {}
    for entry in entries.values():
        if entry.group:
            groups.setdefault(entry.group, []).append(entry.name)
    groups["VTAB"] = suite("vtab")
    columns, rows = ["model"], []
    present = {group: [d for d in members if d in ran] for group, members in groups.items()}
    headers = {group: f"{group} ({len(present[group])}/{len(groups[group])})" for group in groups if present[group]}
    for model, scores in by_model.items():
        row: Record = {"model": model}
        for group, header in headers.items():
            row[header] = percent(mean([scores[d] for d in present[group] if d in scores]))
        row["average"] = percent(mean(list(scores.values())))
        row["datasets"] = len(scores)
        rows.append(row)
    columns += [*headers.values(), "average", "datasets"]
    return rows, columns


#: DataComp's aggregate (its aggregate_scores.py): ImageNet 1k's score, the mean main metric of three groups of
#: tasks, and the Average over all 38 tasks; by the catalog group of each `datacomp/` task.
DATACOMP_MEASURES = {"ImageNet": "DataComp ImageNet", "ImageNet dist. shifts": "DataComp ImageNet dist. shifts",
                     "VTAB": "DataComp VTAB", "Retrieval": "DataComp retrieval"}


def datacomp_aggregate(records: Sequence[Record]) -> tuple[list[Record], list[str]] | None:
    """Per model that ran any DataComp task: DATACOMP_MEASURES and the Average in %, each over the tasks that ran,
    with how many of the 38 did (`tasks`) and which did not (`missing`, DataComp's names): a row with fewer than
    all is a partial mean, never DataComp's number; and what the tasks cost (`images` scored, `seconds` spent,
    each task's `elapsed_s` summed). None when no DataComp task ran."""
    tasks = [entry for entry in catalog().values() if "datacomp" in entry.suites]
    by_model = {model: scores for model, scores in scores_by_model(records).items()
                if any(task.name in scores for task in tasks)}
    if not by_model:
        return None
    names = {task.name for task in tasks}
    cost: dict[str, list[float]] = {}  # model → [images, seconds] over its DataComp records
    for record in records:
        if record["dataset"] in names:
            spent = cost.setdefault(model_label(record["model"], record.get("pretrained")), [0, 0.0])
            spent[0] += record.get("images") or 0
            spent[1] += record.get("elapsed_s") or 0.0
    rows = []
    for model, scores in by_model.items():
        row: Record = {"model": model}
        for measure, group in DATACOMP_MEASURES.items():
            row[measure] = percent(mean([scores[t.name] for t in tasks if t.group == group and t.name in scores]))
        row["Average"] = percent(mean([scores[t.name] for t in tasks if t.name in scores]))
        row["tasks"] = f"{sum(t.name in scores for t in tasks)}/{len(tasks)}"
        row["images"], row["seconds"] = int(cost[model][0]), round(cost[model][1], 1)
        row["missing"] = ", ".join(t.title.removeprefix("DataComp: ") for t in tasks if t.name not in scores) or None
        rows.append(row)
    return rows, ["model", *DATACOMP_MEASURES, "Average", "tasks", "images", "seconds", "missing"]


def _logit(p: float) -> float:
    p = min(max(p, 1e-6), 1 - 1e-6)
    return math.log(p / (1 - p))


def baseline_fit(points: Sequence[tuple[float, float]]) -> tuple[float, float] | None:
    """Slope and intercept of the least-squares line through (ImageNet, shift) accuracies in logit space, as
    Taori et al. fit ImageNet-trained models; None without two distinct ImageNet accuracies."""
    xs, ys = [_logit(x) for x, _ in points], [_logit(y) for _, y in points]
    if len(set(xs)) < 2:
        return None
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs)
    return slope, my - slope * mx


def predicted_shift(fit: tuple[float, float], imagenet: float) -> float:
    slope, intercept = fit
    return 1 / (1 + math.exp(-(slope * _logit(imagenet) + intercept)))


def robustness(records: Sequence[Record]) -> dict[str, Any] | None:
    """Per model: ImageNet top-1, each shift's, their mean over the shifts every model has, and the
    effective robustness against the supervised baselines' logit fit (when two or more ran: `baseline`
    runs ResNet-50 with two sets of weights). None unless some model has ImageNet and a shift."""
    by_model = scores_by_model(records)
    supervised = {model_label(r["model"], r.get("pretrained")) for r in records if not r.get("templates")}
    models = {m: s for m, s in by_model.items() if "imagenet" in s and any(shift in s for shift in SHIFTS)}
    if not models:
        return None
    shifts = [shift for shift in SHIFTS if all(shift in s for s in models.values())]
    if not shifts:
        return None
    points = {m: (s["imagenet"], sum(s[x] for x in shifts) / len(shifts)) for m, s in models.items()}
    fit = baseline_fit([points[m] for m in models if m in supervised])
    rows = []
    for model, scores in models.items():
        imagenet, shifted = points[model]
        rows.append({"model": model, "kind": "supervised" if model in supervised else "zero-shot",
                     "imagenet": percent(imagenet), **{shift: percent(scores[shift]) for shift in shifts},
                     "shifts mean": percent(shifted), "shifts − imagenet": percent(shifted - imagenet),
                     "effective robustness": percent(shifted - predicted_shift(fit, imagenet)) if fit else None})
    return {"rows": rows, "shifts": shifts, "fit": fit,
            "columns": ["model", "kind", "imagenet", *shifts, "shifts mean", "shifts − imagenet",
                        "effective robustness"]}

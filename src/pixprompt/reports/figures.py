"""The report's figures, each a small function of result records returning a matplotlib Figure.

In a notebook, show one with `IPython.display.Image(png_bytes(figure))`.
"""
from __future__ import annotations

import base64
import io
import textwrap
from collections import defaultdict
from collections.abc import Callable, Sequence
from typing import Any

# Figures are built with the object API, not pyplot: no GUI backend, no global state, safe in threads.
from matplotlib.figure import Figure
from matplotlib.ticker import FixedLocator, FuncFormatter, NullLocator

from pixprompt.models import info
from pixprompt.reports.tables import with_run_label

Record = dict[str, Any]


def _subplots(rows: int = 1, columns: int = 1, figsize: tuple[float, float] = (8, 4), squeeze: bool = True):
    figure = Figure(figsize=figsize)
    return figure, figure.subplots(rows, columns, squeeze=squeeze)


def model_label(record: Record) -> str:
    """The model as figures name it: a local folder by its folder name, then the pretrained tag (and the results
    file of a run kept apart from another of the same name, see `load_records`)."""
    return with_run_label(info.model_label(record["model"], record.get("pretrained")), record)


def first_per_template_set(records: Sequence[Record]) -> list[Record]:
    """One record per (model, dataset, template set): the first ensembling mode run (the default, embedding)."""
    first: dict[tuple, Record] = {}
    for record in records:
        first.setdefault((model_label(record), record["dataset"], record.get("templates")), record)
    return list(first.values())


def zero_shot(records: Sequence[Record]) -> list[Record]:
    """Records of the plain zero-shot ensemble: the supervised baseline's have no template set, a few-shot learner's
    record (`probe`) and a label-free method's name another method."""
    return [r for r in records if r.get("templates") and r.get("method", "plain") in ("plain", "zero-shot")]


def probes(records: Sequence[Record]) -> list[Record]:
    """Records of `pixprompt probe` (each learner's, and the zero-shot one it is compared with)."""
    return [r for r in records if r.get("method") and "shots" in r]


def best_per_model_and_dataset(records: Sequence[Record],
                               keep: Callable[[Record], bool] = lambda record: True) -> list[Record]:
    """For each (model, dataset), the kept record with the highest top-1, in order of first appearance."""
    best: dict[tuple[str, str], Record] = {}
    for record in records:
        key = (model_label(record), record["dataset"])
        if keep(record) and (key not in best or record["top1"] > best[key]["top1"]):
            best[key] = record
    return list(best.values())


def accuracy_by_template_set(records: Sequence[Record]) -> Figure:
    """Grouped bars: top-1 of each model (group) under each template set (bar), one panel per dataset."""
    records = first_per_template_set(records)
    modes = sorted({r["ensemble"] for r in records if r.get("ensemble")})
    datasets = sorted({r["dataset"] for r in records})
    figure, axes = _subplots(len(datasets), 1, figsize=(8, 3.2 * len(datasets)), squeeze=False)
    for axis, dataset in zip(axes[:, 0], datasets):
        rows = [r for r in records if r["dataset"] == dataset]
        models = list(dict.fromkeys(model_label(r) for r in rows))
        sets = list(dict.fromkeys(r.get("templates") or "supervised" for r in rows))
        width = 0.8 / len(sets)
        for s, name in enumerate(sets):
            values = {model_label(r): 100 * r["top1"] for r in rows if (r.get("templates") or "supervised") == name}
            positions = [m + s * width for m in range(len(models))]
            bars = axis.bar(positions, [values.get(m, 0) for m in models], width, label=name)
            axis.bar_label(bars, fmt="%.1f", fontsize=7)
        axis.set_xticks([m + 0.4 - width / 2 for m in range(len(models))], models, fontsize=8)
        axis.set_ylabel("top-1 (%)")
        axis.set_title(f"{dataset} (ensembling: {', '.join(modes) or 'none'})")
        # beside the bars, never over them (nor over their labels)
        axis.legend(fontsize=7, title="templates", title_fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1))
        axis.margins(y=0.12)
    figure.tight_layout()
    return figure


def accuracy_vs_parameters(records: Sequence[Record]) -> Figure:
    """Each model's best top-1 against its parameter count (log scale), one series per dataset."""
    figure, axis = _subplots(figsize=(7, 4.2))
    by_dataset: dict[str, list[Record]] = defaultdict(list)
    for record in best_per_model_and_dataset(records, lambda r: bool(r.get("params"))):
        by_dataset[record["dataset"]].append(record)
    for dataset, rows in sorted(by_dataset.items()):
        axis.scatter([r["params"] / 1e6 for r in rows], [100 * r["top1"] for r in rows], label=dataset)
        for r in rows:
            axis.annotate(model_label(r), (r["params"] / 1e6, 100 * r["top1"]), fontsize=7,
                          textcoords="offset points", xytext=(4, 3))
    axis.set_xscale("log")
    axis.set_xlabel("parameters (millions, log scale)")
    axis.set_ylabel("best top-1 (%)")
    axis.set_title("Accuracy against model size")
    axis.grid(alpha=0.3)
    if by_dataset:
        axis.legend(fontsize=8)
    figure.tight_layout()
    return figure


def per_template_accuracy(record: Record) -> Figure:
    """Each template's top-1 alone, sorted, with the ensemble's as a line: weak templates stand out."""
    items = sorted(record["per_template_accuracy"].items(), key=lambda item: item[1])
    figure, axis = _subplots(figsize=(8, 0.9 + 0.17 * len(items)))
    axis.barh(range(len(items)), [100 * v for _, v in items], color="tab:blue")
    axis.set_yticks(range(len(items)), [t for t, _ in items], fontsize=6)
    axis.axvline(100 * record["top1"], color="tab:red", label=f"ensemble ({record['ensemble']})")
    axis.set_xlabel("top-1 (%)")
    title = f"{model_label(record)} on {record['dataset']}: each {record['templates']} template alone"
    axis.set_title("\n".join(textwrap.wrap(title, 80)), fontsize=9)
    axis.legend(fontsize=7, loc="lower right")
    figure.tight_layout()
    return figure


def confusions(record: Record, classnames: Sequence[str] | None = None, max_matrix: int = 30) -> Figure:
    """Row-normalised confusion matrix for few classes; the most frequent confused pairs otherwise."""
    matrix = record.get("confusion_matrix")
    names = classnames or list(record.get("per_class_accuracy", {}))
    if matrix is not None and len(matrix) <= max_matrix and len(names) == len(matrix):
        figure, axis = _subplots(figsize=(max(5.0, 1.6 + 0.35 * len(matrix)), 1.6 + 0.35 * len(matrix)))
        rates = [[cell / max(1, sum(row)) for cell in row] for row in matrix]
        image = axis.imshow(rates, cmap="Blues", vmin=0, vmax=1)
        axis.set_xticks(range(len(names)), names, rotation=60, ha="right", fontsize=7)
        axis.set_yticks(range(len(names)), names, fontsize=7)
        axis.set_xlabel("predicted")
        axis.set_ylabel("true")
        figure.colorbar(image, ax=axis, fraction=0.04, label="share of the true class")
    else:
        pairs = record.get("top_confusions", [])[::-1]
        figure, axis = _subplots(figsize=(8, 1 + 0.3 * max(1, len(pairs))))
        axis.barh(range(len(pairs)), [p["count"] for p in pairs], color="tab:orange")
        axis.set_yticks(range(len(pairs)), [f"{p['true']} → {p['predicted']}" for p in pairs], fontsize=7)
        axis.set_xlabel("images")
    title = f"Confusions: {model_label(record)}, {record['templates']} on {record['dataset']}"
    axis.set_title("\n".join(textwrap.wrap(title, 48)), fontsize=9, loc="left")
    figure.tight_layout()
    return figure


def example_grid(record: Record) -> Figure:
    """Thumbnails with the true class and the model's top-3, names whole; wrong predictions framed in red. One
    row per class, so that no class runs into another's row."""
    examples = [e for e in record.get("examples", []) if e.get("thumbnail")]
    by_class: dict[str, list[dict]] = defaultdict(list)
    for example in examples:
        by_class[example["true"]].append(example)
    rows, columns = max(1, len(by_class)), max([1, *map(len, by_class.values())])
    figure, axes = _subplots(rows, columns, figsize=(2.6 * columns, 3.4 * rows), squeeze=False)
    for axis in axes.flat:
        axis.axis("off")
    for row, class_examples in zip(axes, by_class.values()):
        for axis, example in zip(row, class_examples):
            _show_example(axis, example)
    figure.suptitle(f"Examples: {model_label(record)}, {record['templates']} on {record['dataset']} "
                    "(green: top-1 right, red: wrong)", fontsize=10)
    figure.tight_layout(rect=(0, 0, 1, 1 - 0.35 / (3.4 * rows)))  # room for the title above the first row
    return figure


def _show_example(axis: Any, example: dict) -> None:
    """One thumbnail framed green (top-1 right) or red, its true class above and the top-3 below."""
    from PIL import Image

    data = base64.b64decode(example["thumbnail"].split(",", 1)[1])
    axis.imshow(Image.open(io.BytesIO(data)))
    colour = "tab:green" if example["correct"] else "tab:red"
    for spine in axis.spines.values():
        spine.set_visible(True)
        spine.set_color(colour)
        spine.set_linewidth(3)
    axis.set_xticks([])
    axis.set_yticks([])
    axis.axis("on")
    axis.set_title(f"true: {example['true']}", fontsize=8.5, fontweight="bold", loc="left")
    guesses = "\n".join(f"{rank}. {t['label']} {100 * t['probability']:.0f}%"
                        for rank, t in enumerate(example["top"], start=1))
    axis.set_xlabel(guesses, fontsize=8, color=colour, loc="left")


def robustness_scatter(shifts: dict[str, Any]) -> Figure:
    """The CLIP paper's robustness picture (its Fig. 13): ImageNet top-1 on x, the mean over the shifts on y, both
    on logit axes; y = x (a model as robust as on ImageNet); the supervised baselines' logit fit, dashed."""
    import numpy as np

    from pixprompt.evaluation.suites import predicted_shift

    figure, axes = _subplots(figsize=(6, 5))
    for kind, marker in (("zero-shot", "o"), ("supervised", "s")):
        rows = [r for r in shifts["rows"] if r["kind"] == kind]
        if rows:
            axes.scatter([r["imagenet"] / 100 for r in rows], [r["shifts mean"] / 100 for r in rows], marker=marker,
                         s=40, label=kind, zorder=3)
            for row in rows:
                axes.annotate(textwrap.shorten(row["model"], 28), (row["imagenet"] / 100, row["shifts mean"] / 100),
                              fontsize=7, xytext=(4, 4), textcoords="offset points")
    values = [r[c] / 100 for r in shifts["rows"] for c in ("imagenet", "shifts mean")]
    low, high = max(min(values) * 0.8, 0.01), min(max(values) * 1.1 + 0.02, 0.99)
    line = np.linspace(low, high, 50)
    axes.plot(line, line, color="grey", linestyle=":", label="y = x")
    if shifts["fit"]:
        axes.plot(line, [predicted_shift(shifts["fit"], x) for x in line], color="C1", linestyle="--",
                  label="supervised fit (logit)")
    ticks = [t for t in (0.02, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.98) if low <= t <= high]
    axes.set_xscale("logit")
    axes.set_yscale("logit")
    for axis in (axes.xaxis, axes.yaxis):
        axis.set_major_locator(FixedLocator(ticks))
        axis.set_major_formatter(FuncFormatter(lambda value, _: f"{100 * value:g}%"))
        axis.set_minor_locator(NullLocator())
    axes.set_xlim(low, high)
    axes.set_ylim(low, high)
    axes.set_xlabel("ImageNet top-1 (logit scale)")
    axes.set_ylabel(f"mean top-1 over the {len(shifts['shifts'])} shifts")
    axes.set_title(textwrap.fill(", ".join(shifts["shifts"]), 60), fontsize=8)
    axes.legend(fontsize=8, loc="upper left")
    figure.tight_layout()
    return figure


def few_shot_curve(rows: Sequence[Record], sentence: str | None = None) -> Figure:
    """The CLIP paper's few-shot picture: each method's mean score against shots per class (log scale, ± the
    spread over draws), zero-shot as a horizontal line; `sentence` (what the curve says) as the title."""
    figure, axes = _subplots(figsize=(7, 4.5))
    numeric = [r for r in rows if isinstance(r["shots"], int) and r["shots"] > 0]
    for method in dict.fromkeys(r["method"] for r in numeric):
        points = sorted((r for r in numeric if r["method"] == method), key=lambda r: r["shots"])
        axes.errorbar([r["shots"] for r in points], [r["score %"] for r in points], yerr=[r["± %"] for r in points],
                      marker="o", capsize=3, label=method, linestyle="--" if method.startswith("resnet") else "-")
    zero = next((r for r in rows if r["method"] == "zero-shot"), None)
    if zero:
        axes.axhline(zero["score %"], color="black", linestyle=":", label=f"zero-shot ({zero['score %']:.1f}%)")
    shots = sorted({r["shots"] for r in numeric})
    axes.set_xscale("log", base=2)
    axes.set_xticks(shots, [str(s) for s in shots])
    axes.set_xlabel("training images per class")
    axes.set_ylabel(f"{rows[0]['metric'] if rows else 'score'} (%)")
    if sentence:
        axes.set_title(textwrap.fill(sentence, 80), fontsize=9)
    axes.legend(fontsize=8)
    figure.tight_layout()
    return figure


def reliability_diagram(record: Record) -> Figure:
    """Accuracy against confidence per bin of top-1 probability (bars; the diagonal is perfect calibration), with
    how many images fall in each bin below, and the record's ECE."""
    bins = record["reliability"]
    figure, (axes, counts) = _subplots(2, 1, figsize=(5, 5.5))
    figure.subplots_adjust(hspace=0.05)
    width = bins[0]["high"] - bins[0]["low"]
    centres = [(b["low"] + b["high"]) / 2 for b in bins]
    axes.bar(centres, [b["accuracy"] or 0 for b in bins], width=width * 0.95, label="accuracy", color="C0")
    axes.bar(centres, [(b["confidence"] or 0) - (b["accuracy"] or 0) if b["count"] else 0 for b in bins],
             bottom=[b["accuracy"] or 0 for b in bins], width=width * 0.95, color="C3", alpha=0.35, label="gap")
    axes.plot([0, 1], [0, 1], color="grey", linestyle=":")
    axes.set_xlim(0, 1)
    axes.set_ylim(0, 1)
    axes.set_ylabel("accuracy")
    axes.set_xticklabels([])
    temperature = f", T = {record['temperature']:.3g}" if record.get("temperature") else ""
    axes.set_title(f"ECE {100 * record['ece']:.2f}%{temperature}", fontsize=9)
    axes.legend(fontsize=8, loc="upper left")
    counts.bar(centres, [b["count"] for b in bins], width=width * 0.95, color="grey")
    counts.set_xlim(0, 1)
    counts.set_xlabel("top-1 probability")
    counts.set_ylabel("images")
    return figure


def selection_path(record: Record) -> Figure:
    """Forward selection's path: the ensemble's accuracy on the selection set after each added template."""
    steps = record["selection_path"]
    figure, axes = _subplots(figsize=(8, 3 + 0.18 * len(steps)))
    axes.plot(range(1, len(steps) + 1), [100 * s["accuracy"] for s in steps], marker="o")
    for number, step in enumerate(steps, start=1):
        axes.annotate(textwrap.shorten(step["template"], 45), (number, 100 * step["accuracy"]), fontsize=7,
                      xytext=(4, -10), textcoords="offset points")
    whole = next((row for row in record.get("comparison", []) if row["templates"] != "chosen"), None)
    if whole:
        axes.axhline(whole["selection set %"], color="grey", linestyle=":", label=f"{whole['templates']}")
        axes.legend(fontsize=8, loc="lower right")
    axes.set_xticks(range(1, len(steps) + 1))
    axes.set_xlabel("templates chosen")
    axes.set_ylabel(f"top-1 on {record['dataset']} (%)")
    figure.tight_layout()
    return figure


def png_bytes(figure: Figure) -> bytes:
    """The figure as PNG."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110, bbox_inches="tight")  # no label or annotation clipped
    return buffer.getvalue()

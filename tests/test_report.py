"""The HTML report: one self-contained file, its figures, the tables a reader meets."""
from __future__ import annotations

import json

from pixprompt.cli import main


# -- report --------------------------------------------------------------------------------------------------
def test_eval_report_is_one_self_contained_file_with_png_figures(tiny_model_dirs, colours, tmp_path, capsys):
    results, report = tmp_path / "results.json", tmp_path / "report.html"
    code = main(["eval", "--model", str(tiny_model_dirs["open_clip_clip"]), "--device", "cpu", "--workers", "0",
                 "--dataset", f"folder:{colours}", "--templates", "raw,clip7", "--no-cache", "--quiet",
                 "--output", str(results), "--report", str(report)])
    assert code == 0
    html = report.read_text()
    pngs = sorted(p.name for p in (tmp_path / "report_figures").glob("*.png"))
    assert pngs == ["accuracy-by-template-set.png", "accuracy-vs-parameters.png", "confusions-0.png",
                    "examples-0.png", "per-template-0.png", "reliability-0.png"]
    assert html.count('src="data:image/png;base64,') == len(pngs)
    assert "http://" not in html and "https://" not in html and 'src="/' not in html  # nothing to fetch
    record = json.loads(results.read_text())[-1]
    assert f"{100 * record['top1']:.2f}" in html and "Beside the reported accuracies" in html
    assert len(record["examples"]) == 3 * 4 and {e["true"] for e in record["examples"]} == {"red", "green", "blue"}
    assert all(e["thumbnail"].startswith("data:image/jpeg;base64,") for e in record["examples"])

    again = tmp_path / "again.html"
    assert main(["report", str(results), "-o", str(again), "--figures", str(tmp_path / "figs")]) == 0
    assert again.read_text().count("data:image/png;base64,") == len(pngs)
    assert '<div class="scroll"><table>' in html  # a wide table scrolls within the page's margin


def test_report_figures_keep_their_parts_apart(tiny_model_dirs, colours, tmp_path, capsys):
    """Examples one row per class; the template-set legend beside the bars, not over them."""
    from pixprompt.reports import figures

    results = tmp_path / "results.json"
    assert main(["eval", "--model", str(tiny_model_dirs["open_clip_clip"]), "--device", "cpu", "--workers", "0",
                 "--dataset", f"folder:{colours}", "--templates", "raw,clip7", "--no-cache", "--quiet",
                 "--examples", "3", "--output", str(results)]) == 0
    records = json.loads(results.read_text())
    grid = figures.example_grid(records[0])
    rows = {}
    for axis in grid.axes:
        if axis.get_title(loc="left"):
            rows.setdefault(round(axis.get_position().y0, 3), set()).add(axis.get_title(loc="left"))
    assert len(rows) == 3 and all(len(titles) == 1 for titles in rows.values())  # one class per row
    bars = figures.accuracy_by_template_set(records)
    bars.canvas.draw()
    (axis,) = bars.axes
    legend = axis.get_legend().get_window_extent()
    assert legend.x0 >= axis.get_window_extent().x1  # right of the plotting area


def test_report_refuses_files_that_are_not_results(tmp_path, capsys):
    (tmp_path / "notes.json").write_text('{"hello": 1}')
    assert main(["report", str(tmp_path / "notes.json"), "-o", str(tmp_path / "r.html")]) == 2
    err = capsys.readouterr().err
    assert "holds no pixprompt result records" in err and len(err.strip().splitlines()) == 1


def test_many_classes_show_top_confused_pairs_instead_of_a_matrix():
    from pixprompt.reports import figures

    names = [f"class {i}" for i in range(40)]
    record = {"model": "m", "dataset": "d", "templates": "raw", "per_class_accuracy": dict.fromkeys(names, 0.5),
              "top_confusions": [{"true": "class 1", "predicted": "class 2", "count": 7}]}
    figure = figures.confusions(record)
    assert [label.get_text() for label in figure.axes[0].get_yticklabels()] == ["class 1 → class 2"]


def test_report_reads_without_stumbling(tiny_model_dirs, colours, tmp_path, capsys):
    """Local models by folder name, the ensembling mode named, the papers' table explained and cited."""
    results, report = tmp_path / "results.json", tmp_path / "report.html"
    assert main(["eval", "--model", str(tiny_model_dirs["open_clip_clip"]), "--device", "cpu", "--workers", "0",
                 "--dataset", f"folder:{colours}", "--templates", "raw,clip7", "--ensemble", "vote,embedding",
                 "--no-cache", "--quiet", "--output", str(results), "--report", str(report)]) == 0
    html = report.read_text()
    assert "local-dir:" not in html and str(tiny_model_dirs["open_clip_clip"]) not in html
    assert "Radford et al." in html and "delta: ours with the first set" in html
    records = json.loads(results.read_text())
    from pixprompt.evaluation.grid import paper_table

    (row,), _ = paper_table(records, ["raw", "clip7"])
    vote = next(r for r in records if r["templates"] == "clip7" and r["ensemble"] == "vote")
    assert row["ours clip7"] == round(100 * vote["top1"], 2)  # the first mode given, not whichever came last


def test_imagenettes_reported_figure_is_not_filed_under_standard():
    from pixprompt.reports.reference import reported_for

    figures = reported_for("openai/clip-vit-base-patch32", None, "imagenette")
    assert "standard" not in figures and figures["a photo of a {}"] == 98.7

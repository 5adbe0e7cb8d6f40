"""The label-free methods through evaluate, eval, classify, bench and the report: the records, tables and refusals."""
from __future__ import annotations

import json

import pytest
import torch

from cli_runner import eval_args, model_args, run_cli
from pixprompt.data.datasets import load_dataset
from pixprompt.errors import UsageError
from pixprompt.evaluation import evaluate
from pixprompt.evaluation.label_free import METHODS, method_table
from pixprompt.methods import autoclip, zpe
from pixprompt.prompts import resolve_templates

ALL = ["plain", *METHODS]


@pytest.fixture()
def hierarchy(tmp_path):
    path = tmp_path / "hierarchy.json"
    path.write_text(json.dumps({"red": ["crimson", "scarlet"], "green": ["lime", "olive"], "blue": ["navy"]}))
    return path


def test_every_method_gives_a_record_beside_plain_with_its_parameters(loaded_models, colours, tmp_path, hierarchy):
    model = loaded_models["open_clip_clip"]
    dataset = load_dataset(f"folder:{colours}")
    (prompt_set,) = resolve_templates("clip7")
    records = evaluate(model, dataset, [prompt_set], cache_root=tmp_path / "cache", workers=0, methods=ALL,
                       hierarchy=json.loads(hierarchy.read_text()))
    by_method = {r["method"]: r for r in records}
    assert sorted(by_method) == sorted(ALL) and len(records) == len(ALL)
    for name, method in METHODS.items():
        record = by_method[name]
        assert record["transductive"] is method.transductive and record["method_params"]
        assert record["templates"] == "clip7" and 0 <= record["top1"] <= 1 and record["score"] == record["top1"]
        assert ("ece" in record) is method.logits
    assert by_method["tda"]["method_params"]["stream_seed"] == 1
    assert len(by_method["zpe"]["method_params"]["template_weights"]) == 7
    assert by_method["plain"]["ensemble"] == "embedding" and by_method["zpe"]["ensemble"] == "logits"


def test_zpe_and_autoclip_records_equal_the_methods_on_the_cached_features(loaded_models, colours, tmp_path):
    from pixprompt.evaluation.scoring import text_classifier
    from pixprompt.features.cache import extract_features

    model = loaded_models["open_clip_clip"]
    dataset = load_dataset(f"folder:{colours}")
    (prompt_set,) = resolve_templates("clip7")
    records = evaluate(model, dataset, [prompt_set], cache_root=tmp_path, workers=0, methods=["zpe", "autoclip"])
    features = extract_features(model, dataset, tmp_path, workers=0)
    classifier = text_classifier(model, dataset.classnames, prompt_set, tmp_path)
    by_template = classifier.by_template()
    logits = [classifier.scale_logits(features.features @ by_template[:, t].T) for t in range(7)]
    weights = zpe.zpe_weights(logits)
    zpe_top1 = (torch.einsum("t,tnc->nc", weights.float(), torch.stack(logits)).argmax(1) == features.labels)
    auto = autoclip.autoclip_similarities(torch.einsum("nd,ctd->nct", features.features, by_template))
    by_method = {r["method"]: r for r in records}
    assert by_method["zpe"]["top1"] == pytest.approx(float(zpe_top1.float().mean()))
    assert by_method["autoclip"]["top1"] == pytest.approx(float((auto.argmax(1) == features.labels).float().mean()))


def test_eval_cli_shows_methods_beside_plain(capsys, tiny_model_dirs, colours, hierarchy):
    code, out, _ = run_cli(capsys, *eval_args(tiny_model_dirs["open_clip_clip"], colours, "--method",
                                              "plain,zpe,chils", "--templates", "clip7", "--hierarchy", hierarchy))
    assert code == 0
    records = json.loads(out)
    assert [r["method"] for r in records] == ["plain", "zpe", "chils"]
    assert all(r["method_seconds"] >= 0 for r in records[1:])
    code, out, _ = run_cli(capsys, "eval", *model_args(tiny_model_dirs["open_clip_clip"]), "--dataset",
                           f"folder:{colours}", "--templates", "clip7", "--method", "plain,zpe")
    assert code == 0 and "method" in out and "zpe*" in out and "plain" in out


@pytest.mark.parametrize(("extra", "message"), [
    (["--method", "zzz"], "unknown method 'zzz'"),
    (["--method", "chils"], "needs a class hierarchy"),
])
def test_bad_methods_are_refused_before_the_model_loads(capsys, colours, extra, message):
    code, _, err = run_cli(capsys, *eval_args("/nonexistent/model", colours, *extra))
    assert code == 2 and message in err


def test_template_weighting_methods_refuse_per_class_descriptions(capsys, tiny_model_dirs, colours, tmp_path):
    cupl = tmp_path / "cupl.json"
    cupl.write_text(json.dumps({name: [f"a {name} thing"] for name in ("red", "green", "blue")}))
    code, _, err = run_cli(capsys, *eval_args(tiny_model_dirs["open_clip_clip"], colours, "--descriptions", cupl,
                                              "--method", "autoclip"))
    assert code == 2 and "weights templates" in err


def test_eval_with_waffle_descriptors_and_a_dclip_file(capsys, tiny_model_dirs, colours, tmp_path):
    dclip = tmp_path / "descriptors.json"
    dclip.write_text(json.dumps({name: ["bright", "has a colour"] for name in ("red", "green", "blue")}))
    for spec, name, prompts in ((f"dclip:{dclip}", "dclip:descriptors", 6), ("waffle:3:1", "waffle3-seed1", 18)):
        code, out, _ = run_cli(capsys, "eval", *model_args(tiny_model_dirs["open_clip_clip"]), "--dataset",
                               f"folder:{colours}", "--descriptions", spec, "--ensemble", "logits", "--json")
        (record,) = json.loads(out)
        assert code == 0 and record["templates"] == name and record["num_prompts"] == prompts


def test_classify_with_a_method(capsys, tiny_model_dirs, colours, hierarchy):
    images = sorted(str(p) for p in colours.rglob("*") if p.is_file())
    for method in ("autoclip", "zlap", "chils"):
        code, out, _ = run_cli(capsys, "classify", *images, *model_args(tiny_model_dirs["open_clip_clip"]),
                               "--labels", "red,green,blue", "--templates", "clip7", "--method", method,
                               "--hierarchy", hierarchy, "--json", "--top-k", "3")
        rows = json.loads(out)
        assert code == 0 and len(rows) == len(images)
        for row in rows:
            probabilities = [top["probability"] for top in row["top"]]
            assert probabilities == sorted(probabilities, reverse=True)
            assert sum(probabilities) == pytest.approx(1, abs=1e-5)
    code, _, err = run_cli(capsys, "classify", images[0], *model_args(tiny_model_dirs["open_clip_clip"]),
                           "--labels", "red,green", "--method", "zpe,tda")
    assert code == 2 and "single --method" in err


def test_bench_config_runs_methods_and_prints_them_beside_plain(capsys, tiny_model_dirs, colours, tmp_path):
    config = tmp_path / "grid.yaml"
    config.write_text(f"models: [{{model: {tiny_model_dirs['open_clip_clip']}}}]\n"
                      f"datasets: [{{dataset: 'folder:{colours}'}}]\ntemplates: [clip7]\n"
                      "method: [plain, zpe, tda]\ndescriptions: waffle:2\n")
    code, out, _ = run_cli(capsys, "bench", "--config", config, "--device", "cpu", "--workers", "0",
                           "--output", tmp_path / "bench.json")
    assert code == 0 and "label-free methods beside plain" in out
    assert "zpe* %" in out and "tda* %" in out
    records = json.loads((tmp_path / "bench.json").read_text())
    assert {(r["templates"], r["method"]) for r in records} == {
        (t, m) for t in ("clip7", "waffle2-seed0") for m in ("plain", "zpe", "tda")}


def test_report_shows_the_methods_table(loaded_models, colours, tmp_path):
    from pixprompt.reports.html import results_tables

    model = loaded_models["open_clip_clip"]
    records = evaluate(model, load_dataset(f"folder:{colours}"), resolve_templates("clip7"), cache_root=tmp_path,
                       workers=0, methods=["plain", "autoclip", "zlap"])
    titles = {table["title"]: table for table in results_tables(records)}
    beside = titles["Label-free methods beside the plain ensemble (main metric %)"]
    assert beside["columns"][-3:] == ["plain %", "autoclip %", "zlap* %"]
    assert [r["method"] for r in titles["Results"]["rows"]] == ["plain", "autoclip", "zlap*"]


def test_method_table_names_what_each_needs_and_its_source():
    rows = {row["method"]: row for row in method_table()}
    assert set(rows) == set(METHODS)
    assert rows["chils"]["needs"].startswith("a class hierarchy") and rows["zlap"]["transductive"]
    assert all(row["source"] and row["published gain"] for row in rows.values())


def test_load_hierarchy_refuses_malformed_files(tmp_path):
    from pixprompt.evaluation.label_free import load_hierarchy

    path = tmp_path / "h.json"
    for content in ("[]", '{"cat": []}', '{"cat": [1]}', '{"cat": "tabby"}'):
        path.write_text(content)
        with pytest.raises(UsageError, match="subclass"):
            load_hierarchy(path)


def test_methods_are_refused_on_datasets_without_classes(loaded_models, tmp_path):
    from fake_datasets import write_winogavil_table
    from pixprompt.data.datasets import DatasetOptions

    write_winogavil_table(tmp_path / "winogavil")
    dataset = load_dataset("datacomp/misc/winogavil", DatasetOptions(str(tmp_path / "winogavil")))
    with pytest.raises(UsageError, match="no classes to score"):
        evaluate(loaded_models["open_clip_clip"], dataset, [], cache_root=None, methods=["plain", "zpe"])

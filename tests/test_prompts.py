"""Template sets, label checks, ensembling modes against direct computations, classifier files."""
from __future__ import annotations

import json

import pytest
import torch

from pixprompt.errors import UsageError
from pixprompt.prompts import (
    TEMPLATE_SETS,
    PromptSet,
    ZeroShotClassifier,
    build_classifier,
    load_descriptions,
    parse_labels,
    resolve_templates,
)
from pixprompt.prompts.templates import validate_template


def test_named_template_sets_have_the_published_sizes():
    assert len(TEMPLATE_SETS["clip80"]) == 80 and len(TEMPLATE_SETS["clip7"]) == 7
    assert len(TEMPLATE_SETS["cifar10"]) == 18 and TEMPLATE_SETS["raw"] == ("{}",)
    assert "itap of a {}." in TEMPLATE_SETS["clip7"]
    assert [s.name for s in resolve_templates("raw, standard,clip80")] == ["raw", "standard", "clip80"]


@pytest.mark.parametrize("template", ["a photo", "a {0} photo", "a {c}", "a {} {", "a }{}", "a {!r}"])
def test_templates_without_a_bare_placeholder_are_refused(template):
    with pytest.raises(UsageError, match="template"):
        validate_template(template)


def test_template_files_text_and_json(tmp_path):
    text = tmp_path / "mine.txt"
    text.write_text("# my templates\na sketch of a {}.\n\nart of the {}.\n")
    listed = tmp_path / "mine.json"
    listed.write_text(json.dumps(["a {} in the wild."]))
    sets = resolve_templates(f"{text},{listed}")
    assert sets[0].templates == ("a sketch of a {}.", "art of the {}.")
    assert sets[1].templates == ("a {} in the wild.",)
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n")
    with pytest.raises(UsageError, match="holds no templates"):
        resolve_templates(str(empty))
    with pytest.raises(UsageError, match="unknown template set"):
        resolve_templates("nonexistent")


def test_labels_are_checked():
    assert parse_labels(" cat, dog ,car") == ["cat", "dog", "car"]
    with pytest.raises(UsageError, match="duplicate class names: 'cat'"):
        parse_labels("cat,dog,cat")
    with pytest.raises(UsageError, match="empty or only whitespace"):
        parse_labels("cat,  ,dog")
    with pytest.raises(UsageError, match="no class names"):
        parse_labels(None)


def test_label_file_must_be_utf8(tmp_path):
    good = tmp_path / "labels.txt"
    good.write_text("Ünïcode café\n{braces}\n\"quoted\"\n", encoding="utf-8")
    assert parse_labels(labels_file=str(good)) == ["Ünïcode café", "{braces}", '"quoted"']
    bad = tmp_path / "latin1.txt"
    bad.write_bytes("café\n".encode("latin-1"))
    with pytest.raises(UsageError, match="not UTF-8"):
        parse_labels(labels_file=str(bad))


def test_class_names_with_braces_and_unicode_fill_templates_literally(loaded_models):
    names = ["{}", "naïve {0}", "\"quoted\" thing"]
    prompt_set = PromptSet("t", ("a photo of a {}.",))
    assert prompt_set.prompts_for(names)[1] == ["a photo of a naïve {0}."]
    classifier = build_classifier(loaded_models["open_clip_clip"], names, prompt_set)
    assert classifier.weights.shape[0] == 3


def test_over_long_prompts_are_truncated_with_one_warning(loaded_models, caplog):
    model = loaded_models["open_clip_clip"]
    long_name = " ".join(["very"] * 100) + " long class"
    with caplog.at_level("WARNING"):
        embeddings = model.encode_text([f"a photo of a {long_name}.", "short", f"{long_name}!"])
    warnings = [r for r in caplog.records if "truncated" in r.getMessage()]
    assert len(warnings) == 1 and "2 prompt(s)" in warnings[0].getMessage()
    assert embeddings.shape[0] == 3


def _random_classifier(classes=4, templates=3, dim=8, bias=0.0) -> ZeroShotClassifier:
    generator = torch.Generator().manual_seed(0)
    embeddings = torch.nn.functional.normalize(torch.randn(classes * templates, dim, generator=generator), dim=-1)
    return ZeroShotClassifier(
        classnames=[f"c{i}" for i in range(classes)],
        prompt_set=PromptSet("t", tuple(f"t{j} {{}}" for j in range(templates))),
        prompt_embeddings=embeddings, prompt_class=torch.arange(classes).repeat_interleave(templates),
        model_identity="test", logit_scale=100.0, logit_bias=bias)


def test_ensembling_modes_equal_direct_computation():
    classifier = _random_classifier(bias=-3.0)
    images = torch.nn.functional.normalize(torch.randn(20, 8, generator=torch.Generator().manual_seed(1)), dim=-1)
    per_class = classifier.prompt_embeddings.view(4, 3, 8)

    weights = torch.stack([torch.nn.functional.normalize(per_class[c].mean(0), dim=0) for c in range(4)])
    expected_embedding = 100.0 * images @ weights.T - 3.0
    assert torch.allclose(classifier.scores(images, "embedding"), expected_embedding, atol=1e-5)

    per_template = torch.stack([100.0 * images @ per_class[:, t].T - 3.0 for t in range(3)])  # (T, N, C)
    assert torch.allclose(classifier.scores(images, "logits"), per_template.mean(0), atol=1e-4)

    votes = classifier.scores(images, "vote")
    for n in range(20):
        counts = torch.bincount(per_template[:, n].argmax(dim=1), minlength=4)
        leaders = (counts == counts.max()).nonzero().flatten()
        mean_logit = per_template[:, n].mean(0)
        expected = leaders[mean_logit[leaders].argmax()]
        assert votes[n].argmax() == expected
        assert torch.equal(votes[n].floor(), counts.float())


def test_vote_needs_shared_templates(tmp_path):
    path = tmp_path / "cupl.json"
    path.write_text(json.dumps({"cat": ["a small furry pet"], "dog": ["a loyal animal", "barks"]}))
    descriptions = load_descriptions(path)
    assert descriptions.prompts_for(["dog", "cat"]) == [["a loyal animal", "barks"], ["a small furry pet"]]
    with pytest.raises(UsageError, match="none for 1 class"):
        descriptions.prompts_for(["cat", "bird"])
    classifier = _random_classifier()
    classifier.prompt_set = descriptions
    with pytest.raises(UsageError, match="vote"):
        classifier.scores(torch.randn(2, 8), "vote")
    with pytest.raises(UsageError, match="unknown ensembling mode"):
        classifier.scores(torch.randn(2, 8), "median")


def test_classifier_file_round_trip(tmp_path, loaded_models):
    model = loaded_models["open_clip_siglip"]
    (clip7,) = resolve_templates("clip7")
    classifier = build_classifier(model, ["cat", "dog", "car"], clip7)
    path = tmp_path / "classifier.safetensors"
    classifier.save(path)
    loaded = ZeroShotClassifier.load(path)
    assert loaded.classnames == classifier.classnames and loaded.templates == clip7.templates
    assert loaded.model_identity == model.info.identity and loaded.scoring == "sigmoid"
    assert torch.equal(loaded.weights, classifier.weights)
    assert loaded.logit_bias == classifier.logit_bias
    (tmp_path / "junk.safetensors").write_bytes(b"not a classifier")
    with pytest.raises(UsageError, match="not a pixprompt classifier"):
        ZeroShotClassifier.load(tmp_path / "junk.safetensors")


def test_shipped_openai_templates_equal_open_clips():
    from open_clip.zero_shot_metadata import OPENAI_IMAGENET_TEMPLATES, SIMPLE_IMAGENET_TEMPLATES

    from pixprompt.prompts.templates import TEMPLATE_SETS

    assert TEMPLATE_SETS["clip80"] == tuple(t("{}") for t in OPENAI_IMAGENET_TEMPLATES)
    assert TEMPLATE_SETS["clip7"] == tuple(t("{}") for t in SIMPLE_IMAGENET_TEMPLATES)


# -- the CLIP paper's per-dataset class names and templates (openai/CLIP data/prompts.md) ---------------------
#: Facts read in data/prompts.md: number of classes and templates per dataset.
PROMPTS_MD_COUNTS = {
    "birdsnap": (500, 1), "cifar10": (10, 18), "cifar100": (100, 18), "clevr_count": (8, 1), "caltech101": (102, 34),
    "country211": (211, 5), "dtd": (47, 8), "eurosat": (10, 3), "fgvc_aircraft": (100, 2), "fer2013": (7, 6),
    "flowers102": (102, 1), "food101": (101, 1), "gtsrb": (43, 3), "kitti_distance": (4, 1), "mnist": (10, 1),
    "oxford_pets": (37, 1), "voc2007": (20, 1), "pcam": (2, 1), "resisc45": (45, 18), "rendered_sst2": (2, 1),
    "stl10": (10, 2), "sun397": (397, 2), "stanford_cars": (196, 8),
}


def test_clip_paper_names_and_templates_match_prompts_md():
    from pixprompt.prompts.templates import CLIP_PAPER, TEMPLATE_SETS, paper_classnames

    assert {name: (len(e["classes"]), len(e["templates"])) for name, e in CLIP_PAPER.items()} == PROMPTS_MD_COUNTS
    # exact strings, quirks included
    assert paper_classnames("caltech101")[30] == "head of a  crocodile"  # two spaces, as published
    assert paper_classnames("country211")[37] == "Cote d'Ivoire"
    assert paper_classnames("fer2013")[5] == "surprised" and CLIP_PAPER["fer2013"]["classes"][5] == [
        "surprised", "shocked", "spooked"]
    assert TEMPLATE_SETS["gtsrb"][0] == 'a zoomed in photo of a "{}" traffic sign.'
    assert TEMPLATE_SETS["mnist"] == ('a photo of the number: "{}".',)
    assert TEMPLATE_SETS["stanford_cars"][3] == "i love my {}!"
    assert paper_classnames("stanford_cars")[-1] == "smart fortwo Convertible 2012"
    assert paper_classnames("sun397")[0] == "abbey" and paper_classnames("sun397")[-1] == "youth hostel"
    assert paper_classnames("birdsnap")[0] == "Acadian Flycatcher" and paper_classnames("birdsnap")[-1] == \
        "Zone tailed Hawk"
    for name in CLIP_PAPER:  # every template is a valid one-slot template
        assert all(validate_template(t) for t in TEMPLATE_SETS[name])


def test_clip_paper_lists_equal_clip_benchmarks_where_it_took_them_from_prompts_md():
    """CLIP_benchmark copied some lists from prompts.md and reordered or reworded others for its loaders; where
    it copied them, they must be equal, string for string."""
    from pathlib import Path

    import clip_benchmark.datasets

    from pixprompt.prompts.templates import TEMPLATE_SETS, paper_classnames

    folder = Path(clip_benchmark.datasets.__file__).parent
    names = json.loads((folder / "en_classnames.json").read_text())
    templates = json.loads((folder / "en_zeroshot_classification_templates.json").read_text())
    for ours, theirs in {"caltech101": "caltech101", "country211": "country211", "flowers102": "flowers",
                         "gtsrb": "gtsrb", "mnist": "mnist", "pcam": "pcam",
                         "kitti_distance": "kitti_closest_vehicle_distance"}.items():
        assert paper_classnames(ours) == names[theirs], ours
    for ours, theirs in {"cifar10": "cifar10", "cifar100": "cifar100", "caltech101": "caltech101",
                         "country211": "country211", "dtd": "dtd", "eurosat": "eurosat", "fer2013": "fer2013",
                         "fgvc_aircraft": "fgvc_aircraft", "flowers102": "flowers", "food101": "food101",
                         "gtsrb": "gtsrb", "mnist": "mnist", "oxford_pets": "pets", "rendered_sst2": "renderedsst2",
                         "stl10": "stl10", "sun397": "sun397", "stanford_cars": "cars", "voc2007": "voc2007"}.items():
        assert [t.replace("{}", "{c}") for t in TEMPLATE_SETS[ours]] == templates[theirs], ours

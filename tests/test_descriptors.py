"""WaffleCLIP's random descriptors and DCLIP's descriptor files, as the authors' code writes them."""
from __future__ import annotations

import json

import numpy as np
import pytest

from pixprompt.errors import UsageError
from pixprompt.prompts.descriptors import (
    descriptor_sentence,
    load_dclip_descriptors,
    parse_waffle_spec,
    resolve_descriptions,
    waffle_prompt_set,
    waffle_vocabulary,
)

CLASSES = ["tench", "goldfish", "great white shark", "tiger shark", "electric ray", "Komodo dragon", "hen"]


def waffle_reference(keys, count, seed, words, characters):
    """The `waffle` branch of WaffleCLIP's `load_gpt_descriptions` (ExplainableML/WaffleCLIP, waffle_tools.py)
    with its default text options: NumPy's global generator seeded, `np.random.choice` for every draw, one pair per
    count per class, then one class's sentences shared by all with the class name replaced."""
    np.random.seed(seed)
    word_count = int(np.max([np.round(np.mean([len(k.replace("_", " ").split(" ")) for k in keys])), 1]))
    word_length = int(np.round(np.mean([np.mean([len(y) for y in k.replace("_", " ").split(" ")]) for k in keys])))
    vocabulary = [w[:word_length] for w in words]
    spaces = int(np.round(np.mean([np.sum(np.array(list(k)) == " ") for k in keys]))) + 1
    letters = int(np.ceil(np.mean([np.max([len(y) for y in k.split(" ")]) for k in keys])))
    letters += spaces - letters % spaces
    shape = ""
    for s in range(spaces):
        shape += "a" * (letters // spaces)
        if s < spaces - 1:
            shape += " "
    sentences = {}
    for key in keys:
        sentences[key] = []
        for _ in range(count):
            word = ""
            for a in range(word_count):
                word += np.random.choice(vocabulary, 1, replace=False)[0]
                if a < word_count - 1:
                    word += " "
            sentences[key].append(f"A photo of a {key}, {descriptor_sentence(word)}.")
            noise = ""
            for c in shape:
                noise += np.random.choice(characters, 1, replace=False)[0] if c != " " else ", "
            sentences[key].append(f"A photo of a {key}, {descriptor_sentence(noise)}.")
    match = np.random.choice(keys)
    return {key: [s.replace(match, key) for s in sentences[match]] for key in keys}


@pytest.mark.parametrize("seed", [0, 3])
def test_waffle_prompts_equal_the_authors_draws(seed):
    words, characters = waffle_vocabulary()
    expected = waffle_reference(CLASSES, 4, seed, words, np.array(characters))
    prompt_set = waffle_prompt_set(CLASSES, count=4, seed=seed)
    assert prompt_set.is_templated and len(prompt_set.templates) == 8
    assert {name: prompts for name, prompts in zip(CLASSES, prompt_set.prompts_for(CLASSES))} == expected
    assert waffle_prompt_set(CLASSES, 4, seed + 1).templates != prompt_set.templates


def test_waffle_vocabulary_is_the_authors_word_list():
    words, characters = waffle_vocabulary()
    assert len(words) == 4330 and words[:3] == ["", "06-12", "10"] and words[-1] == "zygodactyl"
    assert "a" in characters and "," not in characters and characters == sorted(characters)


def test_waffle_templates_have_one_class_slot_each():
    prompt_set = waffle_prompt_set(CLASSES, count=15, seed=0)
    assert len(prompt_set.templates) == 30 and all(t.count("{}") == 1 for t in prompt_set.templates)


def test_dclip_descriptor_files_read_as_dclip_writes_its_prompts(tmp_path):
    path = tmp_path / "descriptors_pets.json"
    path.write_text(json.dumps({"Abyssinian_cat": ["a slender body", "has large ears", "used for hunting",
                                                   "antennae", "brown fur"], "pug": []}))
    prompt_set = load_dclip_descriptors(path)
    assert prompt_set.name == "dclip:descriptors_pets" and not prompt_set.is_templated
    assert prompt_set.descriptions["Abyssinian_cat"] == (
        "Abyssinian cat, which is a slender body", "Abyssinian cat, which has large ears",
        "Abyssinian cat, which is used for hunting", "Abyssinian cat, which is antennae",
        "Abyssinian cat, which has brown fur")
    assert prompt_set.descriptions["pug"] == ("pug, which has ",)  # DCLIP's [''] for an empty list
    assert resolve_descriptions(f"dclip:{path}", ["pug"]).descriptions == prompt_set.descriptions


@pytest.mark.parametrize(("spec", "expected"), [("waffle", (15, 0, None)), ("waffle:30", (30, 0, None)),
                                                ("waffle:5:7", (5, 7, None)),
                                                ("waffle:5:7:a:b.json", (5, 7, "a:b.json"))])
def test_waffle_specs(spec, expected):
    assert parse_waffle_spec(spec) == expected
    if expected[2] is None:
        assert resolve_descriptions(spec, CLASSES).name == f"waffle{expected[0]}-seed{expected[1]}"


@pytest.mark.parametrize("seed", [0, 5])
def test_waffle_with_the_datasets_descriptor_file_draws_the_authors_characters(tmp_path, seed):
    """The authors' code takes its random characters from the dataset's GPT descriptor file: given that file,
    pixprompt's prompts equal theirs; without it, its characters come from the word list (other prompts)."""
    path = tmp_path / "descriptors_fish.json"
    descriptors = {name: [f"a {name} with fins, scales.", "lives in water"] for name in CLASSES[:4]}
    descriptors["hen"] = []  # their [''] for an empty list
    path.write_text(json.dumps(descriptors))
    words = [x.replace(",", "").replace(".", "") for d in descriptors.values() for y in (d or [""])
             for x in y.split(" ")]
    characters = np.unique(list("".join(np.unique(words))))
    expected = waffle_reference(CLASSES, 4, seed, waffle_vocabulary()[0], characters)
    theirs = resolve_descriptions(f"waffle:4:{seed}:{path}", CLASSES)
    assert {name: prompts for name, prompts in zip(CLASSES, theirs.prompts_for(CLASSES))} == expected
    assert theirs.name == f"waffle4-seed{seed}-chars:descriptors_fish"
    assert resolve_descriptions(f"waffle:4:{seed}", CLASSES).templates != theirs.templates


@pytest.mark.parametrize("spec", ["waffle:", "waffle:0", "waffle:x", "waffle:1:2:", "waffle:3:-1", "waffle:x:1:f"])
def test_bad_waffle_specs_are_usage_errors(spec):
    with pytest.raises(UsageError, match="waffle:COUNT"):
        parse_waffle_spec(spec)


@pytest.mark.parametrize("content", ["[1, 2]", "{\"cat\": \"not a list\"}", "{\"cat\": [1]}", "not json", "{}"])
def test_bad_dclip_files_are_usage_errors(tmp_path, content):
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(UsageError, match="descriptor"):
        load_dclip_descriptors(path)

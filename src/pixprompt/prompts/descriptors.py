"""Descriptor prompt sets: DCLIP's per-class descriptor files (Menon & Vondrick, "Visual Classification via
Description from Large Language Models", ICLR 2023) and WaffleCLIP's random descriptors (Roth et al., "Waffling
around for Performance: Visual Classification with Random Words and Broad Concepts", ICCV 2023), written as both
authors' code writes them. Both score a class by the mean of its prompts' similarities: `--ensemble logits`."""
from __future__ import annotations

import json
from collections.abc import Sequence
from importlib import resources
from pathlib import Path

import numpy as np

from pixprompt.errors import UsageError
from pixprompt.prompts.templates import PromptSet
from pixprompt.readers import read_json_mapping

#: WaffleCLIP's defaults: pairs of (random words, random characters) descriptors, and its prompt around them.
WAFFLE_COUNT = 15
WAFFLE_BEFORE, WAFFLE_SEPARATOR, WAFFLE_AFTER = "A photo of a ", ", ", "."


def descriptor_sentence(descriptor: str) -> str:
    """The clause both authors' code puts after the class name (`make_descriptor_sentence`, its quirks kept: any
    descriptor starting with the letter a reads "which is …")."""
    if descriptor.startswith("a"):
        return f"which is {descriptor}"
    if descriptor.startswith(("has", "often", "typically", "may", "can")):
        return f"which {descriptor}"
    if descriptor.startswith("used"):
        return f"which is {descriptor}"
    return f"which has {descriptor}"


def wordify(name: str) -> str:
    return name.replace("_", " ")


def read_dclip_file(path: str | Path) -> dict[str, list[str]]:
    """A DCLIP descriptor file: a JSON mapping each class name to its list of descriptors, checked."""
    path = Path(path).expanduser()
    data = read_json_mapping(path, "descriptor file", "each class name to a list of descriptors (DCLIP's format)")
    for name, descriptors in data.items():
        if not isinstance(descriptors, list) or not all(isinstance(d, str) for d in descriptors):
            raise UsageError(f"descriptor file {path}: class {name!r} must have a list of descriptors")
    return data


def load_dclip_descriptors(path: str | Path) -> PromptSet:
    """DCLIP's prompts from its descriptor file (`read_dclip_file`): "{class}, which …" for each descriptor (a class
    with none gets the clause of an empty one, as DCLIP does)."""
    descriptions = {name: tuple(f"{wordify(name)}, {descriptor_sentence(d)}" for d in descriptors or [""])
                    for name, descriptors in read_dclip_file(path).items()}
    return PromptSet(f"dclip:{Path(path).expanduser().stem}", descriptions=descriptions)


def waffle_vocabulary() -> tuple[list[str], list[str]]:
    """WaffleCLIP's word list (shipped with its licence) and the characters of its words, sorted (WaffleCLIP takes
    its characters from a dataset's GPT descriptors, whose words the list holds)."""
    words = json.loads(resources.files("pixprompt.resources").joinpath("waffle_words.json").read_text("utf-8"))["words"]
    cleaned = [w.replace(",", "").replace(".", "") for w in np.unique(words)]
    return words, [str(c) for c in np.unique(list("".join(cleaned)))]


def waffle_descriptors(classnames: Sequence[str], count: int = WAFFLE_COUNT, seed: int = 0,
                       words: Sequence[str] | None = None, characters: Sequence[str] | None = None) -> list[str]:
    """WaffleCLIP's `waffle` descriptors: `count` pairs of a few random words (as many as class names have on
    average, each cut to their mean word length) and a random character string shaped like an average class
    name, drawn per class from NumPy's legacy generator seeded with `seed` and then shared, one class's, by all
    (the draws consume the generator exactly as the authors' code does, so a seed gives their descriptors)."""
    if words is None or characters is None:
        default_words, default_characters = waffle_vocabulary()
        words = default_words if words is None else words
        characters = default_characters if characters is None else characters
    rng = np.random.RandomState(seed)
    names = list(classnames)
    word_count = int(max(np.round(np.mean([len(wordify(n).split(" ")) for n in names])), 1))
    word_length = int(np.round(np.mean([np.mean([len(w) for w in wordify(n).split(" ")]) for n in names])))
    vocabulary = [w[:word_length] for w in words]
    groups = int(np.round(np.mean([n.count(" ") for n in names]))) + 1
    letters = int(np.ceil(np.mean([max(len(w) for w in n.split(" ")) for n in names])))
    letters += groups - letters % groups
    shape = " ".join(["a" * (letters // groups)] * groups)

    def draw(population: Sequence[str]) -> str:  # np.random.choice(population, 1, replace=False)[0]
        return population[int(rng.permutation(len(population))[0])]

    per_class = []
    for _ in names:
        drawn = []
        for _ in range(count):
            drawn.append(" ".join(draw(vocabulary) for _ in range(word_count)))
            drawn.append("".join(", " if c == " " else draw(characters) for c in shape))
        per_class.append(drawn)
    return per_class[int(rng.randint(0, len(names)))]


def waffle_prompt_set(classnames: Sequence[str], count: int = WAFFLE_COUNT, seed: int = 0,
                      characters_from: str | Path | None = None) -> PromptSet:
    """WaffleCLIP's prompts as a template set, one template per descriptor: "A photo of a {}, which … ." (the
    authors substitute the class name into one class's sentences; a template does the same). `characters_from`:
    a DCLIP descriptor file whose descriptors give the random characters, as the authors' code takes them from the
    dataset's file (then a seed gives their very prompts); without it, the characters of WaffleCLIP's word list."""
    characters = dclip_characters(characters_from) if characters_from else None
    templates = tuple(f"{WAFFLE_BEFORE}{{}}{WAFFLE_SEPARATOR}"
                      f"{descriptor_sentence(d).replace('{', '{{').replace('}', '}}')}{WAFFLE_AFTER}"
                      for d in waffle_descriptors(classnames, count, seed, characters=characters))
    pool = f"-chars:{Path(characters_from).stem}" if characters_from else ""
    return PromptSet(f"waffle{count}-seed{seed}{pool}", templates)


def dclip_characters(path: str | Path) -> list[str]:
    """The characters WaffleCLIP's `load_gpt_descriptions` draws from, given the dataset's DCLIP descriptor file:
    the sorted distinct characters of its descriptors' distinct words, commas and full stops removed (an empty list
    counts as one empty descriptor, as theirs does)."""
    descriptors = [x for items in read_dclip_file(path).values() for x in (items or [""])]
    words = np.unique([word for descriptor in descriptors for word in descriptor.split(" ")])
    characters = [str(c) for c in np.unique(list("".join(w.replace(",", "").replace(".", "") for w in words)))]
    if not characters:
        raise UsageError(f"descriptor file {path} holds no characters to draw from")
    return characters


def parse_waffle_spec(spec: str) -> tuple[int, int, str | None]:
    """(count, seed, descriptor file or None) of `waffle`, `waffle:COUNT`, `waffle:COUNT:SEED` or
    `waffle:COUNT:SEED:FILE` (the file's characters, as the authors draw them)."""
    parts = spec.split(":", 3)[1:]
    characters_from = parts.pop() if len(parts) == 3 else None
    try:
        numbers = [int(p) for p in parts]
    except ValueError:
        numbers = []
    if parts and not numbers or len(numbers) > 2 or any(n < 0 for n in numbers) or (numbers and numbers[0] < 1) \
            or characters_from == "":
        raise UsageError(f"{spec!r}: write waffle, waffle:COUNT, waffle:COUNT:SEED or waffle:COUNT:SEED:FILE "
                         "(COUNT ≥ 1 pairs, SEED ≥ 0, FILE a DCLIP descriptor file to draw characters from)")
    count = numbers[0] if numbers else WAFFLE_COUNT
    return count, numbers[1] if len(numbers) > 1 else 0, characters_from


def resolve_descriptions(spec: str, classnames: Sequence[str]) -> PromptSet:
    """The --descriptions set: `waffle[:COUNT[:SEED[:FILE]]]` made for `classnames`, `dclip:FILE`, or a CuPL
    file."""
    from pixprompt.prompts.templates import load_descriptions

    if spec == "waffle" or spec.startswith("waffle:"):
        return waffle_prompt_set(classnames, *parse_waffle_spec(spec))
    if spec.startswith("dclip:"):
        return load_dclip_descriptors(spec.removeprefix("dclip:"))
    return load_descriptions(spec)

"""Prompt template sets by name, users' template files, and per-class descriptions (CuPL-style)."""
from __future__ import annotations

import json
import string
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from pixprompt.errors import UsageError, shown
from pixprompt.readers import read_json, read_json_mapping, read_text

# OpenAI's templates ship as data (equal to open_clip's copy, tested), so naming them imports no library.
_OPENAI = json.loads(resources.files("pixprompt.resources").joinpath("openai_templates.json").read_text("utf-8"))
CLIP80: tuple[str, ...] = tuple(_OPENAI["clip80"])
CLIP7: tuple[str, ...] = tuple(_OPENAI["clip7"])

#: The class names and templates of the CLIP paper's zero-shot evaluations, per dataset, as openai/CLIP's
#: data/prompts.md gives them (FER2013's classes are lists of synonyms). Shipped as data: see its "source".
CLIP_PAPER: dict[str, dict] = json.loads(
    resources.files("pixprompt.resources").joinpath("clip_paper_prompts.json").read_text("utf-8"))["datasets"]

#: Named template sets: generic ones, then the CLIP paper's set of each dataset under the dataset's name
#: (its ImageNet set is `clip80`, also named `imagenet`).
TEMPLATE_SETS: dict[str, tuple[str, ...]] = {
    "raw": ("{}",),
    "standard": ("a photo of a {}.",),
    "clip80": CLIP80,
    "clip7": CLIP7,
    "imagenet": CLIP80,
    **{name: tuple(entry["templates"]) for name, entry in CLIP_PAPER.items()},
}


def paper_classnames(dataset: str) -> list[str]:
    """The class names the CLIP paper used for `dataset`, in its label order (the first of several synonyms)."""
    return [name[0] if isinstance(name, list) else name for name in CLIP_PAPER[dataset]["classes"]]


def validate_template(template: str, source: str = "templates") -> str:
    """Return the template if it has exactly one bare `{}` placeholder for the class name, else refuse."""
    try:
        fields = [(name, spec, conv) for _, name, spec, conv in string.Formatter().parse(template)
                  if name is not None]
    except ValueError as error:
        raise UsageError(f"template {shown(template)} in {source} has stray braces ({error}); "
                         "write literal braces as {{ and }}") from None
    if not fields:
        raise UsageError(f"template {shown(template)} in {source} has no {{}} placeholder for the class name")
    if len(fields) > 1:
        raise UsageError(f"template {shown(template)} in {source} has {len(fields)} placeholders: write one {{}} where "
                         "the class name goes (literal braces as {{ and }})")
    for name, spec, conv in fields:
        if name or spec or conv:
            used = shown(f"{{{name}{'!' + conv if conv else ''}{':' + spec if spec else ''}}}", 40)
            raise UsageError(f"template {shown(template)} in {source} uses {used}: write a bare {{}} where the class "
                             "name goes")
    return template


@dataclass(frozen=True)
class PromptSet:
    """How prompts are made for each class: shared templates, or each class's own descriptions."""

    name: str
    templates: tuple[str, ...] = ()
    descriptions: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    @property
    def is_templated(self) -> bool:
        return not self.descriptions

    def prompts_for(self, classnames: Sequence[str]) -> list[list[str]]:
        """The prompts of each class, in class order."""
        if self.is_templated:
            return [[template.format(name) for template in self.templates] for name in classnames]
        missing = [name for name in classnames if name not in self.descriptions]
        if missing:
            raise UsageError(f"descriptions {self.name} have none for {len(missing)} class(es), e.g. "
                             f"{', '.join(map(repr, missing[:5]))}: add a list of sentences for each class")
        return [list(self.descriptions[name]) for name in classnames]


def paper_prompt_set(dataset: str) -> PromptSet:
    """The CLIP paper's prompts for `dataset`: its templates, or, where it gives several names for a class
    (FER2013), every template with every name, as each class's descriptions."""
    entry, templates = CLIP_PAPER[dataset], TEMPLATE_SETS[dataset]
    if all(isinstance(name, str) for name in entry["classes"]):
        return PromptSet(dataset, templates)
    synonyms = [name if isinstance(name, list) else [name] for name in entry["classes"]]
    return PromptSet(dataset, descriptions={names[0]: tuple(t.format(n) for n in names for t in templates)
                                            for names in synonyms})


def template_file_text(templates: Sequence[str], comment: str = "") -> str:
    """A template file (one per line) that `--templates FILE` reads back as exactly `templates`: a template
    that starts with `#` (a comment line) or a backslash is written after an escaping backslash."""
    lines = [f"# {line}" for line in comment.splitlines()]
    lines += ["\\" + t if t.startswith(("#", "\\")) else t for t in templates]
    return "\n".join(lines) + "\n"


def _templates_from_file(path: Path) -> tuple[str, ...]:
    """One template per line (text) or a JSON list / {"templates": [...]}."""
    if path.suffix.lower() == ".json":
        data = read_json(path, "template file")
        data = data.get("templates") if isinstance(data, dict) else data
        if not isinstance(data, list) or not all(isinstance(t, str) for t in data):
            raise UsageError(f"template file {path} must hold a JSON list of strings or {{\"templates\": [...]}}")
        templates = [t.strip() for t in data if t.strip()]
    else:
        lines = (line.strip() for line in read_text(path, "template file").splitlines())
        templates = [line[1:] if line.startswith("\\") else line for line in lines
                     if line and not line.startswith("#")]
    if not templates:
        raise UsageError(f"template file {path} holds no templates: write one template per line, each with {{}}")
    # CLIP_benchmark's template files write the class slot as {c}
    return tuple(validate_template(t.replace("{c}", "{}"), str(path)) for t in templates)


def resolve_templates(spec: str) -> list[PromptSet]:
    """Template sets from a comma-separated spec of names and/or file paths (`raw,standard,my.txt`)."""
    names = [part.strip() for part in spec.split(",") if part.strip()]
    if not names:
        raise UsageError(f"no template set named in {spec!r}: use one of {', '.join(TEMPLATE_SETS)} or a file")
    sets = []
    for name in names:
        if name in CLIP_PAPER:
            sets.append(paper_prompt_set(name))
        elif name in TEMPLATE_SETS:
            sets.append(PromptSet(name, TEMPLATE_SETS[name]))
        elif Path(name).expanduser().exists():  # a folder or FIFO is refused by the reader
            path = Path(name).expanduser()
            sets.append(PromptSet(path.stem, _templates_from_file(path)))
        else:
            raise UsageError(f"unknown template set {name!r}: use one of {', '.join(TEMPLATE_SETS)}, "
                             "or a path to a text file (one template per line) or a JSON list")
    return sets


def load_descriptions(path: str | Path) -> PromptSet:
    """Per-class descriptions from a JSON mapping class name → list of sentences (CuPL-style prompts)."""
    path = Path(path).expanduser()
    data = read_json_mapping(path, "descriptions file", "each class name to a list of sentences")
    descriptions = {}
    for name, sentences in data.items():
        if isinstance(sentences, str):
            sentences = [sentences]
        if not isinstance(sentences, list) or not all(isinstance(s, str) for s in sentences):
            raise UsageError(f"descriptions file {path}: class {name!r} must have a list of sentences")
        cleaned = tuple(s.strip() for s in sentences if s.strip())
        if not cleaned:
            raise UsageError(f"descriptions file {path}: class {name!r} has no sentence")
        descriptions[name] = cleaned
    return PromptSet(f"descriptions:{path.stem}", descriptions=descriptions)

"""A zero-shot classifier: class names × prompts → embeddings, ensembled; saved as safetensors + JSON."""
from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from pixprompt.errors import UsageError, first_line, shown
from pixprompt.models.base import Scoring, VisionLanguageModel
from pixprompt.progress import announce, counted
from pixprompt.prompts.ensembling import get_ensembler
from pixprompt.prompts.labels import validate_classnames
from pixprompt.prompts.templates import PromptSet
from pixprompt.storage import atomic_path, payload_checksum


@dataclass(eq=False)
class ZeroShotClassifier:
    """Every prompt's embedding with its class, plus what is needed to score images without the model.

    `prompt_embeddings` (P, D) are L2-normalised and class-major; for templated prompt sets each class
    has the same templates in the same order, so they reshape to (C, T, D).
    """

    classnames: list[str]
    prompt_set: PromptSet
    prompt_embeddings: torch.Tensor
    prompt_class: torch.Tensor
    model_identity: str
    logit_scale: float
    logit_bias: float = 0.0
    scoring: Scoring = "softmax"
    metadata: dict[str, Any] = field(default_factory=dict)
    #: Divides the scores before softmax or sigmoid: 1 as the model gives them, else fitted (temperature scaling).
    temperature: float = 1.0

    @property
    def num_classes(self) -> int:
        return len(self.classnames)

    @property
    def templates(self) -> tuple[str, ...]:
        return self.prompt_set.templates

    @cached_property
    def mean_embeddings(self) -> torch.Tensor:
        """(C, D) mean of each class's normalised prompt embeddings."""
        sums = torch.zeros(self.num_classes, self.prompt_embeddings.shape[1])
        sums.index_add_(0, self.prompt_class, self.prompt_embeddings)
        counts = torch.bincount(self.prompt_class, minlength=self.num_classes).clamp_min(1)
        return sums / counts[:, None]

    @cached_property
    def weights(self) -> torch.Tensor:
        """(C, D) classifier weights: the renormalised mean embeddings (`embedding` ensembling)."""
        return torch.nn.functional.normalize(self.mean_embeddings, dim=-1)

    def scale_logits(self, similarities: torch.Tensor) -> torch.Tensor:
        """Turn cosine similarities into the model's logits (scale and, for SigLIP, bias)."""
        return self.logit_scale * similarities + self.logit_bias

    def scores(self, image_features: torch.Tensor, ensemble: str = "embedding") -> torch.Tensor:
        """(N, C) scores of L2-normalised image features under an ensembling mode."""
        return get_ensembler(ensemble)(image_features.float(), self)

    def probabilities(self, scores: torch.Tensor, ensemble: str = "embedding") -> torch.Tensor:
        """Probabilities to show a user: the model's own (softmax or sigmoid, of the scores over the
        temperature), or vote shares for `vote`."""
        if ensemble == "vote":
            return scores.floor() / len(self.templates)
        scores = scores / self.temperature
        return torch.sigmoid(scores) if self.scoring == "sigmoid" else scores.softmax(dim=-1)

    def negative_log_likelihood(self, scores: torch.Tensor, labels: torch.Tensor,
                                ensemble: str = "embedding") -> torch.Tensor:
        """(N,) −log of each image's label under the model's own probabilities: the true class's softmax; for
        sigmoid scoring, the one-hot label vector's (every class an independent yes or no)."""
        if ensemble == "vote":
            return -self.probabilities(scores, ensemble).gather(1, labels[:, None])[:, 0].clamp_min(1e-12).log()
        scores = scores / self.temperature
        if self.scoring == "sigmoid":
            one_hot = torch.nn.functional.one_hot(labels, scores.shape[1]).to(scores.dtype)
            return torch.nn.functional.binary_cross_entropy_with_logits(scores, one_hot, reduction="none").sum(1)
        return torch.nn.functional.cross_entropy(scores, labels, reduction="none")

    def by_template(self) -> torch.Tensor:
        """(C, T, D) each class's prompt embedding under each template (templated sets only)."""
        if not self.prompt_set.is_templated:
            raise UsageError(f"{self.prompt_set.name} has per-class descriptions, not shared templates: "
                             "per-template scores and `vote` ensembling need a template set")
        return self.prompt_embeddings.view(self.num_classes, len(self.templates), -1)

    def per_template_logits(self, image_features: torch.Tensor):
        """Yield (N, C) logits for each template alone, in template order (templated sets only)."""
        by_template = self.by_template()
        for t in range(len(self.templates)):
            yield self.scale_logits(image_features.float() @ by_template[:, t].T)

    # -- persistence --------------------------------------------------------------------------
    def save(self, path: str | Path) -> None:
        """Write tensors as safetensors with everything else as JSON in its metadata header (atomically)."""
        meta = {
            "classnames": self.classnames,
            "prompt_set": {"name": self.prompt_set.name, "templates": list(self.templates),
                           "descriptions": {k: list(v) for k, v in self.prompt_set.descriptions.items()}},
            "model": self.model_identity,
            "logit_scale": self.logit_scale,
            "logit_bias": self.logit_bias,
            "scoring": self.scoring,
            **self.metadata,
        }
        tensors = {"prompt_embeddings": self.prompt_embeddings.contiguous(),
                   "prompt_class": self.prompt_class.contiguous()}
        meta_json = json.dumps(meta)
        with atomic_path(path) as tmp:
            save_file(tensors, str(tmp), metadata={"pixprompt": meta_json,
                                                   "sha256": _checksum(tensors, meta_json)})

    @classmethod
    def load(cls, path: str | Path) -> ZeroShotClassifier:
        """Read a classifier written by `save`; a file whose bytes changed since is refused."""
        from safetensors import safe_open

        try:
            with safe_open(str(path), framework="pt") as handle:
                header = handle.metadata() or {}
            meta_json = header["pixprompt"]
            tensors = load_file(str(path))
            meta = json.loads(meta_json)
        except Exception as error:  # safetensors raises its own error types for corrupt headers
            raise UsageError(f"{path} is not a pixprompt classifier file ({first_line(error)})") from None
        if header.get("sha256") != _checksum(tensors, meta_json):  # a missing checksum is damage too
            raise UsageError(f"{path} is damaged: its checksum is missing or does not match its contents")
        if not torch.isfinite(tensors["prompt_embeddings"]).all():
            raise UsageError(f"{path} holds non-finite prompt embeddings (NaN or inf): build it again")
        prompt_meta = meta.pop("prompt_set")
        prompt_set = PromptSet(prompt_meta["name"], tuple(prompt_meta["templates"]),
                               {k: tuple(v) for k, v in prompt_meta["descriptions"].items()})
        return cls(classnames=meta.pop("classnames"), prompt_set=prompt_set,
                   prompt_embeddings=tensors["prompt_embeddings"], prompt_class=tensors["prompt_class"],
                   model_identity=meta.pop("model"), logit_scale=meta.pop("logit_scale"),
                   logit_bias=meta.pop("logit_bias"), scoring=meta.pop("scoring"), metadata=meta)


def is_classifier_file(path: str | Path) -> bool:
    """Whether `path` is a safetensors file that pixprompt wrote as a classifier (damaged or not)."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            return "pixprompt" in (handle.metadata() or {})
    except Exception:  # not safetensors at all
        return False


def _checksum(tensors: dict[str, torch.Tensor], meta_json: str) -> str:
    return payload_checksum([*(tensors[name].contiguous().numpy().tobytes() for name in sorted(tensors)),
                             meta_json.encode()])


def check_class_name_fits(model: VisionLanguageModel, prompt_set: PromptSet) -> None:
    """Refuse a template whose words before the class name fill the model's context: its tokenizer would cut the
    class name off, every class would get the same prompt and every image the same score for each."""
    if not prompt_set.is_templated:
        return
    marker = "\x00"
    prefixes = [template.format(marker).partition(marker)[0].rstrip() for template in prompt_set.templates]
    for template, count in zip(prompt_set.templates, model.token_counts(prefixes)):
        if count >= model.context_length:  # with its start and end tokens, no place is left for the class name
            raise UsageError(f"template {shown(template)} takes {count} tokens before the class name and "
                             f"{model.info.label} reads {model.context_length}: its tokenizer would cut the class "
                             "name off and every class would get the same prompt; shorten the template")


def build_classifier(model: VisionLanguageModel, classnames: Sequence[str], prompt_set: PromptSet,
                     batch_size: int = 256,
                     guard: Callable[[], AbstractContextManager] = nullcontext,
                     announcement: str | None = None) -> ZeroShotClassifier:
    """Encode every class × prompt with the model's text tower and keep the embeddings for ensembling
    (each batch inside `guard()`, see `VisionLanguageModel.encode_text`); `announcement` replaces the line that
    says so (for texts that are not class prompts)."""
    classnames = validate_classnames(classnames, unique=False)  # user input is checked where it enters
    check_class_name_fits(model, prompt_set)
    prompts = prompt_set.prompts_for(classnames)
    flat = [prompt for class_prompts in prompts for prompt in class_prompts]
    kind = counted(len(prompt_set.templates), "template") if prompt_set.is_templated else "their descriptions"
    announce(announcement or f"building classifier: {counted(len(classnames), 'class', 'classes')} × {kind} "
                              f"({counted(len(flat), 'prompt')})")
    prompt_class = torch.tensor([c for c, class_prompts in enumerate(prompts) for _ in class_prompts])
    embeddings = model.encode_text(flat, batch_size=batch_size, guard=guard)
    return ZeroShotClassifier(
        classnames=classnames, prompt_set=prompt_set, prompt_embeddings=embeddings, prompt_class=prompt_class,
        model_identity=model.info.identity, logit_scale=model.logit_scale, logit_bias=model.logit_bias,
        scoring=model.scoring, metadata={"weights_stamp": model.weights_stamp} if model.weights_stamp else {},
    )

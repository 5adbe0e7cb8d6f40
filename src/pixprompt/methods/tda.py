"""TDA, the training-free dynamic adapter (Karmanov et al., "Efficient Test-Time Adaptation of Vision-Language
Models", CVPR 2024, and the authors' `tda_runner.py`): images arrive one at a time; each is first put in a
positive cache under its predicted class (at most `positive_capacity` per class, the lowest-entropy ones kept)
and, when its normalised entropy is between the two thresholds, in a negative cache with the classes it deems
improbable; its logits are then the zero-shot logits plus the positive cache's affinity-weighted votes, minus the
negative cache's. The answer depends on the order of the stream, so the caller gives (and records) it."""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch


@dataclass(frozen=True)
class TdaSettings:
    """The authors' hyper-parameters (their ImageNet configuration by default; `for_dataset` gives the others)."""

    positive_capacity: int = 3
    positive_alpha: float = 2.0
    positive_beta: float = 5.0
    negative_capacity: int = 2
    negative_alpha: float = 0.117
    negative_beta: float = 1.0
    entropy_low: float = 0.2
    entropy_high: float = 0.5
    mask_low: float = 0.03
    mask_high: float = 1.0

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


#: The positive cache's (α, β) of each dataset the authors configured (configs/*.yaml), by pixprompt's names.
TDA_POSITIVE = {"imagenet": (2.0, 5.0), "imagenet-a": (2.0, 5.0), "imagenet-r": (1.0, 8.0),
                "imagenet-sketch": (2.363, 7.45), "imagenet-v2": (1.0, 8.0), "caltech101": (5.0, 5.0),
                "dtd": (2.0, 3.0), "eurosat": (4.0, 8.0), "fgvc_aircraft": (2.0, 2.0), "food101": (1.0, 1.0),
                "flowers102": (1.0, 5.0), "oxford_pets": (2.0, 7.0), "stanford_cars": (1.0, 7.0),
                "sun397": (2.0, 3.0), "ucf101": (3.0, 8.0)}


def for_dataset(name: str) -> TdaSettings:
    """The authors' settings for a dataset they configured, else their ImageNet ones."""
    alpha, beta = TDA_POSITIVE.get(name.removeprefix("wds/"), (2.0, 5.0))
    return TdaSettings(positive_alpha=alpha, positive_beta=beta)


class _Cache:
    """Per class, up to `capacity` (feature, entropy, value row) slots; a full class keeps its lowest entropies."""

    def __init__(self, classes: int, capacity: int, dim: int, value_width: int):
        self.keys = torch.zeros(classes * capacity, dim)
        self.values = torch.zeros(classes * capacity, value_width)
        self.entropy = torch.full((classes, capacity), math.inf)
        self.capacity = capacity
        self.used = torch.zeros(classes * capacity, dtype=torch.bool)

    def offer(self, label: int, feature: torch.Tensor, entropy: float, value: torch.Tensor) -> None:
        slots = self.entropy[label]
        free = torch.isinf(slots).nonzero()
        if len(free):
            slot = int(free[0])
        else:
            slot = int(slots.argmax())
            if not entropy < float(slots[slot]):
                return
        slots[slot] = entropy
        row = label * self.capacity + slot
        self.keys[row], self.values[row], self.used[row] = feature, value, True

    def logits(self, feature: torch.Tensor, alpha: float, beta: float) -> torch.Tensor:
        keys, values = self.keys[self.used], self.values[self.used]
        return alpha * torch.exp(-(beta - beta * (keys @ feature))) @ values


def tda_logits(features: torch.Tensor, logits: torch.Tensor, order: torch.Tensor,
               settings: TdaSettings = TdaSettings()) -> torch.Tensor:
    """(N, C) TDA's logits of every image, the images streamed in `order` (a permutation of range(N)); `features`
    L2-normalised, `logits` the zero-shot logits."""
    count, classes = logits.shape
    positive = _Cache(classes, settings.positive_capacity, features.shape[1], classes)
    negative = _Cache(classes, settings.negative_capacity, features.shape[1], classes)
    eye = torch.eye(classes)
    out = torch.empty_like(logits)
    max_bits = math.log2(classes)  # the authors divide an entropy in nats by log₂ C
    for index in order.tolist():
        feature, image_logits = features[index].float(), logits[index].float()
        entropy = float(-(image_logits.softmax(0) * image_logits.log_softmax(0)).sum())
        label = int(image_logits.argmax())
        positive.offer(label, feature, entropy, eye[label])
        if settings.entropy_low < entropy / max_bits < settings.entropy_high:
            probabilities = image_logits.softmax(0)
            mask = ((probabilities > settings.mask_low) & (probabilities < settings.mask_high)).float()
            negative.offer(label, feature, entropy, mask)
        final = image_logits + positive.logits(feature, settings.positive_alpha, settings.positive_beta)
        if negative.used.any():
            final = final - negative.logits(feature, settings.negative_alpha, settings.negative_beta)
        out[index] = final
    return out


def stream_order(count: int, seed: int) -> torch.Tensor:
    """The seeded order in which TDA sees the images (the authors shuffle their loader with seed 1)."""
    return torch.randperm(count, generator=torch.Generator().manual_seed(seed))

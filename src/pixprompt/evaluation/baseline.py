"""Supervised baseline: torchvision's ResNet-50 with its own preprocessing, scored on ImageNet classes."""
from __future__ import annotations

from collections.abc import Callable
from functools import cached_property
from typing import Any

import torch

from pixprompt.data.classnames import imagenet_wnids
from pixprompt.data.datasets import ImageDataset
from pixprompt.errors import UnavailableError, UsageError
from pixprompt.evaluation.metrics import classification_metrics
from pixprompt.evaluation.runs import run_facts
from pixprompt.evaluation.settings import RunSettings, run_settings
from pixprompt.models.base import ModelInfo, module_fingerprint
from pixprompt.models.preprocessing import bounded

RESNET50_WEIGHTS = ("IMAGENET1K_V1", "IMAGENET1K_V2")


class SupervisedClassifier:
    """An ImageNet-1k classifier behind the interface the feature extractor uses; its 'features' are logits."""

    weights_stamp = ""  # torchvision's named weights: their URL names the file

    def __init__(self, module: torch.nn.Module, preprocess: Callable, info: ModelInfo, device: torch.device):
        self.module = module.eval().to(device)
        self.preprocess = bounded(preprocess)
        #: torchvision's resize before its 224 crop (256 or 232): JPEG draft decoding stays at or above it
        self.decode_size = max(preprocess.resize_size)
        self.info = info
        self.device = device
        self.dtype = torch.float32

    @cached_property
    def weights_fingerprint(self) -> str:
        return module_fingerprint(self.module)

    @torch.inference_mode()
    def encode_images(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.module(pixels.to(self.device, non_blocking=True)).float().cpu()


def load_resnet50(weights_name: str, device: torch.device, penultimate: bool = False) -> SupervisedClassifier:
    """torchvision's ResNet-50 with the named weights (downloaded by torchvision on first use); with
    `penultimate`, its 'features' are the 2048-d pooled features before the classification layer (for probes)."""
    import torchvision

    if weights_name not in RESNET50_WEIGHTS:
        raise UsageError(f"unknown ResNet-50 weights {weights_name!r}: use {' or '.join(RESNET50_WEIGHTS)}")
    weights = torchvision.models.ResNet50_Weights[weights_name]
    try:
        module = torchvision.models.resnet50(weights=weights)
    except Exception as error:  # offline: torchvision cannot fetch the checkpoint
        raise UnavailableError(f"could not load ResNet-50 {weights_name} ({str(error).splitlines()[0][:200]}): "
                               f"torchvision downloads {weights.url} into {torch.hub.get_dir()}/checkpoints; "
                               "put the file there when offline") from None
    if penultimate:
        module.fc = torch.nn.Identity()
    info = ModelInfo(backend="torchvision", name="resnet50-penultimate" if penultimate else "resnet50",
                     pretrained=weights_name, params=sum(p.numel() for p in module.parameters()), image_size=224)
    return SupervisedClassifier(module, weights.transforms(), info, device)


def evaluate_supervised(model: SupervisedClassifier, dataset: ImageDataset, settings: RunSettings | None = None,
                        **options: Any) -> dict[str, Any] | None:
    """Metrics of an ImageNet classifier on an ImageNet(-subset) dataset, logits restricted to its classes
    (None on ranks other than 0 of a multi-process job)."""
    if not dataset.wnids:
        raise UsageError(f"the supervised baseline needs ImageNet classes; {dataset.name} has none "
                         "(use --dataset imagenet or imagenette)")
    features = run_settings(settings, options).features(model, dataset)
    if features is None:
        return None
    index = {wnid: i for i, wnid in enumerate(imagenet_wnids())}
    columns = torch.tensor([index[w] for w in dataset.wnids])
    logits = features.features[features.valid][:, columns]
    metrics = classification_metrics(logits, features.labels[features.valid], dataset.classnames)
    return {**run_facts(model, dataset, features), "templates": None, "ensemble": None, **metrics,
            "metric": "top1", "score": metrics["top1"]}

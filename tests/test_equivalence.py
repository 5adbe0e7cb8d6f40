"""pixprompt's embeddings, classifier weights and probabilities equal the reference implementations."""
from __future__ import annotations

import numpy as np
import open_clip
import pytest
import torch
from open_clip.zero_shot_metadata import OPENAI_IMAGENET_TEMPLATES
from PIL import Image

from pixprompt.prompts import PromptSet, build_classifier, resolve_templates

CLASSNAMES = ["tench", "English springer", "cassette player", "chain saw", "church", "French horn",
              "garbage truck", "gas pump", "golf ball", "parachute"]


def synthetic_images(count: int = 6) -> list[Image.Image]:
    """Deterministic RGB images of varied sizes, so the tests need no image files."""
    rng = np.random.default_rng(0)
    sizes = [(40, 30), (64, 64), (33, 90), (120, 80), (32, 32), (17, 50)]
    return [Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)) for w, h in sizes[:count]]


@pytest.mark.parametrize("name", ["open_clip_clip", "open_clip_siglip"])
def test_clip80_weights_equal_open_clip_build_zero_shot_classifier(loaded_models, name):
    model = loaded_models[name]
    (clip80,) = resolve_templates("clip80")
    ours = build_classifier(model, CLASSNAMES, clip80)
    reference = open_clip.build_zero_shot_classifier(
        model.model, model.tokenizer, CLASSNAMES, OPENAI_IMAGENET_TEMPLATES, num_classes_per_batch=3)
    assert ours.weights.shape == reference.T.shape
    assert torch.max(torch.abs(ours.weights - reference.T)).item() <= 1e-5


@pytest.mark.parametrize("name", ["open_clip_clip", "open_clip_siglip"])
def test_image_embeddings_equal_open_clip_preprocess_and_encode_image(loaded_models, name):
    model = loaded_models[name]
    _, _, reference_preprocess = open_clip.create_model_and_transforms(model.info.name)
    images = synthetic_images()
    pixels = torch.stack([model.preprocess(image) for image in images])
    reference_pixels = torch.stack([reference_preprocess(image) for image in images])
    assert torch.equal(pixels, reference_pixels)
    with torch.no_grad():
        reference = model.model.encode_image(reference_pixels, normalize=True)
    assert torch.max(torch.abs(model.encode_images(pixels) - reference)).item() <= 1e-5


@pytest.mark.parametrize("name", ["transformers_clip", "transformers_siglip"])
def test_probabilities_equal_transformers_zero_shot_pipeline(tiny_model_dirs, loaded_models, name):
    from transformers import pipeline

    model = loaded_models[name]
    template = "This is a photo of {}."
    labels = ["cat", "Dog", "a red car", "tree"]
    classifier = build_classifier(model, labels, PromptSet("pipeline", (template,)))
    reference = pipeline("zero-shot-image-classification", model=str(tiny_model_dirs[name]), device="cpu")
    for image in synthetic_images(3):
        expected = {r["label"]: r["score"] for r in reference(image, candidate_labels=labels,
                                                              hypothesis_template=template)}
        features = model.encode_images(model.preprocess(image)[None])
        probabilities = classifier.probabilities(classifier.scores(features))[0]
        ours = dict(zip(labels, probabilities.tolist()))
        for label in labels:
            assert ours[label] == pytest.approx(expected[label], abs=1e-5)
    if model.scoring == "sigmoid":  # SigLIP's probabilities are independent, not a distribution
        assert model.logit_bias == pytest.approx(-10.0)


def test_siglip_prompts_are_padded_to_the_fixed_training_length(loaded_models):
    """A SigLIP prompt's embedding must not depend on the other prompts in its batch."""
    for name in ("transformers_siglip", "open_clip_siglip"):
        model = loaded_models[name]
        alone = model.encode_text(["a cat"])
        batched = model.encode_text(["a cat", "a much longer prompt about a dog on a sunny beach"])
        assert torch.allclose(alone[0], batched[0], atol=1e-6)

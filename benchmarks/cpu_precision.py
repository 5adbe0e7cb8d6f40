"""The CPU's precisions side by side: what `--precision auto` gives on this CPU against fp32, on real images.

    python benchmarks/cpu_precision.py [--data ../shared/data] [--images 64] [--models ViT-B-32,ViT-B-16-SigLIP]

For each architecture (random weights, saved as an open_clip folder; speed does not depend on their values):
  1. what `auto` chose and why (the load-time probe's measure);
  2. image tower images/s at fp32 and at auto's precision, and the least cosine between the two on real images;
  3. prompts/s building a 10-class × 80-template classifier at each, and the least cosine of the class weights;
  4. top-1 agreement between the two on the real images (against those 10 classes);
  5. a plain fp32 open_clip loop (PIL → preprocess → encode_image, batch 32) on the same images, for the ratio
     the issue asks for (whole encode at auto's precision ÷ the plain loop's).
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from compare import save_random_open_clip  # noqa: E402  (the random-weight folders every benchmark uses)

from pixprompt import build_classifier, load_model, resolve_templates  # noqa: E402
from pixprompt.data.classnames import imagenet_classnames  # noqa: E402


def timed(work, repeat: int = 2) -> tuple[float, object]:
    """The best of `repeat` runs' seconds, and the last run's result (one warm-up run first)."""
    result = work()
    best = float("inf")
    for _ in range(repeat):
        started = time.perf_counter()
        result = work()
        best = min(best, time.perf_counter() - started)
    return best, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(ROOT / ".." / "shared" / "data"))
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--models", default="ViT-B-32,ViT-B-16-SigLIP")
    args = parser.parse_args()
    paths = sorted((Path(args.data) / "imagenette-val").rglob("*.JPEG"))[::40][:args.images]
    images = [Image.open(p).convert("RGB") for p in paths]
    classes = imagenet_classnames()[:10]
    clip80 = resolve_templates("clip80")[0]
    os.environ.setdefault("PIXPROMPT_CPU_BF16", "auto")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {len(images)} Imagenette images")
    with tempfile.TemporaryDirectory() as folder:
        for name in args.models.split(","):
            path = save_random_open_clip(name, Path(folder) / name)
            fp32 = load_model(str(path), device="cpu", precision="fp32")
            auto = load_model(str(path), device="cpu")
            print(f"\n{name}: auto = {str(auto.dtype).removeprefix('torch.')} ({auto.precision_reason})")
            pixels = torch.stack([fp32.preprocess(image) for image in images])

            def encode(model, pixels=pixels):
                return torch.cat([model.encode_images(pixels[i:i + 32]) for i in range(0, len(pixels), 32)])

            seconds32, embeddings32 = timed(lambda: encode(fp32))  # noqa: B023
            seconds, embeddings = timed(lambda: encode(auto))  # noqa: B023
            cosine = float(torch.nn.functional.cosine_similarity(embeddings, embeddings32).min())
            print(f"  images: fp32 {len(images) / seconds32:.1f}/s, auto {len(images) / seconds:.1f}/s "
                  f"({seconds32 / seconds:.2f}×); least cosine {cosine:.6f}")
            text32, classifier32 = timed(lambda: build_classifier(fp32, classes, clip80), repeat=1)  # noqa: B023
            text, classifier = timed(lambda: build_classifier(auto, classes, clip80), repeat=1)  # noqa: B023
            prompts = len(classes) * len(clip80.templates)
            weights = float(torch.nn.functional.cosine_similarity(classifier.weights, classifier32.weights).min())
            print(f"  prompts: fp32 {prompts / text32:.0f}/s, auto {prompts / text:.0f}/s ({text32 / text:.2f}×); "
                  f"least cosine of the class weights {weights:.6f}")
            agree = float((classifier.scores(embeddings, "embedding").argmax(1)
                           == classifier32.scores(embeddings32, "embedding").argmax(1)).double().mean())
            print(f"  top-1 agreement with fp32 on the {len(images)} images: {100 * agree:.1f}%")
            import open_clip

            model, _, preprocess = open_clip.create_model_and_transforms(f"local-dir:{path}")
            model.eval()

            def plain_loop():
                with torch.inference_mode():
                    for i in range(0, len(images), 32):
                        model.encode_image(torch.stack([preprocess(im) for im in images[i:i + 32]]))  # noqa: B023

            def ours():
                return encode(auto) if auto.dtype == torch.bfloat16 else encode(fp32)  # noqa: B023

            loop, _ = timed(plain_loop)
            preprocessing, _ = timed(lambda: [auto.preprocess(im) for im in images], repeat=1)  # noqa: B023
            mine = timed(ours)[0] + preprocessing
            print(f"  plain fp32 open_clip loop {len(images) / loop:.1f} images/s; pixprompt auto (preprocess + "
                  f"encode) {len(images) / mine:.1f}/s: {loop / mine:.2f}×")


if __name__ == "__main__":
    main()

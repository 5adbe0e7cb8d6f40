"""Whole-process start-up costs, as ratios to what any torch program pays on the same machine.

    python benchmarks/startup.py [--runs 5]

Prints and saves (benchmarks/results/startup/<machine>.json, benchmarks/startup.md, which
`compare.py` appends to BENCHMARKS.md):
  1. `pixprompt --help` and a cached `pixprompt models` against `python -c "import torch"` (target ≤ 0.25);
     `pixprompt models` with an empty cache (target ≤ 5 s) and `pixprompt datasets` (target ≤ 1 s);
  2. `pixprompt classify` of one image with 8 classes × the 80 CLIP templates against a plain open_clip
     script doing the same job, imports and model load included on both sides (random-weight ViT-B-32
     saved as an open_clip folder; nothing downloaded).
Each figure is the median wall time of `--runs` runs.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CLASSES = "tench,springer,cassette player,chain saw,church,French horn,garbage truck,parachute"

PIXPROMPT_PHASES = """
import json, sys, time
started = time.perf_counter()
from pixprompt import build_classifier, load_model, resolve_templates
from pixprompt.evaluation import classify
imported = time.perf_counter()
model = load_model(sys.argv[1], device="cpu")
loaded = time.perf_counter()
classifier = build_classifier(model, sys.argv[3].split(","), resolve_templates("clip80")[0])
built = time.perf_counter()
classify(model, classifier, [sys.argv[2]], workers=0)
done = time.perf_counter()
print(json.dumps({"import": imported - started, "load": loaded - imported, "build": built - loaded,
                  "classify": done - built}))
"""

OPEN_CLIP_PHASES = """
import json, sys, time
started = time.perf_counter()
import torch, open_clip
from open_clip.zero_shot_metadata import OPENAI_IMAGENET_TEMPLATES
from PIL import Image
imported = time.perf_counter()
model, _, preprocess = open_clip.create_model_and_transforms("local-dir:" + sys.argv[1])
tokenizer = open_clip.get_tokenizer("local-dir:" + sys.argv[1])
model.eval()
loaded = time.perf_counter()
classes = sys.argv[3].split(",")
with torch.inference_mode():
    weights = open_clip.build_zero_shot_classifier(model, tokenizer, classes, OPENAI_IMAGENET_TEMPLATES,
                                                   num_classes_per_batch=len(classes))
    built = time.perf_counter()
    model.encode_image(preprocess(Image.open(sys.argv[2]).convert("RGB"))[None])
done = time.perf_counter()
print(json.dumps({"import": imported - started, "load": loaded - imported, "build": built - loaded,
                  "classify": done - built}))
"""

PLAIN_OPEN_CLIP = """
import sys, torch, open_clip
from open_clip.zero_shot_metadata import OPENAI_IMAGENET_TEMPLATES
from PIL import Image
folder, image, classes = sys.argv[1], sys.argv[2], sys.argv[3].split(",")
model, _, preprocess = open_clip.create_model_and_transforms("local-dir:" + folder)
tokenizer = open_clip.get_tokenizer("local-dir:" + folder)
model.eval()
with torch.inference_mode():
    weights = open_clip.build_zero_shot_classifier(model, tokenizer, classes, OPENAI_IMAGENET_TEMPLATES,
                                                   num_classes_per_batch=len(classes))
    features = model.encode_image(preprocess(Image.open(image).convert("RGB"))[None])
    probabilities = (100 * torch.nn.functional.normalize(features, dim=-1) @ weights).softmax(dim=-1)
print(classes[int(probabilities.argmax())], float(probabilities.max()))
"""


def wall_time(command: list[str], runs: int, env: dict[str, str], fresh_cache: bool = False) -> float:
    """Median seconds of `command` as a whole process (`fresh_cache`: each run with a new, empty cache)."""
    times = []
    for _ in range(runs):
        with tempfile.TemporaryDirectory() as empty:
            started = time.perf_counter()
            subprocess.run(command, check=True, capture_output=True,
                           env={**env, "PIXPROMPT_CACHE": empty} if fresh_cache else env)
            times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--data", default=str(ROOT / ".." / "shared" / "data"))
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from compare import machine, save_figures, save_random_open_clip

    with tempfile.TemporaryDirectory() as scratch:
        env = {**os.environ, "PIXPROMPT_CACHE": scratch}
        pixprompt = [sys.executable, "-m", "pixprompt.cli"]
        models_first = wall_time([*pixprompt, "models"], args.runs, env, fresh_cache=True)
        subprocess.run([*pixprompt, "models"], check=True, capture_output=True, env=env)  # fill the cache
        torch_import = wall_time([sys.executable, "-c", "import torch"], args.runs, env)
        help_time = wall_time([*pixprompt, "--help"], args.runs, env)
        models_time = wall_time([*pixprompt, "models"], args.runs, env)
        datasets_time = wall_time([*pixprompt, "datasets"], args.runs, env)

        folder = save_random_open_clip("ViT-B-32", Path(scratch) / "vit-b-32")
        image = next((Path(args.data) / "imagenette-val").rglob("*.JPEG"))
        plain = wall_time([sys.executable, "-c", PLAIN_OPEN_CLIP, str(folder), str(image), CLASSES], args.runs, env)
        ours = wall_time([*pixprompt, "classify", str(image), "--model", str(folder), "--labels", CLASSES,
                          "--templates", "clip80", "--quiet"], args.runs, env)
        phases = {name: json.loads(subprocess.run([sys.executable, "-c", script, str(folder), str(image), CLASSES],
                                                  check=True, capture_output=True, text=True, env=env).stdout)
                  for name, script in (("pixprompt", PIXPROMPT_PHASES), ("open_clip", OPEN_CLIP_PHASES))}
    figures = {
        "machine": machine(), "runs": args.runs, "import_torch_s": round(torch_import, 3),
        "help_s": round(help_time, 3), "help_ratio": round(help_time / torch_import, 3),
        "models_cached_s": round(models_time, 3), "models_ratio": round(models_time / torch_import, 3),
        "models_first_s": round(models_first, 3), "datasets_s": round(datasets_time, 3),
        "classify_s": round(ours, 3), "plain_open_clip_s": round(plain, 3), "classify_ratio": round(ours / plain, 3),
        "phases_s": {side: {k: round(v, 2) for k, v in times.items()} for side, times in phases.items()},
        "date": time.strftime("%Y-%m-%d"),
    }
    save_figures("startup", figures, render(figures))


def render(f: dict) -> str:
    return (
        "## Start-up (whole processes, `python benchmarks/startup.py`)\n\n"
        f"Machine: {f['machine'].get('cpu')}, {f['machine'].get('cores')} cores; median of {f['runs']} runs, "
        f"{f['date']}. Target for 1: ≤ 0.25 of `import torch`.\n\n"
        "| what | seconds | ratio |\n| --- | --- | --- |\n"
        f"| `python -c \"import torch\"` | {f['import_torch_s']:.2f} | 1 |\n"
        f"| 1. `pixprompt --help` | {f['help_s']:.2f} | **{f['help_ratio']:.2f}** of import torch |\n"
        f"| 1. `pixprompt models` (cached listing) | {f['models_cached_s']:.2f} | **{f['models_ratio']:.2f}** of "
        "import torch |\n"
        f"| 1. `pixprompt models`, first run (empty cache; target ≤ 5 s) | {f['models_first_s']:.2f} | |\n"
        f"| 1. `pixprompt datasets` (target ≤ 1 s) | {f['datasets_s']:.2f} | |\n"
        f"| 2. `pixprompt classify` 1 image, 8 classes × clip80 | {f['classify_s']:.2f} | "
        f"**{f['classify_ratio']:.2f}×** the plain open_clip script |\n"
        f"| 2. plain open_clip script, same job | {f['plain_open_clip_s']:.2f} | 1 |\n\n"
        "In-process phases of job 2 (seconds; one run each): "
        + "; ".join(f"{side}: " + ", ".join(f"{k} {v:.2f}" for k, v in times.items())
                    for side, times in f["phases_s"].items()) + ".\n"
    )


if __name__ == "__main__":
    main()

"""Side-by-side speed of pixprompt and the usual code, on real architectures with random weights.

    python benchmarks/compare.py [--data ../shared/data] [--device auto] [--classes 10] [--images 256]

Prints, for ViT-B-32 (CLIP) and ViT-B-16-SigLIP, on the same machine, model and images:
  1. classifier build for N ImageNet classes × the 80 CLIP templates: pixprompt vs open_clip's
     `build_zero_shot_classifier` (equal weights checked), projected to all 1000 classes;
  2. end-to-end images/s on Imagenette val (decode → preprocess → encode → score): pixprompt vs a plain
     open_clip loop (PIL + preprocess + `encode_image`, batch 32) vs the transformers pipeline;
  3. the image encoder's achieved FLOP rate as a fraction of a matrix product's rate, measured in this run;
  4. a three-template-set evaluation vs one evaluation, and vs three separate evaluations.
The figures are saved to benchmarks/results/<machine>.json and BENCHMARKS.md is rebuilt from all of them.
Weights are random (no downloads here): speed does not depend on their values.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import open_clip
import torch
from open_clip.zero_shot_metadata import OPENAI_IMAGENET_TEMPLATES
from PIL import Image
from safetensors.torch import save_file

from pixprompt import build_classifier, load_model, resolve_templates
from pixprompt.data.classnames import imagenet_classnames
from pixprompt.data.datasets import DatasetOptions, ImageDataset, load_dataset
from pixprompt.evaluation.predict import classify
from pixprompt.evaluation.runs import evaluate

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from tiny_models import char_tokenizer  # noqa: E402  (the offline tokenizer the tests use)

RESULTS = ROOT / "benchmarks" / "results"
MODELS = {"ViT-B-32": "CLIP, causal text tower", "ViT-B-16-SigLIP": "SigLIP, fixed 64-token text"}


# -- set-up ---------------------------------------------------------------------------------------
def save_random_open_clip(name: str, folder: Path) -> Path:
    """An open_clip `local-dir:` folder with `name`'s architecture and random weights.

    SigLIP's sentencepiece tokenizer lives on the Hub; a character tokenizer stands in. Its prompts
    are padded to the same 64 positions, so the text cost is the real one.
    """
    config = open_clip.get_model_config(name)
    if "hf_tokenizer_name" in config["text_cfg"]:
        char_tokenizer(folder, add_bos=False, lowercase=True, max_length=config["text_cfg"]["context_length"])
        config["text_cfg"] = {**config["text_cfg"], "hf_tokenizer_name": "local"}
    folder.mkdir(parents=True, exist_ok=True)
    model = open_clip.create_model(name)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(folder / "open_clip_model.safetensors"))
    preprocess = {k: v for k, v in model.visual.preprocess_cfg.items() if k != "size"}
    (folder / "open_clip_config.json").write_text(json.dumps({"model_cfg": config, "preprocess_cfg": preprocess}))
    return folder


def save_random_transformers_clip(folder: Path) -> Path:
    """A transformers ViT-B/32 CLIP folder (CLIPConfig's defaults) with the real CLIP BPE tokenizer."""
    from open_clip.tokenizer import SimpleTokenizer
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPTokenizerFast

    folder.mkdir(parents=True, exist_ok=True)
    bpe = SimpleTokenizer()
    # open_clip names the special tokens <start_of_text>/<end_of_text>; transformers' CLIP files use <|…|>.
    renamed = {"<start_of_text>": "<|startoftext|>", "<end_of_text>": "<|endoftext|>"}
    (folder / "vocab.json").write_text(json.dumps({renamed.get(k, k): v for k, v in bpe.encoder.items()}))
    merges = sorted(bpe.bpe_ranks, key=bpe.bpe_ranks.get)
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(" ".join(pair) for pair in merges))
    CLIPTokenizerFast(str(folder / "vocab.json"), str(folder / "merges.txt")).save_pretrained(folder)
    CLIPModel(CLIPConfig()).save_pretrained(folder)
    CLIPImageProcessor().save_pretrained(folder)
    return folder


def timed(function: Callable[[], object]) -> tuple[float, object]:
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    started = time.perf_counter()
    result = function()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter() - started, result


def machine() -> dict[str, object]:
    cpu = platform.processor() or platform.machine()
    if Path("/proc/cpuinfo").is_file():
        names = [line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                 if line.startswith("model name")]
        cpu = names[0] if names else cpu
    facts: dict[str, object] = {"cpu": cpu, "cores": os.cpu_count(), "torch": torch.__version__,
                                "threads": torch.get_num_threads(), "open_clip": open_clip.__version__}
    if torch.cuda.is_available():
        facts["gpu"] = torch.cuda.get_device_name()
    return facts


def save_figures(kind: str, figures: dict[str, object], markdown: str) -> None:
    """Keep a side benchmark's figures (results/KIND/<machine>.json) and its section (benchmarks/KIND.md,
    which `--render-only` appends to BENCHMARKS.md), and print the section."""
    folder = ROOT / "benchmarks" / "results" / kind
    folder.mkdir(parents=True, exist_ok=True)
    name = "-".join(str(machine().get("cpu", "machine")).split()[:2]).lower()
    (folder / f"{name}.json").write_text(json.dumps(figures, indent=1) + "\n")
    (ROOT / "benchmarks" / f"{kind}.md").write_text(markdown)
    print(markdown)


# -- the four comparisons --------------------------------------------------------------------------
def classifier_build(model, classes: int) -> dict[str, object]:
    """pixprompt's clip80 classifier vs open_clip's build_zero_shot_classifier on `classes` ImageNet classes."""
    every = imagenet_classnames()
    names = every[:: max(1, len(every) // classes)][:classes]
    (clip80,) = resolve_templates("clip80")
    ours_s, ours = timed(lambda: build_classifier(model, names, clip80))
    with torch.inference_mode(), model.autocast():
        ref_s, reference = timed(lambda: open_clip.build_zero_shot_classifier(
            model.model, model.tokenizer, names, OPENAI_IMAGENET_TEMPLATES, num_classes_per_batch=10,
            device=model.device, use_tqdm=False))
    prompts = classes * len(OPENAI_IMAGENET_TEMPLATES)
    return {"classes": classes, "prompts": prompts, "pixprompt_s": ours_s, "open_clip_s": ref_s,
            "speedup": ref_s / ours_s, "max_abs_diff": float((ours.weights - reference.T.float().cpu()).abs().max()),
            "projected_1000_classes_pixprompt_s": ours_s * 1000 / classes,
            "projected_1000_classes_open_clip_s": ref_s * 1000 / classes}


def open_clip_loop(model, weights: torch.Tensor, paths: list[Path], batch_size: int = 32) -> torch.Tensor:
    """What a notebook does: open + preprocess each image, stack 32, `encode_image`, score."""
    predictions = []
    for start in range(0, len(paths), batch_size):
        batch = torch.stack([model._preprocess(Image.open(p).convert("RGB")) for p in paths[start:start + batch_size]])
        with torch.no_grad(), model.autocast():
            features = model.model.encode_image(batch.to(model.device, model.dtype), normalize=True)
        predictions.append((100.0 * features.float() @ weights.T.to(model.device)).argmax(dim=1).cpu())
    return torch.cat(predictions)


def transformers_pipeline(folder: Path, device: torch.device, paths: list[Path], classnames: list[str]) -> float:
    from transformers import pipeline

    dtype = torch.float16 if device.type == "cuda" else torch.float32
    classifier = pipeline("zero-shot-image-classification", model=str(folder), device=device, dtype=dtype)
    classifier([str(p) for p in paths[:2]], candidate_labels=classnames)  # warm-up
    seconds, _ = timed(lambda: classifier([str(p) for p in paths], candidate_labels=classnames,
                                          hypothesis_template="a photo of a {}.", batch_size=32))
    return seconds


def throughput(model, dataset: ImageDataset, hf_folder: Path | None) -> dict[str, object]:
    paths = list(dataset.images.paths)
    (standard,) = resolve_templates("standard")
    classifier = build_classifier(model, dataset.classnames, standard)
    open_clip_loop(model, classifier.weights, paths[:32])  # warm-up (allocator, kernels)
    ours_s, _ = timed(lambda: classify(model, classifier, paths))
    loop_s, _ = timed(lambda: open_clip_loop(model, classifier.weights, paths))
    result = {"images": len(paths), "pixprompt_img_s": len(paths) / ours_s, "open_clip_loop_img_s": len(paths) / loop_s,
              "speedup_vs_open_clip_loop": loop_s / ours_s}
    if hf_folder is not None:
        pipeline_s = transformers_pipeline(hf_folder, model.device, paths, dataset.classnames)
        result |= {"transformers_pipeline_img_s": len(paths) / pipeline_s, "speedup_vs_pipeline": pipeline_s / ours_s}
    return result


def matmul_rate(device: torch.device, dtype: torch.dtype) -> float:
    """FLOP/s of a large square matrix product in the model's precision (the hardware's practical peak)."""
    n = 8192 if device.type == "cuda" else 2048
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    a @ b
    repeats = 20 if device.type == "cuda" else 5
    seconds, _ = timed(lambda: [a @ b for _ in range(repeats)])
    return 2 * n**3 * repeats / seconds


def encoder_efficiency(model, batch_size: int) -> dict[str, object]:
    """Achieved FLOP/s of `encode_images` on preprocessed batches vs the matrix-product rate."""
    from torch.utils.flop_counter import FlopCounterMode

    size = model.info.image_size
    one = torch.randn(1, 3, size, size, device=model.device, dtype=model.dtype)
    # Counted with autograd on: the fused inference attention kernel is invisible to the counter.
    with FlopCounterMode(display=False) as counter, model.autocast():
        model.image_tower(one)
    flops = counter.get_total_flops()
    pixels = torch.randn(batch_size, 3, size, size)
    model.encode_images(pixels)
    repeats = 3 if model.device.type == "cpu" else 20
    seconds, _ = timed(lambda: [model.encode_images(pixels) for _ in range(repeats)])
    achieved = flops * batch_size * repeats / seconds
    peak = matmul_rate(model.device, model.dtype)
    return {"gflop_per_image": flops / 1e9, "batch_size": batch_size, "images_per_s": batch_size * repeats / seconds,
            "achieved_gflop_s": achieved / 1e9, "matmul_gflop_s": peak / 1e9, "fraction_of_matmul": achieved / peak}


def grid_cost(model, dataset: ImageDataset) -> dict[str, object]:
    """raw + standard + clip80 in one evaluation vs each alone; every run starts from an empty cache.

    "One evaluation" is the costliest single one (clip80, whose prompts any run of it must encode).
    """
    sets = resolve_templates("raw,standard,clip80")

    def run(prompt_sets) -> float:
        with tempfile.TemporaryDirectory() as cache:
            return timed(lambda: evaluate(model, dataset, prompt_sets, cache_root=Path(cache)))[0]

    alone = [run([s]) for s in sets]
    grid = run(sets)
    return {"images": len(dataset), "single_s": dict(zip(("raw", "standard", "clip80"), alone)),
            "three_sets_one_pass_s": grid, "grid_over_one": grid / max(alone), "separate_over_grid": sum(alone) / grid}


# -- report -----------------------------------------------------------------------------------------
def render_markdown() -> str:
    lines = ["# Benchmarks", "",
             "Made by `python benchmarks/compare.py` (see its docstring); every figure below comes from one run of",
             "it on the machine named, with random-weight real architectures and the real Imagenette val images.",
             "Targets (issue #4): classifier build ≥ 5× open_clip's; end-to-end ≥ 1.5× a plain open_clip loop;",
             "image encoder ≥ 70 % of the matrix-product rate (fp32, CPU); three template sets ≤ 1.1× one",
             "evaluation (here: the clip80 one, the costliest of the three alone).", ""]
    for path in sorted(RESULTS.glob("*.json")):
        run = json.loads(path.read_text())
        facts = run["machine"]
        lines += [f"## {run['label']}", "", "Machine: " + ", ".join(f"{k} {v}" for k, v in facts.items()) + ".",
                  f"Device {run['device']}, precision {run['precision']}, run on {run['date']}.", ""]
        lines += ["| model | 1. classifier build: pixprompt / open_clip (speed-up, max abs diff) | "
                  "2. images/s: pixprompt / open_clip loop / transformers pipeline | "
                  "3. encoder GFLOP/s / matmul GFLOP/s | 4. 3 sets / 1 set; 3 separate / 3 sets |",
                  "| --- | --- | --- | --- | --- |"]
        for name, figures in run["models"].items():
            b, t, e, g = figures["build"], figures["throughput"], figures["efficiency"], figures["grid"]
            pipeline = f"{t['transformers_pipeline_img_s']:.1f}" if "transformers_pipeline_img_s" in t else "—"
            build = (f"{b['pixprompt_s']:.1f} s / {b['open_clip_s']:.1f} s for {b['prompts']} prompts "
                     f"(**{b['speedup']:.1f}×**, {b['max_abs_diff']:.1e}); 1000 classes ≈ "
                     f"{b['projected_1000_classes_pixprompt_s'] / 60:.0f} / "
                     f"{b['projected_1000_classes_open_clip_s'] / 60:.0f} min")
            images = (f"{t['pixprompt_img_s']:.1f} / {t['open_clip_loop_img_s']:.1f} / {pipeline} "
                      f"(**{t['speedup_vs_open_clip_loop']:.2f}×** the loop, {t['images']} images)")
            encoder = (f"{e['achieved_gflop_s']:.0f} / {e['matmul_gflop_s']:.0f} (**{e['fraction_of_matmul']:.0%}**, "
                       f"{e['gflop_per_image']:.2f} GFLOP/image)")
            grid = f"**{g['grid_over_one']:.2f}×**; {g['separate_over_grid']:.2f}× ({g['images']} images)"
            lines.append(f"| {name} ({MODELS[name]}) | {build} | {images} | {encoder} | {grid} |")
        lines.append("")
    for part in ("startup", "scale"):  # made by benchmarks/startup.py and benchmarks/scale.py
        made = ROOT / "benchmarks" / f"{part}.md"
        if made.is_file():
            lines += [made.read_text().strip(), ""]
    analysis = ROOT / "benchmarks" / "analysis.md"
    if analysis.is_file():  # what the figures mean, written by whoever ran them
        lines += [analysis.read_text().strip(), ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=os.environ.get("PIXPROMPT_TEST_DATA", str(ROOT.parent / "shared" / "data")))
    parser.add_argument("--device", default="auto")
    parser.add_argument("--classes", type=int, default=10, help="ImageNet classes for the clip80 build (of 1000)")
    parser.add_argument("--images", type=int, default=256, help="Imagenette val images for throughput and grid")
    parser.add_argument("--label", default=None, help="section title in BENCHMARKS.md (default: CPU or GPU name)")
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--render-only", action="store_true", help="rebuild BENCHMARKS.md from saved results")
    args = parser.parse_args()
    if not args.render_only:
        run_all(args)
    (ROOT / "BENCHMARKS.md").write_text(render_markdown())


def run_all(args: argparse.Namespace) -> None:
    data = Path(args.data) / "imagenette-val"
    dataset = load_dataset("imagenette", DatasetOptions(data_dir=str(data))).spread_subset(args.images)
    facts = machine()
    results: dict[str, object] = {"machine": facts, "models": {}, "date": time.strftime("%Y-%m-%d")}
    with tempfile.TemporaryDirectory() as folder:
        for name in args.models.split(","):
            model = load_model("local-dir:" + str(save_random_open_clip(name, Path(folder) / name)), device=args.device)
            hf = save_random_transformers_clip(Path(folder) / "hf-clip") if name == "ViT-B-32" else None
            figures = {"build": classifier_build(model, args.classes), "throughput": throughput(model, dataset, hf),
                       "efficiency": encoder_efficiency(model, 32 if model.device.type == "cpu" else 256),
                       "grid": grid_cost(model, dataset)}
            print(name, json.dumps(figures, indent=1), flush=True)
            results["models"][name] = figures
            results["device"], results["precision"] = str(model.device), str(model.dtype).removeprefix("torch.")
    results["label"] = args.label or str(facts.get("gpu") or facts["cpu"])
    tag = "".join(c if c.isalnum() else "-" for c in str(results["label"])).strip("-").lower()
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{tag}.json").write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()

"""Image ↔ text retrieval: written by CLIP_benchmark's own converter, scored by pixprompt and by CLIP_benchmark's
`zeroshot_retrieval.evaluate` with DataComp's `mean_recall@1` — the same numbers; captions cached like images."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from bad_inputs import write_photos
from cli_runner import in_terminal, model_args, run_cli

COLOURS = [(220, 40, 40), (40, 200, 40), (40, 40, 220), (220, 220, 40), (40, 220, 220), (220, 40, 220),
           (128, 128, 128), (250, 250, 250), (10, 10, 10), (200, 120, 40), (120, 40, 200), (40, 120, 40)]


def captioned_images(folder: Path) -> list[tuple[str, list[str]]]:
    """Twelve images of distinct colours with one to five captions each (so some images have several)."""
    pairs = []
    for number, colour in enumerate(COLOURS):
        (path,) = write_photos(folder / f"image-{number:02d}", 1, colour, seed=number)
        captions = [f"a photo in colour {colour}", "a plain square", f"image number {number}",
                    "noise over a flat colour", f"{colour[0]} red, {colour[1]} green"][:1 + number % 5]
        pairs.append((str(path), captions))
    return pairs


@pytest.fixture()
def retrieval_wds(tmp_path) -> tuple[Path, list[tuple[str, list[str]]]]:
    """The images exported by `clip_benchmark.webdataset_builder.convert_retrieval_dataset`, in 3 shards."""
    from clip_benchmark import webdataset_builder

    pairs = captioned_images(tmp_path / "images")
    root = tmp_path / "wds_captions"
    webdataset_builder.convert_retrieval_dataset(pairs, "test", str(root), transform=webdataset_builder.path_to_bytes,
                                                 max_count=5, verbose=False)
    return root, pairs


def clip_benchmark_retrieval(model_dir: Path, root: Path) -> dict[str, float]:
    """CLIP_benchmark's own pipeline — its wds reader, open_clip's preprocess and tokenizer, its
    `zeroshot_retrieval.evaluate` at recall@1, 5, 10 — and DataComp's `mean_recall@1` (retr_eval.py) on top."""
    import open_clip
    from clip_benchmark.datasets.builder import build_dataset, image_captions_collate_fn
    from clip_benchmark.metrics import zeroshot_retrieval

    model, _, preprocess = open_clip.create_model_and_transforms(f"local-dir:{model_dir}")
    tokenizer = open_clip.get_tokenizer(f"local-dir:{model_dir}")
    dataset = build_dataset("wds/captions", root=str(root), transform=preprocess, split="test",
                            task="zeroshot_retrieval")
    loader = torch.utils.data.DataLoader(dataset.batched(4, collation_fn=image_captions_collate_fn),
                                         batch_size=None, num_workers=0)
    metrics = zeroshot_retrieval.evaluate(model.eval(), loader, tokenizer, "cpu", amp=False, recall_k_list=[1, 5, 10])
    metrics["mean_recall@1"] = 0.5 * (metrics["text_retrieval_recall@1"] + metrics["image_retrieval_recall@1"])
    return metrics


def test_retrieval_equals_clip_benchmark_and_datacomp(tiny_model_dirs, retrieval_wds, tmp_path, capsys):
    root, pairs = retrieval_wds
    assert (root / "test" / "nshards.txt").read_text().strip() == "3"
    model_dir = tiny_model_dirs["open_clip_clip"]
    args = ["eval", *model_args(model_dir), "--dataset", f"wds:{root}", "--cache-dir", tmp_path / "cache", "--json"]
    code, out, err = run_cli(capsys, *args)
    assert code == 0 and "encoding 33 captions of 12 images" in err, err
    (record,) = json.loads(out)
    theirs = clip_benchmark_retrieval(model_dir, root)
    assert record["task"] == "retrieval" and record["metric"] == "mean_recall@1"
    assert record["images"] == 12 and record["captions"] == sum(len(c) for _, c in pairs) == 33
    for name, value in theirs.items():
        assert record[name] == pytest.approx(value, abs=1e-6), name
    assert record["score"] == record["mean_recall@1"]
    assert 0 < record["image_retrieval_recall@1"] < record["image_retrieval_recall@10"] <= 1  # not trivial

    code, again, err = run_cli(capsys, *args, "--verbose")  # images and captions from the cache
    assert code == 0 and json.loads(again)[0]["cached_images"] == 12
    assert "encoding 33 captions of 12 images" not in err and "reusing classifier" in err
    assert {k: v for k, v in json.loads(again)[0].items() if "recall" in k} == \
        {k: v for k, v in record.items() if "recall" in k}


def test_retrieval_table_names_both_directions_at_80_columns(tiny_model_dirs, retrieval_wds):
    """In a real 80-column terminal: every recall on screen, nothing a retrieval record does not have."""
    root, _ = retrieval_wds
    (screen,) = in_terminal([["eval", *model_args(tiny_model_dirs["open_clip_clip"]), "--dataset", f"wds:{root}",
                              "--no-cache"]], 80, cwd="/")
    assert all(len(line) <= 80 for line in screen.splitlines()), screen
    for header in ("t→i R@1 %", "t→i R@10 %", "i→t R@1 %", "i→t R@10 %", "mean R@1 %"):
        assert header in screen
    assert "top1 %" not in screen and "ensemble" not in screen


def test_a_report_holds_retrieval_beside_classification(tiny_model_dirs, retrieval_wds, colours, tmp_path, capsys):
    """Retrieval recalls in the Results table and the group means; classification figures from the others only."""
    root, _ = retrieval_wds
    model = model_args(tiny_model_dirs["open_clip_clip"])
    for name, dataset in (("retrieval", f"wds:{root}"), ("colours", f"folder:{colours}")):
        code, _, err = run_cli(capsys, "eval", *model, "--dataset", dataset, "--no-cache", "--templates", "raw",
                               "--output", tmp_path / f"{name}.json")
        assert code == 0, err
    code, _, err = run_cli(capsys, "report", tmp_path / "retrieval.json", tmp_path / "colours.json", "-o",
                           tmp_path / "report.html")
    assert code == 0, err
    html = (tmp_path / "report.html").read_text()
    record = json.loads((tmp_path / "retrieval.json").read_text())[0]
    assert "t→i R@1 %" in html and "mean R@1 %" in html and f"{100 * record['mean_recall@1']:.2f}" in html
    assert html.count('src="data:image/png;base64,') >= 2  # the colours' figures
    code, _, err = run_cli(capsys, "report", tmp_path / "retrieval.json", "-o", tmp_path / "alone.html")
    assert code == 0 and "mean R@1 %" in (tmp_path / "alone.html").read_text(), err


def test_a_hugging_face_caption_table_is_the_same_retrieval_set(loaded_models, retrieval_wds, tmp_path):
    """nlphuji's layout, which DataComp reads: an `image` column and a `caption` column of lists."""
    import datasets
    from PIL import Image

    from pixprompt.data.datasets import load_dataset
    from pixprompt.evaluation import evaluate
    from pixprompt.prompts import resolve_templates

    root, pairs = retrieval_wds
    features = datasets.Features({"image": datasets.Image(), "caption": datasets.Sequence(datasets.Value("string"))})
    table = datasets.Dataset.from_dict({"image": [Image.open(p).convert("RGB") for p, _ in pairs],
                                        "caption": [c for _, c in pairs]}, features=features)
    table.save_to_disk(str(tmp_path / "hf"))
    model = loaded_models["open_clip_clip"]
    from_hf = evaluate(model, load_dataset(f"hf:{tmp_path / 'hf'}"), resolve_templates("raw"), cache_root=None,
                       workers=0)
    from_wds = evaluate(model, load_dataset(f"wds:{root}"), resolve_templates("raw"), cache_root=None, workers=0)
    recalls = [{k: v for k, v in r[0].items() if "recall" in k} for r in (from_hf, from_wds)]
    assert recalls[0] == pytest.approx(recalls[1], abs=1e-6) and len(recalls[0]) == 7


def test_ranks_equal_clip_benchmarks_recall_across_blocks(monkeypatch):
    """Several captions per image, blocks smaller than the caption count: CLIP_benchmark's recall_at_k."""
    from pixprompt.methods import retrieval

    generator = torch.Generator().manual_seed(0)
    images = torch.nn.functional.normalize(torch.randn(40, 8, generator=generator), dim=-1)
    owner = torch.cat([torch.arange(40), torch.randint(0, 40, (150,), generator=generator)])
    texts = torch.nn.functional.normalize(images[owner] + 1.2 * torch.randn(190, 8, generator=generator), dim=-1)
    monkeypatch.setattr(retrieval, "BLOCK_SCORES", 64 * 40)
    ours = assert_recalls_equal_clip_benchmarks(images, texts, owner, batch=32)
    assert 0 < ours["image_retrieval_recall@1"] < ours["image_retrieval_recall@10"] < 1


@pytest.mark.parametrize("block_scores", [7, 1 << 24])
def test_repeated_captions_rank_as_clip_benchmark_breaks_ties(monkeypatch, block_scores):
    """Identical captions (COCO and Flickr repeat some) have identical embeddings, and so do duplicated images:
    CLIP_benchmark's topk breaks those ties, and pixprompt's recalls equal its own, at both ends of the block size."""
    from pixprompt.methods import retrieval

    generator = torch.Generator().manual_seed(3)
    distinct = torch.nn.functional.normalize(torch.randn(30, 8, generator=generator), dim=-1)
    images = distinct[torch.cat([torch.arange(30), torch.arange(10)])]  # ten images appear twice
    owner = torch.randint(0, 40, (120,), generator=generator)
    owner[:40] = torch.arange(40)
    phrases = torch.nn.functional.normalize(torch.randn(6, 8, generator=generator), dim=-1)
    texts = phrases[torch.randint(0, 6, (120,), generator=generator)]  # six captions, each repeated ~20 times
    monkeypatch.setattr(retrieval, "BLOCK_SCORES", block_scores)
    ours = assert_recalls_equal_clip_benchmarks(images, texts, owner, batch=16)
    counted = retrieval_recall_counting_ties_in_favour(images, texts, owner)
    assert counted > ours["text_retrieval_recall@1"]  # the old reading inflated image → text recall here


def assert_recalls_equal_clip_benchmarks(images: torch.Tensor, texts: torch.Tensor, owner: torch.Tensor,
                                         batch: int) -> dict[str, float]:
    """pixprompt's recalls, checked equal to CLIP_benchmark's `recall_at_k` (in its batches) at k = 1, 5, 10."""
    from clip_benchmark.metrics.zeroshot_retrieval import batchify, recall_at_k

    from pixprompt.methods import retrieval

    ours = retrieval.retrieval_metrics(images, texts, owner)
    scores = texts @ images.T
    positive = torch.zeros_like(scores, dtype=torch.bool)
    positive[torch.arange(len(texts)), owner] = True
    for k in (1, 5, 10):
        t2i = (batchify(recall_at_k, scores, positive, batch, "cpu", k=k) > 0).float().mean().item()
        i2t = (batchify(recall_at_k, scores.T, positive.T, batch, "cpu", k=k) > 0).float().mean().item()
        assert ours[f"image_retrieval_recall@{k}"] == pytest.approx(t2i, abs=1e-6), k
        assert ours[f"text_retrieval_recall@{k}"] == pytest.approx(i2t, abs=1e-6), k
    return ours


def retrieval_recall_counting_ties_in_favour(images: torch.Tensor, texts: torch.Tensor, owner: torch.Tensor) -> float:
    """Image → text recall@1 where a tie counts in the image's favour (pixprompt's reading before #34)."""
    scores = (texts @ images.T).T
    best_own = torch.stack([scores[i, owner == i].max() if (owner == i).any() else torch.tensor(-2.0)
                            for i in range(len(images))])
    return float(((scores > best_own[:, None]).sum(dim=1) < 1).double().mean())


def test_a_caption_member_of_absurd_size_is_refused_before_it_is_read(retrieval_wds, tiny_model_dirs, capsys):
    import io
    import tarfile

    from pixprompt.data.sources.webdataset import MAX_CAPTION_BYTES

    root, _ = retrieval_wds
    image = next((root.parent / "images").rglob("*.png")).read_bytes()
    captions = b"a caption\n" * (MAX_CAPTION_BYTES // 10 + 1)
    with tarfile.open(root / "test" / "0.tar", "a") as tar:
        for name, data in (("s9999999.txt", captions), ("s9999999.png", image)):
            member = tarfile.TarInfo(name)
            member.size = len(data)
            tar.addfile(member, io.BytesIO(data))
    code, _, err = run_cli(capsys, "eval", *model_args(tiny_model_dirs["open_clip_clip"]), "--dataset",
                           f"wds:{root}", "--no-cache")
    assert code != 0 and f"s9999999.txt declares {len(captions):,} bytes, more than an image's captions" in err

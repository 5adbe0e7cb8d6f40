"""Hostile and unlucky inputs (#20): crafted webdatasets, planted cache files, files that are not what their
name says, spreadsheet formulas, degenerate calibration sets, crafted records. Each is one clear line, or
handled, never a traceback, a hang or a silent wrong number."""
from __future__ import annotations

import gzip
import io
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch

from bad_inputs import text_named_jpg, write_photos
from cli_runner import model_args, run_cli, strict_json
from fake_datasets import webdataset


def eval_wds(capsys, model_dir: Path, root: Path, *extra) -> tuple[int, str, str]:
    return run_cli(capsys, "eval", *model_args(model_dir), "--dataset", f"wds:{root}", "--templates", "raw",
                   "--json", "--no-cache", *extra)


def _npy_header_claiming(entries: int) -> bytes:
    """A .npy file whose header declares `entries` int64 values and holds none."""
    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(buffer, {"descr": "<i8", "fortran_order": False, "shape": (entries,)})
    return buffer.getvalue()


def _replace_member(root: Path, suffix: str, data: bytes) -> None:
    """Rewrite test/0.tar with every `suffix` member's bytes replaced by `data`."""
    shard = root / "test" / "0.tar"
    with tarfile.open(shard) as tar:
        members = [(m, tar.extractfile(m).read()) for m in tar]
    with tarfile.open(shard, "w") as tar:
        for member, content in members:
            content = data if member.name.endswith(suffix) else content
            member.size = len(content)
            tar.addfile(member, io.BytesIO(content))


def _truncate(root: Path) -> None:
    shard = root / "test" / "0.tar"
    shard.write_bytes(shard.read_bytes()[:1700])


def _gzip(root: Path) -> None:
    shard = root / "test" / "0.tar"
    shard.write_bytes(gzip.compress(shard.read_bytes()))


MUTATIONS = {
    "empty nshards": (lambda root: (root / "test" / "nshards.txt").write_text(""),
                      "should hold the number of shards (1 or more), not ''"),
    "word nshards": (lambda root: (root / "test" / "nshards.txt").write_text("many\n"),
                     "should hold the number of shards (1 or more), not 'many'"),
    "huge nshards": (lambda root: (root / "test" / "nshards.txt").write_text("1000000000\n"),
                     "says 1000000000 shards but"),
    "latin-1 classnames": (lambda root: (root / "classnames.txt").write_bytes("café\nthé\n".encode("latin-1")),
                           "classnames.txt is not UTF-8 text"),
    "negative label": (lambda root: _replace_member(root, ".cls", b"-1"), "a label is -1; labels are class numbers"),
    "word label": (lambda root: _replace_member(root, ".cls", b"cat"), ".cls holds 'cat', not an integer label"),
    "huge cls": (lambda root: _replace_member(root, ".cls", b"1" * 5000), "declares 5,000 bytes, not a label's"),
    "truncated": (_truncate, "truncated"),
    "gzip": (_gzip, "is gzip-compressed"),
    "one class": (lambda root: (root / "classnames.txt").write_text("cat\n"), "has only 1 class (cat)"),
}


@pytest.mark.parametrize("mutation", list(MUTATIONS))
def test_crafted_webdataset_metadata_is_one_clear_line(tiny_model_dirs, tmp_path, capsys, mutation):
    root = webdataset(tmp_path / "wds", ["cat", "dog"], [0, 1, 0, 1])
    change, said = MUTATIONS[mutation]
    change(root)
    code, out, err = eval_wds(capsys, tiny_model_dirs["open_clip_clip"], root)
    assert code in (2, 3) and out == ""
    assert said in err and len(err.strip().splitlines()) == 1, err


def test_an_npy_label_declaring_a_huge_array_is_refused_before_it_is_read(tiny_model_dirs, tmp_path, capsys):
    root = webdataset(tmp_path / "wds", ["cat", "dog"], [(0,), (1,), (0, 1)])
    _replace_member(root, ".npy", _npy_header_claiming(10**11))
    code, _, err = eval_wds(capsys, tiny_model_dirs["open_clip_clip"], root)
    assert code == 3 and "declares a 100000000000 array, not a label vector" in err


def test_an_empty_dataset_type_declares_nothing(tiny_model_dirs, tmp_path, capsys):
    root = webdataset(tmp_path / "wds", ["cat", "dog"], [0, 1, 0, 1])
    (root / "dataset_type.txt").write_text("")
    code, out, err = eval_wds(capsys, tiny_model_dirs["open_clip_clip"], root)
    assert code == 0, err
    assert strict_json(out)[0]["images"] == 4


def test_a_sparse_member_declaring_gigabytes_costs_no_memory(tmp_path):
    """GNU tar's sparse format: a 2 GiB member that is a few KB on disk; the index refuses it by its header."""
    root = webdataset(tmp_path / "wds", ["cat", "dog"], [0, 1])
    work = tmp_path / "sparse"
    work.mkdir()
    with open(work / "s000009.webp", "wb") as hole:
        hole.truncate(2 * 2**30)
    (work / "s000009.cls").write_text("0")
    (root / "test" / "0.tar").unlink()
    subprocess.run(["tar", "-cSf", str(root / "test" / "0.tar"), "-C", str(work), "s000009.webp", "s000009.cls"],
                   check=True)
    assert (root / "test" / "0.tar").stat().st_size < 100_000
    script = ("import resource, sys\nfrom pixprompt.data.datasets import load_dataset\n"
              "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
              "try:\n    load_dataset(sys.argv[1])\nexcept Exception as error:\n    print(error)\n"
              "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before)")
    result = subprocess.run([sys.executable, "-c", script, f"wds:{root}"], capture_output=True, text=True,
                            timeout=120)
    message, grown_kb = result.stdout.strip().splitlines()
    assert "declares 2,147,483,648 bytes as a sparse member, not an image's" in message
    assert int(grown_kb) < 50_000  # peak memory grew by less than 50 MB, not the 2 GiB the header claims


def test_non_images_everywhere_fail_the_run_naming_the_member(tiny_model_dirs, tmp_path, capsys):
    root = webdataset(tmp_path / "wds", ["cat", "dog"], [0, 1, 0, 1])
    _replace_member(root, ".webp", b"this is not a picture")
    code, out, err = eval_wds(capsys, tiny_model_dirs["open_clip_clip"], root)
    assert code == 3 and out == ""
    assert "no image of wds:wds could be read: 4 skipped, e.g. " in err and "0.tar:s000000.webp" in err
    assert "BytesIO" not in err and "object at 0x" not in err
    (tmp_path / "pictures").mkdir()
    rows = ["path,label"] + [f"{text_named_jpg(tmp_path / 'pictures' / f'p{n}').name},{'ab'[n % 2]}" for n in range(4)]
    (tmp_path / "pictures" / "list.csv").write_text("\n".join(rows) + "\n")
    code, out, err = run_cli(capsys, "eval", *model_args(tiny_model_dirs["open_clip_clip"]), "--dataset",
                             f"csv:{tmp_path / 'pictures' / 'list.csv'}", "--templates", "raw", "--no-cache")
    assert code == 3 and "could be read: 4 skipped" in err


# -- the cache and the files it is pointed at --------------------------------------------------------------------
def test_a_fifo_in_the_cache_never_hangs_a_run(tiny_model_dirs, colours, tmp_path):
    cache = tmp_path / "cache"
    command = [sys.executable, "-m", "pixprompt", "eval", *map(str, model_args(tiny_model_dirs["open_clip_clip"])),
               "--dataset", f"folder:{colours}", "--templates", "raw", "--json"]
    env = {**os.environ, "PIXPROMPT_CACHE": str(cache)}
    assert subprocess.run(command, env=env, capture_output=True, timeout=120).returncode == 0
    (chunk,) = cache.rglob("chunk-*.safetensors")
    os.mkfifo(chunk.with_name("chunk-0000planted.safetensors"))
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and "not a regular file" in result.stderr
    assert strict_json(result.stdout)[0]["cached_images"] == 24


def test_a_cached_classifier_without_its_checksum_is_damage(tiny_model_dirs, colours, tmp_path, capsys):
    from safetensors import safe_open
    from safetensors.torch import save_file

    args = ["eval", *model_args(tiny_model_dirs["open_clip_clip"]), "--dataset", f"folder:{colours}",
            "--templates", "raw", "--json", "--cache-dir", tmp_path]
    code, first, _ = run_cli(capsys, *args)
    assert code == 0
    (stored,) = (tmp_path / "classifiers").glob("*.safetensors")
    with safe_open(str(stored), framework="pt") as handle:
        meta = {"pixprompt": handle.metadata()["pixprompt"]}  # the checksum key dropped
        tensors = {key: handle.get_tensor(key) for key in handle.keys()}
    tensors["prompt_class"] = tensors["prompt_class"] + 7  # and classes that do not exist
    save_file(tensors, str(stored), metadata=meta)
    for _ in range(2):  # rebuilt once, then found sound
        code, again, err = run_cli(capsys, *args)
        assert code == 0, err
        assert strict_json(again)[0]["top1"] == strict_json(first)[0]["top1"]
    assert "checksum is missing" not in err


def test_classifier_never_overwrites_a_file_that_is_not_one(tiny_model_dirs, colours, capsys):
    weights = next(Path(tiny_model_dirs["open_clip_clip"]).glob("*.safetensors"))
    before, mode = weights.read_bytes(), weights.stat().st_mode
    code, out, err = run_cli(capsys, "classify", colours, *model_args(tiny_model_dirs["open_clip_clip"]), "--labels",
                             "a,b", "--classifier", weights)
    assert code == 2 and out == ""
    assert "is not a pixprompt classifier file, and pixprompt never overwrites other files" in err
    assert weights.read_bytes() == before and weights.stat().st_mode == mode


# -- spreadsheet-safe CSV -----------------------------------------------------------------------------------------
def test_csv_cells_that_look_like_formulas_are_written_as_text(tiny_model_dirs, tmp_path, capsys):
    folder = tmp_path / "in"
    (photo,) = write_photos(folder, 1, (200, 30, 30), seed=0)
    planted = photo.rename(folder / "=HYPERLINK(1).png")
    labels = "=cmd|' /C calc'!A0,+plus,-minus,@at"
    args = ["classify", planted, *model_args(tiny_model_dirs["open_clip_clip"]), "--labels", labels, "--top-k", "4"]
    code, out, _ = run_cli(capsys, *args, "--csv")
    assert code == 0
    code, _, _ = run_cli(capsys, *args, "--output", tmp_path / "rows.csv", "--quiet")
    assert code == 0
    import csv

    for text in (out, (tmp_path / "rows.csv").read_text()):
        cells = [cell for row in csv.reader(io.StringIO(text)) for cell in row]
        assert not [cell for cell in cells if cell[:1] in ("=", "+", "-", "@", "\t", "\r")], cells
        assert "'+plus" in cells and "'-minus" in cells and "'@at" in cells


# -- calibration that cannot be ------------------------------------------------------------------------------------
def stub_classifier(classes: int):
    from pixprompt.prompts.classifier import ZeroShotClassifier
    from pixprompt.prompts.templates import PromptSet

    return ZeroShotClassifier([f"c{c}" for c in range(classes)], PromptSet("raw", ("{}",)), torch.eye(classes),
                              torch.arange(classes), "stub", logit_scale=1.0)


def test_the_temperature_fit_converges_to_the_reference_minimum():
    from scipy.optimize import minimize_scalar

    from pixprompt.methods.temperature import fit_temperature

    generator = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 5, (400,), generator=generator)
    scores = torch.randn(400, 5, generator=generator, dtype=torch.float64) * 3
    scores[torch.arange(400), labels] += 2.5  # right most of the time, sharply overconfident
    fitted = fit_temperature(stub_classifier(5), scores, labels)

    def nll(log_t: float) -> float:
        return float(torch.nn.functional.cross_entropy(scores / np.exp(log_t), labels))

    reference = minimize_scalar(nll, bounds=(-5, 5), method="bounded", options={"xatol": 1e-12})
    assert fitted == pytest.approx(float(np.exp(reference.x)), rel=1e-6)
    log_t = torch.tensor(np.log(fitted), dtype=torch.float64, requires_grad=True)
    torch.nn.functional.cross_entropy(scores / log_t.exp(), labels).backward()
    assert abs(float(log_t.grad)) < 1e-8


@pytest.mark.parametrize(("case", "said"), [
    ("one image", "has 1 readable image(s)"),
    ("one class", "images of one class only (c0)"),
    ("separable", "ranks every one of the 40 calibration images right"),
])
def test_calibration_sets_that_cannot_calibrate_are_refused_with_the_reason(case, said):
    from pixprompt.errors import UsageError
    from pixprompt.methods.temperature import fit_temperature

    labels = {"one image": torch.tensor([1]), "one class": torch.zeros(40, dtype=torch.long),
              "separable": torch.arange(40) % 3}[case]
    scores = torch.nn.functional.one_hot(labels, 3).double() * 5 + 0.01 * torch.arange(3)
    with pytest.raises(UsageError, match=said.replace("(", r"\(").replace(")", r"\)")):
        fit_temperature(stub_classifier(3), scores, labels)


def test_a_one_image_calibration_set_is_refused_on_the_command_line(tiny_model_dirs, colours, tmp_path, capsys):
    single = tmp_path / "single"
    for name in ("red", "blue"):
        (single / name).mkdir(parents=True)
    os.link(next((colours / "red").iterdir()), single / "red" / "only.png")
    code, out, err = run_cli(capsys, "eval", *model_args(tiny_model_dirs["open_clip_clip"]), "--dataset",
                             f"folder:{colours}", "--templates", "raw", "--calibrate", f"folder:{single}")
    assert code == 2 and out == "" and "has 1 readable image(s)" in err


# -- QuickGELU through the offline path --------------------------------------------------------------------------
def test_the_offline_hint_names_the_quickgelu_config_for_openai_weights():
    from pixprompt.models.offline import offline_hint

    hint = offline_hint("open_clip", "ViT-B-32", "openai", None)
    assert "--model ViT-B-32-quickgelu --pretrained /path/open_clip_pytorch_model.bin" in hint
    assert "QuickGELU: how the openai weights were trained" in hint and max(map(len, hint.splitlines())) < 200
    assert "--model ViT-B-32 --pretrained" in offline_hint("open_clip", "ViT-B-32", "laion2b_s34b_b79k", None)


def test_every_record_says_whether_quickgelu_was_used(tiny_model_dirs, colours, capsys):
    code, out, _ = run_cli(capsys, "eval", *model_args(tiny_model_dirs["open_clip_clip"]), "--dataset",
                           f"folder:{colours}", "--templates", "raw", "--json")
    assert code == 0 and strict_json(out)[0]["quick_gelu"] is False


# -- round trips and crafted records -------------------------------------------------------------------------------
def test_a_template_starting_with_a_hash_survives_a_template_file(tmp_path):
    from pixprompt.prompts.templates import resolve_templates, template_file_text

    templates = ["# {} in a hashtag", "\\ {} after a backslash", "a photo of a {}."]
    path = tmp_path / "chosen.txt"
    path.write_text(template_file_text(templates, "chosen by a test"))
    assert list(resolve_templates(str(path))[0].templates) == templates


@pytest.mark.parametrize("records", [[{"model": "m", "top1": 0.5}],
                                     [{"model": "m", "dataset": "d", "top1": "50%"}],
                                     [{"model": ["m"], "dataset": "d", "top1": 0.5}]])
def test_report_on_crafted_records_is_one_line_and_writes_nothing(tmp_path, capsys, records):
    path = tmp_path / "records.json"
    path.write_text(json.dumps(records))
    code, _, err = run_cli(capsys, "report", path, "--output", tmp_path / "report.html")
    assert code == 2 and "is not one pixprompt wrote" in err and len(err.strip().splitlines()) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["records.json"]



# -- memory amplification ----------------------------------------------------------------------------------------
def test_a_one_pixel_wide_strip_costs_a_small_multiple_of_its_decoded_size(tiny_model_dirs, tmp_path):
    """A 60 KB PNG of 1×16,000,000 pixels (a quarter of the default pixel budget, which 1×64,000,000 also fits):
    classify's peak memory grows by at most 5× its 46 MB of RGB (Pillow keeps 12 bytes per pixel of such a strip,
    one copy; three copies, 36 bytes per pixel, before the fix)."""
    from PIL import Image

    pixels = 16_000_000
    strip = tmp_path / "strip.png"
    Image.new("RGB", (1, pixels), (10, 200, 30)).save(strip)
    script = ("import resource, sys\nfrom pathlib import Path\nfrom pixprompt import load_model\n"
              "from pixprompt.evaluation.predict import classify\nfrom pixprompt.prompts import build_classifier, "
              "resolve_templates\nmodel = load_model(sys.argv[1], device='cpu')\n"
              "classifier = build_classifier(model, ['a', 'b'], resolve_templates('raw')[0])\n"
              "classify(model, classifier, [Path(sys.argv[2])], workers=0, cache_root=None)\n"
              "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
              "(row,) = classify(model, classifier, [Path(sys.argv[3])], workers=0, cache_root=None)\n"
              "print(row.error, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before)")
    small = write_photos(tmp_path / "small", 1, (30, 30, 30), seed=0)[0]
    result = subprocess.run([sys.executable, "-c", script, str(tiny_model_dirs["open_clip_clip"]), str(small),
                             str(strip)], capture_output=True, text=True, timeout=300)
    error, grown_kb = result.stdout.split()
    assert error == "None", result.stderr
    assert int(grown_kb) * 1024 < 5 * 3 * pixels


def test_concurrent_web_decodes_share_one_memory_budget():
    import threading
    import time

    from pixprompt.web.app import MemoryBudget

    budget, held, peak = MemoryBudget(100), [0], [0]
    lock = threading.Lock()

    def decode(amount: int) -> None:
        with budget.hold(amount):
            with lock:
                held[0] += min(amount, 100)
                peak[0] = max(peak[0], held[0])
            time.sleep(0.05)
            with lock:
                held[0] -= min(amount, 100)

    threads = [threading.Thread(target=decode, args=(amount,)) for amount in (60, 60, 250, 30, 40, 30)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert peak[0] <= 100 and budget.free == 100  # never more than the budget at once; an oversized image ran alone


def test_a_checkpoint_file_gets_a_note_on_how_the_activation_was_chosen(tmp_path):
    from pixprompt.models.open_clip_backend import activation_note

    checkpoint = tmp_path / "open_clip_pytorch_model.bin"
    checkpoint.write_bytes(b"weights")
    note = activation_note("ViT-B-32", str(checkpoint))
    assert "built with GELU" in note and "need QuickGELU: --model ViT-B-32-quickgelu" in note
    assert activation_note("ViT-B-32-quickgelu", str(checkpoint)) is None  # the name already says it
    assert activation_note("ViT-B-32", "openai") is None  # a tag's own metadata decides

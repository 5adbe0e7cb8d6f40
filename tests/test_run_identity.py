"""One run identity across ranks (#34 part 1): two real torchrun nodes that differ in one setting that shapes a row
are stopped before any work, with one line naming the setting and the rank; records carry the run's digest."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from cli_runner import eval_args, model_args, run_cli, strict_json
from launching import finished, free_port, launch_env, torchrun


def retrained(model_dir: Path, target: Path) -> Path:
    """A copy of a tiny open_clip model folder with other weights of the same architecture and file size."""
    shutil.copytree(model_dir, target)
    weights = target / "open_clip_model.safetensors"
    tensors = load_file(str(weights))
    name = next(name for name, tensor in tensors.items() if tensor.is_floating_point() and tensor.numel() > 8)
    tensors[name] = tensors[name] + 0.5
    save_file(tensors, str(weights))
    return target


def two_nodes(tmp_path: Path, args: list[list], cwd: list[Path] | None = None) -> tuple[tuple, tuple]:
    port = free_port()
    nodes = [torchrun(args[n], launch_env(tmp_path / f"cache{n}"), nproc=1, node=(n, 2, port),
                      cwd=cwd[n] if cwd else None) for n in (0, 1)]
    return finished(nodes[0]), finished(nodes[1])


@pytest.mark.parametrize(("extra", "said"), [
    (["--max-pixels", "10M"],
     "rank 1 of 2 runs with another --max-pixels than rank 0 ('10000000' there, '64000000' on rank 0)"),
    (["--draft-jpeg"], "another --draft-jpeg than rank 0 ('True' there, 'False' on rank 0)"),
    (["--precision", "bf16"], "another --precision than rank 0 ('bf16' there, 'auto' on rank 0)"),
])
def test_ranks_with_another_image_option_are_refused_before_any_work(tiny_model_dirs, colours, tmp_path, extra,
                                                                     said):
    base = eval_args(tiny_model_dirs["open_clip_clip"], colours)
    (code0, out0, err0), (code1, out1, _) = two_nodes(tmp_path, [base, [*base, *extra]])
    assert code0 != 0 and code1 != 0 and out0 == out1 == ""
    lines = [line for line in err0.splitlines() if line.startswith(("pixprompt:", "pixprompt ["))]
    assert len(lines) == 1 and said in lines[0] and "nothing was written" in lines[0], err0
    assert not list((tmp_path / "cache0").rglob("chunk-*")) and not list((tmp_path / "cache1").rglob("chunk-*"))


def test_ranks_that_load_other_weights_under_the_same_name_are_refused(tiny_model_dirs, colours, tmp_path):
    folders = [tmp_path / "node0", tmp_path / "node1"]
    shutil.copytree(tiny_model_dirs["open_clip_clip"], folders[0] / "model")
    retrained(tiny_model_dirs["open_clip_clip"], folders[1] / "model")
    args = ["eval", *model_args("model"), "--dataset", f"folder:{colours}", "--templates", "raw", "--json"]
    (code0, out0, err0), (code1, _, _) = two_nodes(tmp_path, [args, args], cwd=folders)
    assert code0 != 0 and code1 != 0 and out0 == ""
    assert "rank 1 of 2 runs with another weights than rank 0" in err0, err0


def test_ranks_whose_label_files_differ_in_content_are_refused(tiny_model_dirs, colours, tmp_path):
    folders = [tmp_path / "node0", tmp_path / "node1"]
    for folder, labels in zip(folders, ("red\ngreen\nblue\n", "red\ngreen\ncyan\n")):
        folder.mkdir()
        (folder / "labels.txt").write_text(labels)
    args = ["classify", str(colours), *model_args(tiny_model_dirs["open_clip_clip"]), "--labels-file", "labels.txt",
            "--output", "preds.jsonl"]
    (code0, _, err0), (code1, _, _) = two_nodes(tmp_path, [args, args], cwd=folders)
    assert code0 != 0 and code1 != 0
    assert "runs with another content of labels.txt than rank 0" in err0, err0
    assert not (folders[0] / "preds.jsonl").exists()


def test_records_carry_a_digest_of_what_shaped_them(tiny_model_dirs, colours, tmp_path, capsys):
    model = tiny_model_dirs["open_clip_clip"]
    runs = {}
    for name, extra in (("plain", []), ("again", []), ("draft", ["--draft-jpeg"]), ("fewer", ["--max-pixels", "1M"])):
        code, out, _ = run_cli(capsys, *eval_args(model, colours, "--cache-dir", tmp_path, *extra))
        assert code == 0
        runs[name] = strict_json(out)[0]["run_digest"]
    assert runs["plain"] == runs["again"]
    assert len({runs["plain"], runs["draft"], runs["fewer"]}) == 3
    other = retrained(model, tmp_path / "other-weights")
    code, out, _ = run_cli(capsys, *eval_args(other, colours, "--no-cache"))
    assert code == 0 and strict_json(out)[0]["run_digest"] != runs["plain"]


def test_the_weights_fingerprint_sees_changed_values(loaded_models):
    from pixprompt.models.base import module_fingerprint

    module = torch.nn.Linear(300, 300)
    before = module_fingerprint(module)
    with torch.no_grad():
        module.weight.view(-1)[0] += 1e-3
    assert module_fingerprint(module) != before
    assert loaded_models["open_clip_clip"].weights_fingerprint == loaded_models["open_clip_clip"].weights_fingerprint

"""`pixprompt select-templates`: greedy forward selection on a case whose best subset is known, and the CLI."""
from __future__ import annotations

import json

import torch

from cli_runner import model_args, run_cli
from pixprompt.methods.template_selection import forward_selection


def known_case() -> tuple[torch.Tensor, list[str], torch.Tensor, torch.Tensor]:
    """Two classes along x and y; images lean a little towards the other axis. Template `a` rotates both classes
    the wrong way for class 0's images, `b` for class 1's, `noise` points nowhere useful: `a` alone gets class 1
    right, `b` alone class 0, a + b averages the rotations away and gets everything; `noise` only hurts."""
    def unit(*v):
        return torch.nn.functional.normalize(torch.tensor(v, dtype=torch.float32), dim=0)

    per_template = torch.stack([
        torch.stack([unit(1.0, 0.9, 0), unit(0.0, 1, 0)]),      # a: class 0 tilted towards y
        torch.stack([unit(1.0, 0, 0), unit(0.9, 1.0, 0)]),      # b: class 1 tilted towards x
        torch.stack([unit(0.0, 0, 1), unit(0.1, 0.1, 1)]),      # noise
    ])
    features = torch.stack([unit(1, 0.55, 0.1), unit(1, 0.5, 0), unit(0.55, 1, 0.1), unit(0.5, 1, 0)])
    labels = torch.tensor([0, 0, 1, 1])
    return per_template, ["a", "b", "noise"], features, labels


def test_forward_selection_finds_the_known_best_pair_and_stops():
    per_template, names, features, labels = known_case()
    path = forward_selection(per_template, names, features, labels)
    assert [step.template for step in path] == ["a", "b"]
    assert [step.accuracy for step in path] == [0.5, 1.0]


def test_select_templates_cli_writes_a_usable_file_and_compares_on_held_out(tiny_model_dirs, colours, tmp_path,
                                                                           capsys):
    held_out = tmp_path / "held"
    held_out.mkdir()
    for name in ("red", "green", "blue"):
        (held_out / name).symlink_to(colours / name)
    chosen = tmp_path / "chosen.txt"
    code, out, err = run_cli(capsys, "select-templates", *model_args(tiny_model_dirs["open_clip_clip"]),
                             "--dataset", f"folder:{colours}", "--candidates", "clip7", "--eval-dataset",
                             f"folder:{held_out}", "--output", chosen, "--report", tmp_path / "selection.html")
    assert code == 0, err
    assert "forward selection from clip7" in out and "chosen set against all candidates" in out
    lines = [line for line in chosen.read_text().splitlines() if not line.startswith("#")]
    assert lines and set(lines) <= set(__import__("pixprompt").resolve_templates("clip7")[0].templates)
    code, out, _ = run_cli(capsys, "eval", *model_args(tiny_model_dirs["open_clip_clip"]), "--dataset",
                           f"folder:{colours}", "--templates", chosen, "--json")
    assert code == 0 and json.loads(out)[0]["num_prompts"] == 3 * len(lines)
    assert (tmp_path / "selection_figures" / "selection-0.png").exists()


def test_selecting_on_the_test_set_is_refused_unless_allowed(tiny_model_dirs, colours, capsys):
    args = ["select-templates", *model_args(tiny_model_dirs["open_clip_clip"]), "--dataset", f"folder:{colours}",
            "--candidates", "clip7", "--eval-dataset", f"folder:{colours}/../colours"]
    code, _, err = run_cli(capsys, *args)
    assert code != 0 and "overstates" in err and "--allow-test-selection" in err
    code, out, _ = run_cli(capsys, *args, "--allow-test-selection", "--json")
    record = json.loads(out)[0]
    assert code == 0 and record["held_out_dataset"] == record["dataset"]
    assert record["comparison"][0]["held-out %"] == record["comparison"][0]["selection set %"]

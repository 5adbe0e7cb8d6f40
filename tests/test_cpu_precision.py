"""The CPU's bf16 roof (#40): `auto` takes bf16 where the CPU has bf16 matrix units and a probe at load keeps fp32's
answers, says so in every record, and falls back to fp32 with one line where the probe does not agree."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from cli_runner import eval_args, model_args, run_cli, strict_json


def cpu_flags() -> set[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    return {word for line in text.splitlines() if line.startswith("flags") for word in line.split(":", 1)[1].split()}


@pytest.mark.parametrize(("switch", "expected"), [("auto", None), ("off", "fp32"), ("on", "bf16")])
def test_auto_reads_the_cpus_bf16_units(monkeypatch, switch, expected):
    from pixprompt.models.device import choose_precision

    monkeypatch.setenv("PIXPROMPT_CPU_BF16", switch)
    has_units = bool({"amx_bf16", "avx512_bf16"} & cpu_flags())
    precision, reason = choose_precision(None, torch.device("cpu"))
    assert precision == (expected or ("bf16" if has_units else "fp32"))
    assert ("has bf16 matrix units" in reason) == (precision == "bf16")
    assert switch != "off" or not has_units or reason == "auto: fp32 (PIXPROMPT_CPU_BF16=off)"
    assert choose_precision("fp32", torch.device("cpu")) == ("fp32", "asked for (--precision fp32)")
    assert choose_precision(None, torch.device("cuda"))[0] == "fp16"


def test_a_bad_switch_is_one_usage_line(monkeypatch):
    from pixprompt.errors import UsageError
    from pixprompt.models.device import choose_precision

    monkeypatch.setenv("PIXPROMPT_CPU_BF16", "sometimes")
    with pytest.raises(UsageError, match="PIXPROMPT_CPU_BF16='sometimes': use auto, on or off"):
        choose_precision(None, torch.device("cpu"))


def test_auto_keeps_bf16_where_the_probe_agrees_and_records_why(tiny_model_dirs, colours, tmp_path, capsys,
                                                                  monkeypatch):
    monkeypatch.setenv("PIXPROMPT_CPU_BF16", "on")
    model = tiny_model_dirs["transformers_clip"]  # its probe agrees (least cosine 0.99997 here)
    code, out, err = run_cli(capsys, *eval_args(model, colours, "--cache-dir", tmp_path, "--templates", "standard"))
    assert code == 0 and "is not kept" not in err, err
    (bf16,) = strict_json(out)
    assert bf16["precision"] == "bf16" and "least cosine to fp32 0.9999" in bf16["precision_reason"]
    code, out, _ = run_cli(capsys, *eval_args(model, colours, "--cache-dir", tmp_path, "--templates", "standard",
                                              "--precision", "fp32"))
    (fp32,) = strict_json(out)
    assert fp32["precision"] == "fp32" and fp32["precision_reason"] == "asked for (--precision fp32)"
    assert fp32["encoded_images"] == 24  # features of another precision are never reused
    assert fp32["run_digest"] != bf16["run_digest"]
    assert abs(fp32["top1"] - bf16["top1"]) <= 1 / 24  # at most one image of 24 answered otherwise


def test_auto_falls_back_to_fp32_in_one_line_where_bf16_does_not_hold(tiny_model_dirs, colours, capsys,
                                                                       monkeypatch):
    monkeypatch.setenv("PIXPROMPT_CPU_BF16", "on")
    model = tiny_model_dirs["open_clip_siglip"]  # open_clip's own bf16 cast cannot run on its text projection
    code, out, err = run_cli(capsys, *eval_args(model, colours, "--no-cache"))
    warnings = [line for line in err.splitlines() if "is not kept" in line]
    assert code == 0 and len(warnings) == 1, err
    assert "it runs in fp32 (--precision bf16 forces bf16)" in warnings[0]
    (record,) = strict_json(out)
    assert record["precision"] == "fp32" and record["precision_reason"].startswith("auto: bf16 failed the check")


def test_off_keeps_the_old_fp32_path_without_a_probe(tiny_model_dirs, colours, capsys, monkeypatch):
    monkeypatch.setenv("PIXPROMPT_CPU_BF16", "off")
    code, out, err = run_cli(capsys, "classify", colours / "red", *model_args(tiny_model_dirs["open_clip_clip"]),
                             "--labels", "red,blue", "--no-cache", "--json")
    assert code == 0 and "probe" not in err
    from pixprompt import load_model

    loaded = load_model(str(tiny_model_dirs["open_clip_clip"]), device="cpu")
    assert loaded.dtype == torch.float32 and loaded.precision_reason.startswith("auto: ")

"""The completion model's architecture: Depth Anything V2 turned into Prompt Depth Anything with a
prompt branch that adds nothing until trained (model.prompt)."""

from __future__ import annotations

import pytest
import torch

from depth_lora.errors import ConfigError, ModelError
from depth_lora.model.checkpoints import build_model
from depth_lora.model.heads import PromptHeadInFp32
from depth_lora.model.prompt import (
    PROMPT_MODEL_ALIASES,
    build_completer,
    completed_depth,
    is_prompt_model,
    start_residual_head,
    to_prompt_model,
)


def _inputs(seed: int = 0, batch: int = 2, hw=(126, 196)):
    g = torch.Generator().manual_seed(seed)
    pixels = torch.randn(batch, 3, *hw, generator=g)
    # A prompt at a quarter of the input size, in mm, over a bin's range.
    prompt = 400.0 + 600.0 * torch.rand(batch, 1, hw[0] // 4, hw[1] // 4, generator=g)
    return pixels, prompt


@pytest.mark.parametrize("base", ["tiny", "demo-pretrained"])
def test_converted_model_without_prompt_outputs_exactly_what_its_base_outputs(base):
    model, _ = build_model(base)
    completer, info = build_completer(base)
    assert is_prompt_model(completer) and not is_prompt_model(model)
    assert info["converted_from"] == base
    pixels, _ = _inputs()
    with torch.no_grad():
        expected = model(pixel_values=pixels).predicted_depth
        got = completer(pixel_values=pixels).predicted_depth
    assert torch.equal(got, expected)


def test_fresh_prompt_branch_adds_nothing_so_a_prompt_only_sets_the_output_range():
    model, _ = build_model("demo-pretrained")
    completer = to_prompt_model(model)
    pixels, prompt = _inputs(1)
    with torch.no_grad():
        base = model(pixel_values=pixels).predicted_depth
        got = completer(pixel_values=pixels, prompt_depth=prompt).predicted_depth
    lo, hi = prompt.amin(dim=(1, 2, 3)), prompt.amax(dim=(1, 2, 3))
    expected = base * (hi - lo)[:, None, None] + lo[:, None, None]
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-3)


def test_every_prompt_branch_weight_is_trainable_from_the_start():
    completer, _ = build_completer("tiny")
    pixels, prompt = _inputs(2)
    completer.train()
    completer(pixel_values=pixels, prompt_depth=prompt).predicted_depth.mean().backward()
    branch = {n: p for n, p in completer.named_parameters() if ".prompt_depth_layer." in n}
    assert len(branch) == 4 * 6  # 4 fusion layers x 3 convolutions x (weight, bias)
    last = {n: p for n, p in branch.items() if "convolution3" in n}
    # Zero-initialised, yet its gradient is not zero: the branch can learn (ControlNet's zero conv).
    assert all(torch.count_nonzero(p) == 0 for p in last.values())
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in last.values())


def test_completer_saves_and_reloads_as_a_prompt_model(tmp_path):
    completer, _ = build_completer("demo-pretrained")
    completer.save_pretrained(tmp_path / "completer")
    reloaded, info = build_completer(str(tmp_path / "completer"))
    assert is_prompt_model(reloaded) and "converted_from" not in info
    assert isinstance(reloaded.head, PromptHeadInFp32)
    pixels, prompt = _inputs(3)
    with torch.no_grad():
        a = completer(pixel_values=pixels, prompt_depth=prompt).predicted_depth
        b = reloaded(pixel_values=pixels, prompt_depth=prompt).predicted_depth
    assert torch.equal(a, b)


def test_head_runs_in_fp32_under_bf16_autocast():
    completer, _ = build_completer("tiny")
    pixels, prompt = _inputs(4)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        out = completer(pixel_values=pixels, prompt_depth=prompt).predicted_depth
    assert out.dtype == torch.float32


def test_a_monocular_run_refuses_a_prompt_checkpoint_in_one_line(tmp_path):
    completer, _ = build_completer("tiny")
    completer.save_pretrained(tmp_path / "completer")
    with pytest.raises(ModelError, match="Prompt Depth Anything model .*--task complete") as excinfo:
        build_model(str(tmp_path / "completer"))
    assert "\n" not in str(excinfo.value)


def test_a_metric_base_cannot_become_a_completer():
    with pytest.raises(ConfigError, match="relative Depth Anything V2 checkpoint"):
        build_completer("tiny-metric")


def test_prompt_small_offline_says_what_to_do(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    hub_id = PROMPT_MODEL_ALIASES["prompt-small"]
    with pytest.raises(ModelError, match=f"hf download {hub_id} --local-dir DIR") as excinfo:
        build_completer("prompt-small")
    assert "\n" not in str(excinfo.value)


def test_a_residual_head_starts_the_completion_at_exactly_the_prompt():
    completer, _ = build_completer("tiny")
    start_residual_head(completer)
    pixels, prompt = _inputs(5)
    with torch.no_grad():
        out = completer(pixel_values=pixels, prompt_depth=prompt).predicted_depth
    expected = torch.nn.functional.interpolate(prompt, size=out.shape[-2:], mode="bilinear",
                                               align_corners=False)[:, 0]
    torch.testing.assert_close(completed_depth(out, prompt), expected, rtol=0, atol=1e-3)
    assert torch.equal(completed_depth(out, prompt, "direct"), out)
    with pytest.raises(ConfigError, match="completion output must be one of residual, direct"):
        completed_depth(out, prompt, "sideways")

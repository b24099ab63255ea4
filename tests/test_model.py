"""Model building (random-init, folders, hub ids) and LoRA wrapping."""

from __future__ import annotations

import http.server
import importlib.util
import os
import socket
import sys
import threading
from pathlib import Path

import huggingface_hub.constants
import numpy as np
import pytest
import torch
from peft import LoraConfig, get_peft_model
from torch import nn
from transformers import DepthAnythingConfig, DepthAnythingForDepthEstimation

from depth_lora.errors import ConfigError, ModelError
from depth_lora.model.checkpoints import RANDOM_INIT_OUTPUT, build_model, hub_is_reachable
from depth_lora.model.choices import DEFAULT_MODEL
from depth_lora.model.lora import apply_lora, lora_summary, resolve_lora_targets, trainable_parameters_line

# PEFT calls a transformers method that transformers 5.x deprecates; not ours to fix.
pytestmark = pytest.mark.filterwarnings("ignore:`is_gradient_checkpointing`:FutureWarning")

SMALL_LINE = "trainable params: 442,368 || all params: 25,227,457 || trainable%: 1.7535"


@pytest.fixture(scope="module")
def small_random():
    return build_model("small-random")


@pytest.fixture
def tiny():
    model, _ = build_model("tiny")
    return model


def _n_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


# --- random-init models ------------------------------------------------------------------



@pytest.fixture
def connections(monkeypatch) -> list:
    """Every TCP connection the code under test attempts, as (host, port), refused or not."""
    attempts = []
    connect = socket.socket.connect

    def counting_connect(sock, address):
        if sock.family in (socket.AF_INET, socket.AF_INET6):
            attempts.append(tuple(address[:2]))
        return connect(sock, address)

    monkeypatch.setattr(socket.socket, "connect", counting_connect)
    return attempts


def test_small_random_has_the_depth_anything_v2_small_architecture(small_random):
    model, info = small_random
    assert _n_params(model) == 24_785_089
    assert info["num_parameters"] == 24_785_089
    assert info["pretrained"] is False
    assert info["config"]["backbone_config"]["hidden_size"] == 384
    assert info["config"]["neck_hidden_sizes"] == [48, 96, 192, 384]
    assert model.backbone.config._attn_implementation == "sdpa"


def test_small_random_with_default_lora_prints_the_notebook_line(small_random):
    model, _ = small_random
    targets = resolve_lora_targets(model)
    assert len(targets) == 36  # 12 layers x q, k, v
    peft_model = apply_lora(model)
    try:
        assert trainable_parameters_line(peft_model) == SMALL_LINE
    finally:
        peft_model.unload()  # give the shared fixture back without adapters


def test_trainable_parameters_line_matches_peft_print(tiny, capsys):
    peft_model = apply_lora(tiny, rank=4)
    peft_model.print_trainable_parameters()
    assert trainable_parameters_line(peft_model) == capsys.readouterr().out.strip()


def test_tiny_builds_offline_and_outputs_the_middle_of_the_label_range(connections):
    model, info = build_model("tiny")
    assert connections == []  # built from a config: nothing is fetched
    assert info["pretrained"] is False and info["source"] == "random"
    assert info["head_bias_init"] == pytest.approx(RANDOM_INIT_OUTPUT)
    assert 400_000 < info["num_parameters"] < 700_000
    with torch.no_grad():
        depth = model(pixel_values=torch.randn(2, 3, 126, 196)).predicted_depth
    assert depth.shape == (2, 126, 196)
    # Without the head bias a random-init model outputs ~1e-7 and ReLU kills its gradients.
    assert depth.mean().item() == pytest.approx(RANDOM_INIT_OUTPUT, abs=0.05)


def test_tiny_is_reproducible_from_its_seed_and_restores_the_rng():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    a, info = build_model("tiny", seed=7)
    assert torch.equal(torch.rand(3), expected)  # global RNG untouched
    b, _ = build_model("tiny", seed=7)
    c, _ = build_model("tiny", seed=8)
    for (name, pa), pb, _pc in zip(
        a.state_dict().items(), b.state_dict().values(), c.state_dict().values(), strict=True
    ):
        assert torch.equal(pa, pb), name
    assert not torch.equal(a.backbone.embeddings.cls_token, c.backbone.embeddings.cls_token)
    assert info["seed"] == 7
    rebuilt = DepthAnythingForDepthEstimation(DepthAnythingConfig.from_dict(info["config"]))
    assert _n_params(rebuilt) == _n_params(a)


def test_tiny_training_step_updates_only_lora_and_head(tiny):
    peft_model = apply_lora(tiny, rank=4, train_head=True)
    before = {n: p.detach().clone() for n, p in peft_model.named_parameters()}
    optimizer = torch.optim.AdamW([p for p in peft_model.parameters() if p.requires_grad], lr=1e-2)
    peft_model.train()
    x, y = torch.randn(2, 3, 126, 196), torch.rand(2, 126, 196)
    for _ in range(2):  # lora_A only moves once lora_B is non-zero
        loss = ((peft_model(pixel_values=x).predicted_depth - y) ** 2).mean()
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    for name, p in peft_model.named_parameters():
        changed = not torch.equal(p.detach(), before[name])
        assert changed == p.requires_grad, name
        assert p.requires_grad == ("lora_" in name or ".modules_to_save." in name), name


def test_attention_implementation_is_set_on_the_backbone():
    model, info = build_model("tiny", attn_implementation="eager")
    assert model.backbone.config._attn_implementation == "eager"
    assert info["attn_implementation"] == "eager"
    with pytest.raises(ConfigError, match="attn_implementation must be one of"):
        build_model("tiny", attn_implementation="fastest")


def test_unavailable_attention_falls_back_to_eager():
    if importlib.util.find_spec("flash_attn") is not None:
        pytest.skip("flash_attn is installed here")
    _, info = build_model("tiny", attn_implementation="flash_attention_2")
    assert info["attn_implementation"] == "eager"


# --- folders and hub ids -------------------------------------------------------------------


def test_local_folder_round_trip_keeps_weights_and_sets_attention(tiny, tmp_path):
    with torch.no_grad():
        tiny.head.conv3.bias.fill_(0.123)  # a pretrained head must be left alone
    tiny.save_pretrained(tmp_path)
    for impl in ("sdpa", "eager"):
        model, info = build_model(str(tmp_path), attn_implementation=impl)
        assert info["pretrained"] is True and info["source"] == "folder"
        assert model.backbone.config._attn_implementation == impl
        assert model.head.conv3.bias.item() == pytest.approx(0.123)
        for (name, a), b in zip(
            tiny.state_dict().items(), model.state_dict().values(), strict=True
        ):
            assert torch.equal(a, b), name


def test_cached_hub_id_loads_from_the_cache_without_network(tiny, tmp_path, monkeypatch):
    # The layout hf download leaves in the cache: models--org--name/{refs/main, snapshots/REV}.
    repo = tmp_path / "models--someone--tiny-da"
    revision = "0" * 40
    tiny.save_pretrained(repo / "snapshots" / revision)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(revision)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    model, info = build_model("someone/tiny-da")
    assert info["pretrained"] is True and info["source"] == "hub"
    assert torch.equal(model.head.conv3.bias, tiny.head.conv3.bias)


def test_missing_or_unusable_folder_is_named_in_the_error(tmp_path):
    with pytest.raises(ModelError, match="model folder not found: ./no/such/model"):
        build_model("./no/such/model")
    with pytest.raises(ModelError, match=f"{tmp_path}: no config.json"):
        build_model(str(tmp_path))
    (tmp_path / "adapter_config.json").write_text("{}")
    with pytest.raises(ModelError, match="LoRA adapter, not a model"):
        build_model(str(tmp_path))


def test_uncached_hub_id_offline_fails_at_once_with_what_to_do(monkeypatch, connections):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelError) as excinfo:
        build_model(DEFAULT_MODEL)
    assert connections == []  # offline means no attempt at all, so no retries to wait for
    message = str(excinfo.value)
    assert "\n" not in message
    assert "cannot be reached (HF_HUB_OFFLINE is set)" in message
    assert f"hf download {DEFAULT_MODEL} --local-dir DIR" in message
    assert "'demo-pretrained'" in message


def test_uncached_hub_id_with_unreachable_endpoint_fails_after_one_attempt(monkeypatch, connections):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # discard port: refused
    with pytest.raises(ModelError, match=r"hub \(http://127.0.0.1:9\) cannot be reached"):
        build_model("someone/not-a-cached-model")
    # One short probe, no retries (huggingface_hub's own retries take ~49 s here: FACTS.md).
    assert connections == [("127.0.0.1", 9)]


def test_hub_probe_counts_any_http_answer_and_respects_offline(monkeypatch):
    server = http.server.HTTPServer(("127.0.0.1", 0), http.server.BaseHTTPRequestHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
        monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
        monkeypatch.setenv("NO_PROXY", "127.0.0.1")
        monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{server.server_port}")
        assert hub_is_reachable(timeout_s=3.0) is True  # answers 501: reachable
        monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
        assert hub_is_reachable(timeout_s=3.0) is False
    finally:
        server.shutdown()
        server.server_close()


# --- LoRA targets ----------------------------------------------------------------------------


class _SelfAttention4x(nn.Module):
    def __init__(self, d):
        super().__init__()
        self.query, self.key, self.value = nn.Linear(d, d), nn.Linear(d, d), nn.Linear(d, d)


class _SelfOutput4x(nn.Module):
    def __init__(self, d):
        super().__init__()
        self.dense = nn.Linear(d, d)


class _Attention4x(nn.Module):
    def __init__(self, d):
        super().__init__()
        self.attention, self.output = _SelfAttention4x(d), _SelfOutput4x(d)


class _Mlp(nn.Module):
    def __init__(self, d):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(d, 2 * d), nn.Linear(2 * d, d)


class _Layer4x(nn.Module):
    def __init__(self, d, mlp=True):
        super().__init__()
        self.norm1 = nn.LayerNorm(d)
        self.attention = _Attention4x(d)
        if mlp:
            self.mlp = _Mlp(d)


class _Model4x(nn.Module):
    """The module tree of a transformers 4.x Depth Anything, with decoys outside the backbone."""

    def __init__(self, d=8, layers=2, mlp=True):
        super().__init__()
        self.backbone = nn.Module()
        self.backbone.encoder = nn.Module()
        self.backbone.encoder.layer = nn.ModuleList(_Layer4x(d, mlp) for _ in range(layers))
        self.neck = nn.ModuleDict({"query": nn.Linear(d, d), "attention": _Attention4x(d)})
        self.head = nn.Sequential(nn.Linear(d, 1))


def test_targets_on_transformers_4x_names():
    model = _Model4x()
    layer = "backbone.encoder.layer"
    assert resolve_lora_targets(model) == [
        f"{layer}.{i}.attention.attention.{n}" for i in range(2) for n in ("query", "key", "value")
    ]
    assert resolve_lora_targets(model, ("out",)) == [
        f"{layer}.0.attention.output.dense",
        f"{layer}.1.attention.output.dense",
    ]
    assert resolve_lora_targets(model, ("mlp",)) == [
        f"{layer}.{i}.mlp.{n}" for i in range(2) for n in ("fc1", "fc2")
    ]
    # PEFT accepts the names and adapts exactly those layers, not the decoys in the neck.
    names = resolve_lora_targets(model, ("qkv", "out", "mlp"))
    peft_model = get_peft_model(model, LoraConfig(r=2, target_modules=names))
    adapted = [n for n, m in peft_model.named_modules() if hasattr(m, "lora_A")]
    assert len(adapted) == 12
    assert all(".backbone." in n for n in adapted)


def test_targets_on_the_installed_transformers_names(tiny):
    layer = "backbone.encoder.layer"
    assert resolve_lora_targets(tiny) == [
        f"{layer}.{i}.attention.{n}" for i in range(4) for n in ("q_proj", "k_proj", "v_proj")
    ]
    assert resolve_lora_targets(tiny, "out") == [f"{layer}.{i}.attention.o_proj" for i in range(4)]
    assert len(resolve_lora_targets(tiny, ("mlp",))) == 8
    assert len(resolve_lora_targets(tiny, ("qkv", "out", "mlp"))) == 24
    # neck: 4 reassemble projections, 4 neck.convs, 4 fusion blocks x (projection + 4 residual convs),
    # less the 2 convs of the first fusion block's skip branch, which forward never calls.
    neck = resolve_lora_targets(tiny, "neck")
    assert len(neck) == 4 + 4 + 4 * 5 - 2 and all(n.startswith("neck.") and "resize" not in n for n in neck)


def test_every_lora_parameter_gets_a_gradient_on_every_target_group(tiny):
    model = apply_lora(tiny, targets=("qkv", "out", "mlp", "neck"), train_head=True)
    model(pixel_values=torch.randn(1, 3, 70, 112)).predicted_depth.sum().backward()
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and [n for n, p in trainable if p.grad is None] == []


def test_neck_lora_trains_saves_and_reloads_like_the_backbone_adapters(tiny, tmp_path):
    from peft import PeftModel

    model = apply_lora(tiny, rank=4, targets=("qkv", "neck"))
    conv_adapters = [n for n, m in model.named_modules() if hasattr(m, "lora_A") and ".neck." in n]
    assert len(conv_adapters) == 26
    x = torch.randn(1, 3, 56, 56)
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1.0)
    model(pixel_values=x).predicted_depth.mean().backward()
    optimizer.step()
    model.eval()
    with torch.no_grad():
        expected = model(pixel_values=x).predicted_depth
    model.save_pretrained(tmp_path)
    base, _ = build_model("tiny")
    with torch.no_grad():
        reloaded = PeftModel.from_pretrained(base, tmp_path).eval()(pixel_values=x).predicted_depth
    torch.testing.assert_close(reloaded, expected)


def test_target_group_that_matches_nothing_or_is_unknown_is_a_config_error():
    with pytest.raises(ConfigError, match=r"'mlp' matched no layer \(looked for"):
        resolve_lora_targets(_Model4x(mlp=False), ("qkv", "mlp"))
    with pytest.raises(ConfigError, match="unknown LoRA target group"):
        resolve_lora_targets(_Model4x(), ("ffn",))
    with pytest.raises(ConfigError, match="no LoRA target group"):
        resolve_lora_targets(_Model4x(), ())


# --- apply_lora ---------------------------------------------------------------------------


def test_all_groups_give_the_hand_counted_number_of_lora_parameters(tiny):
    peft_model = apply_lora(tiny, rank=16, targets=("qkv", "out", "mlp"))
    # Per layer, r * (in + out): q, k, v, o 4 * 16 * (64 + 64); fc1, fc2 2 * 16 * (64 + 256).
    per_layer = 4 * 16 * 128 + 2 * 16 * 320
    trainable, _ = peft_model.get_nb_trainable_parameters()
    assert trainable == 4 * per_layer == 73_728


def test_train_head_makes_the_whole_head_trainable(tiny):
    head_params = _n_params(tiny.head)
    peft_model = apply_lora(tiny, rank=2, train_head=True)
    trainable, _ = peft_model.get_nb_trainable_parameters()
    assert trainable == 12 * 2 * (64 + 64) + head_params
    assert trainable_parameters_line(peft_model).startswith(f"trainable params: {trainable:,d} ")


def test_lora_summary_counts_the_adapted_layers_of_each_group_in_two_short_lines(tiny):
    # The tiny model: 4 layers of q, k, v (12), o (4), fc1 and fc2 (8); the neck's count is read
    # from the targets the same model resolves to.
    neck = len(resolve_lora_targets(tiny, ("neck",)))
    summary = lora_summary(apply_lora(tiny, rank=4, targets=("qkv", "out", "mlp", "neck"), train_head=True))
    first, second = summary.splitlines()
    assert f"{24 + neck} adapted layers (qkv 12, out 4, mlp 8, neck {neck}); trained in full: head" in first
    assert first.startswith("LoRA r=4, alpha 32") and second.startswith("trainable params: ")
    assert len(first) < 200


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"rank": 0}, "rank must be an integer >= 1"),
        ({"alpha": 0}, "alpha must be > 0"),
        ({"dropout": 1.0}, r"dropout must be in \[0, 1\)"),
        ({"dropout": -0.1}, r"dropout must be in \[0, 1\)"),
        ({"bias": "some"}, "bias must be one of none, all, lora_only"),
    ],
)
def test_apply_lora_rejects_bad_arguments(tiny, kwargs, message):
    with pytest.raises(ConfigError, match=message):
        apply_lora(tiny, **kwargs)


def test_demo_pretrained_ships_with_the_package_and_predicts_relative_depth(tmp_path):
    """The bundled model loads offline by name, is small, and has learned depth: on scenes of its
    source domain, its output follows inverse depth far better than chance."""
    from depth_lora.data.captures import find_captures, load_capture
    from depth_lora.inference.predict import predict_raw
    from depth_lora.model.choices import BUNDLED_MODELS
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "experiments" / "domain_adaptation"))
    from source_scenes import generate_source_scenes  # the experiment's source domain

    folder = BUNDLED_MODELS["demo-pretrained"]
    assert (folder / "model.safetensors").stat().st_size < 15e6
    assert (folder / "README.md").is_file()
    model, info = build_model("demo-pretrained")
    assert info["pretrained"] and info["source"] == "bundled" and info["num_parameters"] == 510_097
    generate_source_scenes(tmp_path, 3, seed=999, size_hw=(240, 320))
    for files in find_captures(tmp_path):
        capture = load_capture(files)
        pred = predict_raw(model.eval(), capture.rgb, (168, 224)).numpy()
        valid = capture.valid_mask
        corr = np.corrcoef(pred[valid], 1.0 / capture.depth_mm[valid])[0, 1]
        assert corr > 0.7, (files.key, corr)


# --- precision -----------------------------------------------------------------------------------


def test_auto_precision_on_cpu_is_bf16_only_with_native_bf16_that_torch_may_use(monkeypatch):
    from depth_lora.model.precision import resolve_precision

    def cpu(bf16: bool, amx: bool, capability: str):
        monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: bf16)
        monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx)
        monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: capability)
        return resolve_precision("auto", "cpu")

    assert cpu(bf16=True, amx=False, capability="AVX512") == "bf16"  # AMD Zen 4, Intel Cooper Lake
    assert cpu(bf16=False, amx=True, capability="AVX512") == "bf16"  # Intel Sapphire Rapids
    assert cpu(bf16=False, amx=False, capability="AVX512") == "fp32"  # Skylake: bf16 only emulated
    assert cpu(bf16=False, amx=False, capability="AVX2") == "fp32"  # most robot-cell PCs
    assert cpu(bf16=True, amx=False, capability="AVX2") == "fp32"  # ATEN_CPU_CAPABILITY=avx2
    assert resolve_precision("fp32", "cpu") == "fp32" and resolve_precision("bf16", "cpu") == "bf16"
    with pytest.raises(ConfigError, match="fp16 needs a CUDA GPU"):
        resolve_precision("fp16", "cpu")
    with pytest.raises(ConfigError, match="must be one of auto, fp32, fp16, bf16"):
        resolve_precision("int8", "cpu")


def test_capping_torch_at_avx2_gives_fp32_on_any_cpu():
    import subprocess
    import sys

    code = "from depth_lora.model.precision import resolve_precision; print(resolve_precision('auto', 'cpu'))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, "ATEN_CPU_CAPABILITY": "avx2"})
    assert out.stdout.strip() == "fp32"

"""Every speed option acts: fused attention, TF32, compile mode, the compile default, and the
residual stream's dtype under bf16 autocast."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from mmim.config.recipe import recipe_from_dict
from mmim.engine import speed
from mmim.engine.trainer import Trainer
from mmim.model import build_model


def _trainer(data, tmp_path, **train):
    data = copy.deepcopy(data)
    data["train"].update(out_dir=str(tmp_path / "run"), **train)
    return Trainer(recipe_from_dict(data))


def test_defaults_are_resolved_per_device_and_precision():
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert speed.resolve_fused_attention(None, cpu, "bf16") is False  # measured slower on CPU bf16
    assert speed.resolve_fused_attention(None, cpu, "fp32") is True
    assert speed.resolve_fused_attention(None, cuda, "bf16") is True
    assert speed.resolve_fused_attention(False, cuda, "bf16") is False
    assert speed.resolve_tf32(None, cuda, "fp32") is True and speed.resolve_tf32(None, cuda, "bf16") is False
    assert speed.resolve_tf32(None, cpu, "fp32") is False and speed.resolve_tf32(True, cpu, "fp32") is True
    assert speed.resolve_compile(None, cuda) is True and speed.resolve_compile(None, cpu) is False


@pytest.mark.parametrize("fused", [True, False])
def test_fused_attention_switch_reaches_every_block(tiny_recipe_dict, tmp_path, monkeypatch, fused):
    trainer = _trainer(tiny_recipe_dict, tmp_path, fused_attention=fused)
    flags = [m.fused_attn for m in trainer.model.modules() if hasattr(m, "fused_attn")]
    assert flags and all(f is fused for f in flags)
    calls = {"n": 0}
    original = F.scaled_dot_product_attention

    def counting(*args, **kwargs):
        calls["n"] += 1
        return original(*args, **kwargs)

    monkeypatch.setattr(F, "scaled_dot_product_attention", counting)
    trainer.model({"image": torch.randn(2, 1, 28, 28)}, generator=torch.Generator().manual_seed(0))
    assert (calls["n"] > 0) is fused


@pytest.mark.parametrize("tf32", [True, False])
def test_tf32_switch_sets_torch_flags(tiny_recipe_dict, tmp_path, tf32):
    before = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    try:
        _trainer(tiny_recipe_dict, tmp_path, tf32=tf32)
        assert torch.backends.cuda.matmul.allow_tf32 is tf32 and torch.backends.cudnn.allow_tf32 is tf32
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = before


def test_compile_mode_reaches_torch_compile(tiny_recipe_dict, tmp_path, monkeypatch):
    seen = []

    def fake_compile(fn, *args, **kwargs):
        seen.append(kwargs.get("mode"))
        return fn

    monkeypatch.setattr(torch, "compile", fake_compile)
    trainer = _trainer(tiny_recipe_dict, tmp_path, compile=True, compile_mode="reduce-overhead")
    assert trainer.compiled and seen == ["reduce-overhead", "reduce-overhead"]  # tokenize and predict
    assert not _trainer(tiny_recipe_dict, tmp_path / "b").compiled  # default on CPU: off


@pytest.mark.parametrize("cast", [False, True])
def test_residual_stream_dtype_under_bf16_autocast(tiny_recipe_dict, cast):
    """Positions kept fp32 promote the residual stream to fp32 (official MAE); ``cast_positions``
    adds them in the embeddings' dtype (VideoMAE's type_as) and the residual stays bf16."""
    data = copy.deepcopy(tiny_recipe_dict)
    data["model"]["encoder"]["cast_positions"] = cast
    model = build_model(recipe_from_dict(data).model)
    seen = []
    hook = model.encoder.blocks[0].register_forward_hook(lambda m, a, o: seen.append((a[0].dtype, o.dtype)))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        model({"image": torch.randn(2, 1, 28, 28)}, generator=torch.Generator().manual_seed(0))
    hook.remove()
    expected = torch.bfloat16 if cast else torch.float32
    assert seen[0] == (expected, expected)


def test_activation_checkpointing_recomputes_blocks_with_the_same_gradients(tiny_recipe_dict, monkeypatch):
    import mmim.trunk.encoder as encoder_module

    grads = {}
    for on in (False, True):
        data = copy.deepcopy(tiny_recipe_dict)
        data["model"]["encoder"]["grad_checkpointing"] = on
        torch.manual_seed(0)
        model = build_model(recipe_from_dict(data).model).train()
        calls = {"n": 0}
        original = encoder_module.checkpoint

        def counting(*args, _orig=original, _calls=calls, **kwargs):
            _calls["n"] += 1
            return _orig(*args, **kwargs)

        monkeypatch.setattr(encoder_module, "checkpoint", counting)
        out = model({"image": torch.randn(2, 1, 28, 28, generator=torch.Generator().manual_seed(1))},
                    generator=torch.Generator().manual_seed(0))
        out.loss.backward()
        assert calls["n"] == (len(model.encoder.blocks) if on else 0)
        grads[on] = model.encoder.blocks[0].attn.qkv.weight.grad.clone()
        monkeypatch.undo()
    torch.testing.assert_close(grads[True], grads[False])


@pytest.mark.slow
def test_fsdp2_on_one_process_keeps_bf16_compute_copies(tiny_recipe_dict, tmp_path):
    """``train.distributed=fsdp2`` without torchrun: a one-process group, and the MixedPrecisionPolicy
    hands the blocks bf16 weights (no per-step autocast cast of fp32 weights), fp32 masters kept."""
    import torch.distributed as dist

    data = copy.deepcopy(tiny_recipe_dict)
    data["schedule"]["max_steps"] = 2
    data["eval"]["after_train"] = False
    try:
        trainer = _trainer(data, tmp_path, distributed="fsdp2", precision="bf16")
        qkv = trainer.model.encoder.blocks[0].attn.qkv
        seen = []
        hook = qkv.register_forward_pre_hook(lambda m, a: seen.append(m.weight.dtype))
        summary = trainer.fit()
        hook.remove()
        assert seen and all(d == torch.bfloat16 for d in seen), seen
        assert all(p.dtype == torch.float32 for p in trainer.model.parameters())  # the sharded masters
        assert summary["steps"] == 2 and summary["final_loss"] == summary["final_loss"]  # finite, not NaN
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def test_bf16_on_a_cpu_without_native_bf16_is_flagged(tmp_path):
    from mmim.engine.runtime import cpu_bf16_note, cpu_flags

    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f avx512bw avx512_vnni\n")
    assert cpu_flags(info) == {"fpu", "sse2", "avx2", "avx512f", "avx512bw", "avx512_vnni"}
    assert "emulates bf16" in cpu_bf16_note(cpu_flags(info), "x86_64")
    for native in ("avx512_bf16", "amx_bf16"):
        assert cpu_bf16_note(cpu_flags(info) | {native}, "x86_64") is None
    assert cpu_bf16_note(cpu_flags(info), "aarch64") is None and cpu_bf16_note(None, "x86_64") is None
    assert cpu_flags(tmp_path / "missing") is None

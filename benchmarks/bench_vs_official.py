"""Training-step throughput, peak memory and MFU: mmim against the official code, same model and batch.

Given a checkout of the official repository (never vendored, never committed), builds the
official model from its own source files and mmim's equivalent model from the matching recipe,
and times full training steps (forward, loss, backward, AdamW step) on random inputs for both,
on the same device, at the same precision (``bf16``: both forwards under the same
``torch.autocast``). Each side lives in its own worker process, so peak memory (process RSS on
CPU, ``torch.cuda.max_memory_allocated`` on GPU) is its own.

Two schedules:

* alternating (default): both workers live at once and run in alternating rounds (only one
  computes at a time); the medians over rounds are compared, and so are per-round ratios;
* ``--single``: each side alone, in a fresh process, one after the other (nothing else of the
  benchmark alive), the cross-check of every alternating ratio.

Every worker is started with the same environment and thread count (``--threads``, default the
parent's ``torch.get_num_threads()``), and with ``OMP_WAIT_POLICY=PASSIVE`` so that an idle
worker's OpenMP pool does not spin on the cores the computing worker uses (see docs/scaling.md,
"the alternating-worker fault").

Models (``--model``): MAE ViT-B/L/H (facebookresearch/mae), VideoMAE ViT-B (MCG-NJU/VideoMAE),
Audio-MAE ViT-B with its shifted-window local decoder (facebookresearch/AudioMAE) and Point-MAE
(Pang-Yatian/Point-MAE)::

    python benchmarks/bench_vs_official.py --official /tmp/mae_official                      # MAE ViT-B/16, fp32
    python benchmarks/bench_vs_official.py --official /tmp/mae_official --precision bf16 --compile
    python benchmarks/bench_vs_official.py --official /tmp/videomae --model pretrain_videomae_base_patch16_224 --batch 2
    python benchmarks/bench_vs_official.py --official /tmp/AudioMAE --model audiomae_vit_base_patch16 --batch 2
    python benchmarks/bench_vs_official.py --official /tmp/Point-MAE --model pointmae --batch 16 --single
    python benchmarks/bench_vs_official.py --sides mmim --model mae_vit_large_patch16 --batch 256 --compile

Runtime shims (printed in the output; none edits an official file, none is official code):

* MAE / Audio-MAE target timm 0.3.2: timm ``Block`` swallows the ``qk_scale`` it no longer takes,
  ``np.float`` is restored for numpy >= 1.24, ``torch._six`` (removed in torch 2) is provided.
* Audio-MAE's local decoder needs the patched timm-0.3.2-era Swin block its repository ships in
  ``timm_patch/`` (installed there by copying it over timm's file): the checkout's own file is
  loaded at runtime as ``timm.models.swin_transformer``. Its ``forward`` moves a constant to CUDA,
  so the step calls ``forward_encoder``/``forward_decoder``/``forward_loss`` itself, as ``forward`` does.
* Point-MAE's CUDA extensions (pointnet2_ops FPS, knn_cuda, chamfer_dist) are not installable:
  small pure-torch stand-ins written here (:func:`_fps`, :class:`_KNN`, :class:`_Chamfer`) are
  injected as those modules; matplotlib, termcolor and easydict (imported but unused by the
  model) get empty stand-ins when missing. The official Point-MAE timing therefore measures the
  official model with these stand-ins, not with its CUDA kernels.

MFU: the FLOPs of one eager forward at the benchmark batch (``torch.utils.flop_counter``) x3
per training step, against the device's dense peak (``mmim.engine.flops.peak_tflops``); on a
device without a known peak (CPU) achieved TFLOP/s are printed instead.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import resource
import statistics
import sys
import time
import types
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent

# official model name -> (kind, official builder, mmim recipe, builder kwargs)
MODELS = {
    "mae_vit_base_patch16": ("mae", "mae_vit_base_patch16", "recipes/image/mae_vit_b16_in1k.yaml", {}),
    "mae_vit_large_patch16": ("mae", "mae_vit_large_patch16", "recipes/image/mae_vit_l16_in1k.yaml", {}),
    "mae_vit_huge_patch14": ("mae", "mae_vit_huge_patch14", "recipes/image/mae_vit_h14_in1k.yaml", {}),
    "pretrain_videomae_base_patch16_224": ("videomae", "pretrain_videomae_base_patch16_224",
                                           "recipes/video/videomae_vit_b_k400.yaml", {"decoder_depth": 4}),
    "audiomae_vit_base_patch16": ("audiomae", "mae_vit_base_patch16", "recipes/audio/audiomae_vit_b16_as2m.yaml",
                                  {"decoder_mode": 1}),
    "pointmae": ("pointmae", "Point_MAE", "recipes/points/pointmae_shapenet55.yaml", {}),
}

SHIM_NOTES: list[str] = []


# ---------------------------------------------------------------------------- official side
def _numpy_shim() -> None:
    """``np.float`` (removed in numpy 1.24) is used by MAE's ``util/pos_embed.py``."""
    import numpy as np

    if not hasattr(np, "float"):
        np.float = float  # type: ignore[attr-defined]
        SHIM_NOTES.append(f"numpy {np.__version__}: np.float restored as an alias of float (MAE's util/pos_embed.py)")


def _fake_module(name: str, **attrs) -> types.ModuleType:  # noqa: ANN003
    """Register an import-only stand-in module ``name`` (and its parents) unless it is importable."""
    module = types.ModuleType(name)
    module.__dict__.update(attrs)
    sys.modules[name] = module
    parent, _, child = name.rpartition(".")
    if parent:
        holder = sys.modules.get(parent) or _fake_module(parent)
        setattr(holder, child, module)
    return module


def _missing(name: str) -> bool:
    import importlib.util

    try:
        return importlib.util.find_spec(name) is None
    except (ImportError, ValueError):
        return True


def _torch_six_shim() -> None:
    """``torch._six`` (removed in torch 2.0): ``inf`` and ``container_abcs`` are all the official code uses."""
    if _missing("torch._six"):
        import collections.abc
        import math

        _fake_module("torch._six", inf=math.inf, container_abcs=collections.abc, string_classes=(str, bytes))
        SHIM_NOTES.append(f"torch {torch.__version__}: torch._six provided (inf, container_abcs)")


def _timm_shim() -> None:
    """Let code written for timm 0.3.x-0.4.x build with the installed timm (in this process only)."""
    from mmim.timm_compat import import_timm

    _numpy_shim()
    _torch_six_shim()

    timm = import_timm()
    vt = timm.models.vision_transformer
    if getattr(vt.Block, "_mmim_shim", False):
        return
    import inspect

    if "qk_scale" not in inspect.signature(vt.Block.__init__).parameters:
        class Block(vt.Block):  # noqa: D401 - a shim
            _mmim_shim = True

            def __init__(self, *args, qk_scale=None, **kwargs):  # noqa: ANN001, ANN002, ANN003
                super().__init__(*args, **kwargs)

        vt.Block = Block
        SHIM_NOTES.append(f"timm {timm.__version__}: vision_transformer.Block ignores qk_scale (always None in MAE)")


def _official_mae(checkout: Path, builder: str, kwargs: dict):
    _timm_shim()
    sys.path.insert(0, str(checkout))
    import models_mae

    model = getattr(models_mae, builder)(norm_pix_loss=True, **kwargs)
    img = model.patch_embed.img_size

    def inputs(batch: int, device: torch.device):
        return torch.randn(batch, 3, *img, device=device)

    def loss(x):
        return model(x, mask_ratio=0.75)[0]

    return model, inputs, loss


def _official_audiomae(checkout: Path, builder: str, kwargs: dict):
    """Audio-MAE ViT-B/16 as main_pretrain.py builds it for AudioSet (1024 x 128 fbank, local decoder)."""
    import importlib.util

    _timm_shim()
    timm = sys.modules["timm"]
    patched = checkout / "timm_patch" / "swin_transformer.py"
    if not patched.is_file():
        raise SystemExit(f"{patched}: missing; Audio-MAE's local decoder needs the checkout's timm_patch/")
    # the repository's install step copies this file over timm's; here it is loaded as that module instead
    spec = importlib.util.spec_from_file_location("timm.models.swin_transformer", patched)
    swin = importlib.util.module_from_spec(spec)
    sys.modules["timm.models.swin_transformer"] = swin
    spec.loader.exec_module(swin)
    timm.models.swin_transformer = swin
    SHIM_NOTES.append(f"timm {timm.__version__}: timm.models.swin_transformer = the checkout's timm_patch/swin_transformer.py "
                      "(loaded at runtime, as its timm_patch.sh installs it)")
    sys.path.insert(0, str(checkout))
    import models_mae

    model = getattr(models_mae, builder)(norm_pix_loss=True, in_chans=1, audio_exp=True, img_size=(1024, 128), **kwargs)

    def inputs(batch: int, device: torch.device):
        return torch.randn(batch, 1, 1024, 128, device=device)

    def loss(x):  # models_mae.forward minus its constant .cuda() contrastive term (0.0)
        latent, mask, ids_restore, _ = model.forward_encoder(x, 0.8, mask_2d=model.mask_2d)
        pred, _, _ = model.forward_decoder(latent, ids_restore)
        return model.forward_loss(x, pred, mask, norm_pix_loss=model.norm_pix_loss)

    return model, inputs, loss


# Point-MAE's CUDA extensions, as pure-torch stand-ins (written here from their documented behaviour).
def _fps(xyz: torch.Tensor, n: int) -> torch.Tensor:
    """Farthest point sampling: (B, N, 3) -> int32 indices (B, n), starting from point 0."""
    b, num, _ = xyz.shape
    idx = torch.zeros(b, n, dtype=torch.long, device=xyz.device)
    dist = torch.full((b, num), float("inf"), device=xyz.device)
    last = torch.zeros(b, dtype=torch.long, device=xyz.device)
    rows = torch.arange(b, device=xyz.device)
    for i in range(1, n):
        d = ((xyz - xyz[rows, last].unsqueeze(1)) ** 2).sum(-1)
        dist = torch.minimum(dist, d)
        last = dist.argmax(-1)
        idx[:, i] = last
    return idx.int()


def _gather(features: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """(B, C, N) features at int indices (B, n) -> (B, C, n)."""
    return features.gather(2, idx.long().unsqueeze(1).expand(-1, features.shape[1], -1))


class _KNN:
    """knn_cuda.KNN(k, transpose_mode=True): (ref (B, N, 3), query (B, M, 3)) -> (dist, idx), each (B, M, k)."""

    def __init__(self, k: int, transpose_mode: bool = True) -> None:
        self.k = k

    def __call__(self, ref: torch.Tensor, query: torch.Tensor):  # noqa: ANN204
        d = torch.cdist(query.float(), ref.float())
        dist, idx = d.topk(self.k, dim=-1, largest=False)
        return dist, idx


class _Chamfer(torch.nn.Module):
    """Chamfer distance between (B, N, 3) and (B, M, 3): squared (L2) or the mean of root distances (L1)."""

    def __init__(self, l1: bool = False) -> None:
        super().__init__()
        self.l1 = l1

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        d = torch.cdist(x.float(), y.float()) ** 2
        d1, d2 = d.min(dim=2).values, d.min(dim=1).values
        if self.l1:
            return (d1.clamp_min(1e-12).sqrt().mean() + d2.clamp_min(1e-12).sqrt().mean()) / 2
        return d1.mean() + d2.mean()


class _AttrDict(dict):
    """An easydict.EasyDict stand-in (attribute access to keys, nested)."""

    def __init__(self, data=None, **kw) -> None:  # noqa: ANN001, ANN003
        super().__init__()
        for k, v in {**(data or {}), **kw}.items():
            self[k] = _AttrDict(v) if isinstance(v, dict) else v

    __getattr__ = dict.__getitem__
    __setattr__ = dict.__setitem__


def _official_pointmae(checkout: Path, builder: str, kwargs: dict):
    """Point-MAE pre-training model of cfgs/pretrain.yaml (64 groups of 32 points, cdl2)."""
    from mmim.timm_compat import import_timm

    import_timm()
    _torch_six_shim()
    _fake_module("pointnet2_ops.pointnet2_utils", furthest_point_sample=_fps, gather_operation=_gather)
    _fake_module("knn_cuda", KNN=_KNN)
    _fake_module("extensions.chamfer_dist", ChamferDistanceL1=lambda: _Chamfer(l1=True), ChamferDistanceL2=_Chamfer)
    SHIM_NOTES.append("Point-MAE: pointnet2_ops (FPS, gather), knn_cuda.KNN and extensions.chamfer_dist are "
                      "pure-torch stand-ins written in this benchmark (the CUDA extensions are not installable)")
    for name, attrs in {"matplotlib": {"use": lambda *a, **k: None}, "matplotlib.pyplot": {},
                        "mpl_toolkits.mplot3d": {"Axes3D": object}, "termcolor": {"colored": lambda s, *a, **k: s},
                        "easydict": {"EasyDict": _AttrDict}}.items():
        if _missing(name.partition(".")[0]) or (name == "mpl_toolkits.mplot3d" and _missing(name)):
            _fake_module(name, **attrs)
            SHIM_NOTES.append(f"Point-MAE: {name} missing, an empty stand-in (not used by the model)")
    sys.path.insert(0, str(checkout))
    from models import Point_MAE as module

    config = _AttrDict(NAME="Point_MAE", group_size=32, num_group=64, loss="cdl2", transformer_config=dict(
        mask_ratio=0.6, mask_type="rand", trans_dim=384, encoder_dims=384, depth=12, drop_path_rate=0.1,
        num_heads=6, decoder_depth=4, decoder_num_heads=6))
    model = getattr(module, builder)(config)

    def inputs(batch: int, device: torch.device):
        return torch.rand(batch, 1024, 3, device=device)

    def loss(pts):
        return model(pts)

    return model, inputs, loss


def _official_videomae(checkout: Path, builder: str, kwargs: dict):
    from mmim.timm_compat import import_timm

    import_timm()  # VideoMAE has its own Block; timm.models.registry/layers still import (deprecated aliases)
    sys.path.insert(0, str(checkout))
    import modeling_pretrain
    from einops import rearrange
    from masking_generator import TubeMaskingGenerator

    model = getattr(modeling_pretrain, builder)(**kwargs)
    p = model.encoder.patch_embed.patch_size[0]
    frames, size = 16, 224
    masker = TubeMaskingGenerator((frames // 2, size // p, size // p), 0.9)

    def inputs(batch: int, device: torch.device):
        return torch.randn(batch, 3, frames, size, size, device=device)

    def loss(videos):  # engine_for_pretraining.train_one_epoch, normalize_target=True
        mask = torch.stack([torch.from_numpy(masker()) for _ in range(videos.shape[0])]).to(videos.device).bool()
        with torch.no_grad():
            squeeze = rearrange(videos, "b c (t p0) (h p1) (w p2) -> b (t h w) (p0 p1 p2) c", p0=2, p1=p, p2=p)
            norm = (squeeze - squeeze.mean(dim=-2, keepdim=True)) / (
                squeeze.var(dim=-2, unbiased=True, keepdim=True).sqrt() + 1e-6)
            patches = rearrange(norm, "b n p c -> b n (p c)")
            labels = patches[mask].reshape(videos.shape[0], -1, patches.shape[-1])
        return torch.nn.functional.mse_loss(model(videos, mask), labels)

    return model, inputs, loss


def _official_optimizer(model: torch.nn.Module) -> torch.optim.Optimizer:
    """As the official pre-training scripts: AdamW(0.9, 0.95), wd 0.05 except biases, norms, tokens."""
    skip = model.no_weight_decay() if hasattr(model, "no_weight_decay") else set()
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if param.requires_grad:
            (no_decay if param.ndim <= 1 or name.endswith(".bias") or name in skip else decay).append(param)
    groups = [{"params": no_decay, "weight_decay": 0.0}, {"params": decay, "weight_decay": 0.05}]
    return torch.optim.AdamW(groups, lr=1.5e-4, betas=(0.9, 0.95))


# ---------------------------------------------------------------------------- mmim side
def _mmim(recipe_path: str, device: torch.device, overrides: list[str]):
    from mmim.config.recipe import load_recipe
    from mmim.engine.optim import build_optimizer
    from mmim.model import build_model

    recipe = load_recipe(ROOT / recipe_path, overrides, check_components=True)
    model = build_model(recipe.model)
    gen = torch.Generator().manual_seed(0)

    def inputs(batch: int, dev: torch.device):
        return {s.input_key or n: s.tokenizer.example_input(batch, gen).to(dev) for n, s in model.streams.items()}

    def loss(batch):
        return model(batch, generator=gen).loss

    return model, inputs, loss, lambda m: build_optimizer(m, recipe.optim, 1.5e-4, device)


BUILDERS = {"mae": _official_mae, "videomae": _official_videomae, "audiomae": _official_audiomae,
            "pointmae": _official_pointmae}


# ---------------------------------------------------------------------------- worker
def _peak_memory_mib(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def _worker(side: str, args: argparse.Namespace, conn) -> None:  # noqa: ANN001
    try:
        _serve(side, args, conn)
    except BaseException as err:  # report to the parent instead of leaving it waiting
        import traceback

        conn.send({"error": f"{side}: {err!r}\n{traceback.format_exc()}"})
        raise


def _count_flops(loss_fn, x, autocast) -> float:  # noqa: ANN001
    """FLOPs of one eager forward (+ loss) at the benchmark batch."""
    from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count

    def cpu_sdpa(q, k, v, *_, out_shape=None, **__):  # noqa: ANN001, ANN002, ANN003, ANN202
        return sdpa_flop_count(q, k, v)  # shapes: torch's formula for the CUDA kernels, the same math

    # torch's table has no formula for CPU's fused attention kernel: without this, an SDPA model's
    # attention FLOPs would count as 0 on CPU while hand-written attention (bmm) counts
    cpu_op = getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu", None)
    mode = FlopCounterMode(display=False, custom_mapping={cpu_op: cpu_sdpa} if cpu_op else {})
    with mode, torch.no_grad():
        if autocast is not None:
            with autocast:
                loss_fn(x)
        else:
            loss_fn(x)
    return float(mode.get_total_flops())


def _serve(side: str, args: argparse.Namespace, conn) -> None:  # noqa: ANN001
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    kind, builder, recipe, kwargs = MODELS[args.model]
    torch.manual_seed(0)
    if side == "official":
        model, inputs, loss_fn = BUILDERS[kind](Path(args.official).resolve(), builder, kwargs)
        model = model.to(device)
        opt = _official_optimizer(model)
    else:
        overrides = [] if args.fused_adamw == "auto" else [f"optim.fused={str(args.fused_adamw == 'on').lower()}"]
        model, inputs, loss_fn, make_opt = _mmim(recipe, device, overrides)
        model = model.to(device)
        opt = make_opt(model)
    model.train()
    # the attention kernel as `mmim train` chooses it (train.fused_attention), for both sides alike:
    # timm's attention modules (mmim, and MAE/Audio-MAE's shimmed timm blocks) switch; official
    # modules of their own (VideoMAE, Point-MAE) keep their plain attention
    from mmim.engine import speed

    choice = None if args.fused_attention == "auto" else args.fused_attention == "on"
    fused_attn = speed.resolve_fused_attention(choice, device, args.precision)
    switched = speed.set_fused_attention(model, fused_attn)
    x = inputs(args.batch, device)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16) if args.precision == "bf16" else None
    params = sum(p.numel() for p in model.parameters())
    flops = 3.0 * _count_flops(loss_fn, x, autocast)  # per step: forward + backward (2x), eager, before compile
    if side == "mmim" and args.compile:
        model.compile()
    fused = any(g.get("fused") for g in opt.param_groups) or bool(opt.defaults.get("fused"))
    conn.send({"params": params, "shim": SHIM_NOTES, "flops": flops, "fused": fused,
               "attention": f"{'fused' if fused_attn else 'plain'} in {switched} timm modules" if switched else
               "its own (not switched)",
               "compiled": bool(getattr(model, "compiled", False)), "threads": torch.get_num_threads()})

    def step() -> None:
        if autocast is not None:
            with autocast:
                loss = loss_fn(x)
        else:
            loss = loss_fn(x)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    while True:
        cmd, n = conn.recv()
        if cmd == "stop":
            break
        times = []
        before = resource.getrusage(resource.RUSAGE_SELF)
        for _ in range(n):
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            start = time.perf_counter()
            step()
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            times.append(time.perf_counter() - start)
        after = resource.getrusage(resource.RUSAGE_SELF)
        per = max(n, 1)
        conn.send({"times": times, "peak_mib": _peak_memory_mib(device),  # the diagnosis of the alternating fault:
                   "cpu_s": (after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime) / per,
                   "sys_s": (after.ru_stime - before.ru_stime) / per,
                   "minflt": (after.ru_minflt - before.ru_minflt) / per,  # page faults (fresh memory) per step
                   "nivcsw": (after.ru_nivcsw - before.ru_nivcsw) / per})  # preemptions per step


# ---------------------------------------------------------------------------- parent
class _Side:
    """One worker process and its pipe."""

    def __init__(self, side: str, args: argparse.Namespace) -> None:
        ctx = mp.get_context("spawn")
        self.name = side
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_worker, args=(side, args, child), daemon=True)
        self.proc.start()
        child.close()
        self.info = self.receive()

    def receive(self) -> dict:
        try:
            out = self.conn.recv()
        except EOFError:
            self.proc.join(5)
            raise SystemExit(f"worker {self.name} died (exit code {self.proc.exitcode})") from None
        if "error" in out:
            self.proc.kill()
            raise SystemExit(f"worker failed: {out['error']}")
        return out

    def run(self, steps: int) -> dict:
        self.conn.send(("run", steps))
        return self.receive()

    def stop(self) -> None:
        self.conn.send(("stop", 0))
        self.proc.join()


def _diagnostics(outs: list[dict]) -> dict:
    """Per-step medians over runs: CPU seconds (user + system), system seconds, minor page faults, preemptions."""
    return {k: statistics.median(o[k] for o in outs) for k in ("cpu_s", "sys_s", "minflt", "nivcsw")}


def _worker_env(args: argparse.Namespace) -> None:
    """One environment for every worker (spawned children inherit it): same threads, passive OpenMP waits."""
    os.environ["OMP_NUM_THREADS"] = str(args.threads)
    os.environ["MKL_NUM_THREADS"] = str(args.threads)
    if args.omp_wait_policy:
        os.environ["OMP_WAIT_POLICY"] = args.omp_wait_policy


def _alternating(args: argparse.Namespace, names: list[str]) -> tuple[dict, dict, dict, list[float]]:
    sides = {}
    try:
        for name in names:
            sides[name] = _Side(name, args)
        for side in sides.values():
            side.run(args.warmup)
        times: dict[str, list[float]] = {n: [] for n in names}
        peak, ratios, diag = {}, [], {}
        for r in range(args.rounds):
            order = names if r % 2 == 0 else names[::-1]
            line = []
            for name in order:
                out = sides[name].run(args.steps)
                times[name].append(statistics.median(out["times"]))
                peak[name] = out["peak_mib"]
                diag.setdefault(name, []).append(out)
                line.append(f"{name} {args.batch / times[name][-1]:.2f}")
            if len(names) == 2:
                ratios.append(times["official"][-1] / times["mmim"][-1])
            print(f"round {r + 1}: samples/s " + ", ".join(line), flush=True)
        for side in sides.values():
            side.stop()
    finally:
        for side in sides.values():
            if side.proc.is_alive():
                side.proc.kill()
    info = {n: s.info for n, s in sides.items()}
    for n in names:
        info[n]["diag"] = _diagnostics(diag[n])
    return info, times, peak, ratios


def _single(args: argparse.Namespace, names: list[str]) -> tuple[dict, dict, dict, list[float]]:
    info, times, peak = {}, {}, {}
    for name in names:  # one process alive at a time
        side = _Side(name, args)
        try:
            side.run(args.warmup)
            out = side.run(args.rounds * args.steps)
        finally:
            if side.proc.is_alive():
                side.stop()
        info[name], times[name], peak[name] = side.info, out["times"], out["peak_mib"]
        info[name]["diag"] = _diagnostics([out])
        print(f"{name} alone: samples/s {args.batch / statistics.median(out['times']):.2f}", flush=True)
    return info, times, peak, []


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--official", help="path to a checkout of the official repository (needed unless --sides mmim)")
    p.add_argument("--model", default="mae_vit_base_patch16", choices=sorted(MODELS))
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--rounds", type=int, default=5, help="alternating rounds (official, mmim, mmim, official, ...)")
    p.add_argument("--steps", type=int, default=2, help="timed steps per side per round")
    p.add_argument("--warmup", type=int, default=2,
                   help="untimed steps per side before timing (compile happens here; on CPU the second step still "
                        "page-faults while glibc's malloc raises its mmap threshold, see docs/scaling.md)")
    p.add_argument("--threads", type=int, default=None,
                   help="torch intra-op threads in every worker (default: this process's torch.get_num_threads())")
    p.add_argument("--omp-wait-policy", default="PASSIVE", choices=["PASSIVE", "ACTIVE", ""],
                   help="OMP_WAIT_POLICY of the workers ('' leaves the environment's); PASSIVE stops idle pools spinning")
    p.add_argument("--single", action="store_true", help="run each side alone in a fresh process, one after the other")
    p.add_argument("--sides", default="both", choices=["both", "mmim", "official"])
    p.add_argument("--compile", action="store_true", help="mmim side: model.compile() (tokenize and predict)")
    p.add_argument("--fused-adamw", default="auto", choices=["auto", "on", "off"],
                   help="mmim side: optim.fused (auto: fused where the device supports it); the official side "
                        "keeps its plain AdamW")
    p.add_argument("--fused-attention", default="auto", choices=["auto", "on", "off"],
                   help="both sides: timm's fused attention (SDPA) in timm attention modules; auto: as `mmim train` "
                        "resolves train.fused_attention (off for bf16 on CPU, measured slower there)")
    p.add_argument("--json", help="also write the results to this JSON file")
    args = p.parse_args(argv)
    names = ["official", "mmim"] if args.sides == "both" else [args.sides]
    if "official" in names and (not args.official or not Path(args.official).is_dir()):
        p.error(f"--official {args.official}: not a directory (a checkout of the official repository)")
    args.threads = args.threads or torch.get_num_threads()
    _worker_env(args)

    info, times, peak, ratios = (_single if args.single else _alternating)(args, names)
    device = torch.device(args.device)
    device_name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    peak_tf = None
    if device.type == "cuda":
        from mmim.engine.flops import peak_tflops

        peak_tf = peak_tflops(device, args.precision)
    schedule = "single (each side alone)" if args.single else f"alternating, {args.rounds} rounds x {args.steps} steps"
    print(f"model {args.model}, batch {args.batch}, {args.precision} on {args.device} ({device_name}), "
          f"threads {args.threads}, {schedule}, mmim compile {args.compile}")
    for name in names:
        print(f"parameters {name}: {info[name]['params'] / 1e6:.1f}M, fused AdamW {info[name]['fused']}, "
              f"attention {info[name]['attention']}")
    if "official" in names:
        for note in info["official"]["shim"] or ["none needed"]:
            print(f"compatibility shim (official side, at runtime): {note}")
    memory = "process peak RSS" if device.type == "cpu" else "max CUDA memory allocated"
    results = {"model": args.model, "batch": args.batch, "precision": args.precision, "device": device_name,
               "threads": args.threads, "single": args.single, "compile": args.compile,
               "fused_adamw": args.fused_adamw, "fused_attention": args.fused_attention, "peak_tflops": peak_tf,
               "sides": {}}
    for name in names:
        step = statistics.median(times[name])
        tflops = info[name]["flops"] / step / 1e12
        util = f"MFU {100 * tflops / peak_tf:.3g}%" if peak_tf else f"{tflops:.3g} TFLOP/s (no known peak)"
        print(f"{name}: {args.batch / step:.2f} samples/s (median step {step * 1e3:.0f} ms), "
              f"peak memory {peak[name]:.0f} MiB ({memory}), {info[name]['flops'] / args.batch / 1e9:.1f} GFLOP/sample, "
              f"{util}")
        d = info[name]["diag"]
        print(f"  {name} per step: CPU {d['cpu_s']:.3f} s (system {d['sys_s']:.3f} s) of {step:.3f} s wall, "
              f"{d['minflt']:.0f} minor page faults, {d['nivcsw']:.0f} preemptions")
        results["sides"][name] = {"samples_per_s": args.batch / step, "step_ms": step * 1e3, "peak_mib": peak[name],
                                  "flops_per_step": info[name]["flops"], "tflops": tflops,
                                  "mfu": tflops / peak_tf if peak_tf else None, "params": info[name]["params"],
                                  "attention": info[name]["attention"], "fused_adamw": info[name]["fused"],
                                  **info[name]["diag"]}
    if len(names) == 2:
        rate = {n: args.batch / statistics.median(times[n]) for n in names}
        results["ratio"] = rate["mmim"] / rate["official"]
        results["memory_ratio"] = peak["mmim"] / peak["official"]
        per_round = (f", {statistics.median(ratios):.3f}x (median of per-round ratios, "
                     f"range {min(ratios):.2f}-{max(ratios):.2f})") if ratios else ""
        print(f"ratio mmim/official: throughput {results['ratio']:.3f}x (of medians){per_round}; "
              f"peak memory {results['memory_ratio']:.3f}x")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

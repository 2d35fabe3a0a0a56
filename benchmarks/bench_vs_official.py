"""Training-step throughput and peak memory: mmim against the official code, same model and batch.

Given a checkout of the official repository (never vendored, never committed), builds the
official model from its own source file and mmim's equivalent model from the matching recipe,
and times full training steps (forward, loss, backward, AdamW step) on random inputs for both,
on the same device, at the same precision (``bf16``: both forwards under the same
``torch.autocast``). Each side lives in its own worker process, so peak memory (process RSS on
CPU, ``torch.cuda.max_memory_allocated`` on GPU) is its own; the two are run in alternating
rounds (only one computes at a time), and the medians over rounds are compared::

    python benchmarks/bench_vs_official.py --official /tmp/mae_official                      # MAE ViT-B/16, fp32
    python benchmarks/bench_vs_official.py --official /tmp/mae_official --precision bf16
    python benchmarks/bench_vs_official.py --official /tmp/videomae --model pretrain_videomae_base_patch16_224 --batch 2

The official code targets old timm releases (MAE: timm 0.3.2). A runtime compatibility shim
(printed in the output) adapts it to the installed timm without touching the official file:
timm ``Block`` swallows the ``qk_scale`` argument it no longer takes, and ``np.float`` is
restored for numpy >= 1.24. With a current timm the
official MAE's blocks use timm's fused attention, as mmim's do.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import resource
import statistics
import sys
import time
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
}

SHIM_NOTES: list[str] = []


# ---------------------------------------------------------------------------- official side
def _numpy_shim() -> None:
    """``np.float`` (removed in numpy 1.24) is used by MAE's ``util/pos_embed.py``."""
    import numpy as np

    if not hasattr(np, "float"):
        np.float = float  # type: ignore[attr-defined]
        SHIM_NOTES.append(f"numpy {np.__version__}: np.float restored as an alias of float (MAE's util/pos_embed.py)")


def _timm_shim() -> None:
    """Let code written for timm 0.3.x-0.4.x build with the installed timm (in this process only)."""
    from mmim.timm_compat import import_timm

    _numpy_shim()

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
def _mmim(recipe_path: str, device: torch.device):
    from mmim.config.recipe import load_recipe
    from mmim.engine.optim import build_optimizer
    from mmim.model import build_model

    recipe = load_recipe(ROOT / recipe_path, [], check_components=True)
    model = build_model(recipe.model)
    gen = torch.Generator().manual_seed(0)

    def inputs(batch: int, dev: torch.device):
        return {s.input_key or n: s.tokenizer.example_input(batch, gen).to(dev) for n, s in model.streams.items()}

    def loss(batch):
        return model(batch, generator=gen).loss

    return model, inputs, loss, lambda m: build_optimizer(m, recipe.optim, 1.5e-4, device)


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


def _serve(side: str, args: argparse.Namespace, conn) -> None:  # noqa: ANN001
    torch.set_num_threads(args.threads) if args.threads else None
    device = torch.device(args.device)
    kind, builder, recipe, kwargs = MODELS[args.model]
    torch.manual_seed(0)
    if side == "official":
        build = _official_mae if kind == "mae" else _official_videomae
        model, inputs, loss_fn = build(Path(args.official).resolve(), builder, kwargs)
        model = model.to(device)
        opt = _official_optimizer(model)
    else:
        model, inputs, loss_fn, make_opt = _mmim(recipe, device)
        model = model.to(device)
        opt = make_opt(model)
    model.train()
    x = inputs(args.batch, device)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16) if args.precision == "bf16" else None
    params = sum(p.numel() for p in model.parameters())
    conn.send({"params": params, "shim": SHIM_NOTES})

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
        for _ in range(n):
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            start = time.perf_counter()
            step()
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            times.append(time.perf_counter() - start)
        conn.send({"times": times, "peak_mib": _peak_memory_mib(device)})


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--official", required=True, help="path to a checkout of the official repository")
    p.add_argument("--model", default="mae_vit_base_patch16", choices=sorted(MODELS))
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--rounds", type=int, default=5, help="alternating rounds (official, mmim, official, ...)")
    p.add_argument("--steps", type=int, default=2, help="timed steps per side per round")
    p.add_argument("--warmup", type=int, default=1, help="untimed steps per side before the rounds")
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads in each worker")
    args = p.parse_args(argv)
    if not Path(args.official).is_dir():
        p.error(f"--official {args.official}: not a directory")

    ctx = mp.get_context("spawn")
    sides = {}
    for side in ("official", "mmim"):
        parent, child = ctx.Pipe()
        proc = ctx.Process(target=_worker, args=(side, args, child), daemon=True)
        proc.start()
        sides[side] = (proc, parent)
    def receive(side: str) -> dict:
        out = sides[side][1].recv()
        if "error" in out:
            for proc, _ in sides.values():
                proc.kill()
            raise SystemExit(f"worker failed: {out['error']}")
        return out

    info = {side: receive(side) for side in sides}
    print(f"model {args.model}, batch {args.batch}, {args.precision} on {args.device} "
          f"({torch.cuda.get_device_name() if args.device.startswith('cuda') else 'CPU'}), "
          f"threads {args.threads or torch.get_num_threads()}, {args.rounds} rounds x {args.steps} steps")
    print(f"parameters: official {info['official']['params'] / 1e6:.1f}M, mmim {info['mmim']['params'] / 1e6:.1f}M")
    for note in info["official"]["shim"] or ["none needed"]:
        print(f"compatibility shim (official side, at runtime): {note}")
    for side, (_, conn) in sides.items():
        conn.send(("run", args.warmup))
        receive(side)
    times: dict[str, list[float]] = {"official": [], "mmim": []}
    ratios = []  # per round, mmim/official throughput: pairs neighbours in time, robust to load drifting
    peak = {}
    for r in range(args.rounds):
        order = ("official", "mmim") if r % 2 == 0 else ("mmim", "official")
        line = []
        for side in order:
            conn = sides[side][1]
            conn.send(("run", args.steps))
            out = receive(side)
            times[side].append(statistics.median(out["times"]))
            peak[side] = out["peak_mib"]
            line.append(f"{side} {args.batch / times[side][-1]:.2f}")
        ratios.append(times["official"][-1] / times["mmim"][-1])
        print(f"round {r + 1}: samples/s " + ", ".join(line), flush=True)
    for proc, conn in sides.values():
        conn.send(("stop", 0))
        proc.join()
    rate = {side: args.batch / statistics.median(t) for side, t in times.items()}
    memory = "process peak RSS" if args.device == "cpu" else "max CUDA memory allocated"
    for side in ("official", "mmim"):
        print(f"{side}: {rate[side]:.2f} samples/s (median step {statistics.median(times[side]) * 1e3:.0f} ms), "
              f"peak memory {peak[side]:.0f} MiB ({memory})")
    print(f"ratio mmim/official: throughput {rate['mmim'] / rate['official']:.3f}x (of medians), "
          f"{statistics.median(ratios):.3f}x (median of per-round ratios, range {min(ratios):.2f}-{max(ratios):.2f}); "
          f"peak memory {peak['mmim'] / peak['official']:.3f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Training throughput and peak memory of MAE (ViT-B/16 by default) through mmim's model.

Builds the model of a recipe (default: recipes/image/mae_vit_b16_in1k.yaml), runs full
training steps (forward, backward, AdamW step) on random images of the recipe's size, and
prints samples/s and peak memory. Masks are drawn by the recipe's masker, as in training.

    python benchmarks/bench_mae_train.py --batch 8 --steps 5                 # CPU, fp32
    python benchmarks/bench_mae_train.py --batch 256 --precision bf16        # GPU
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

import torch

from mmim.config.recipe import load_recipe
from mmim.engine.optim import build_optimizer
from mmim.engine.runtime import setup_runtime
from mmim.model import build_model

ROOT = Path(__file__).resolve().parent.parent


def peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB -> MiB (process peak RSS)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--recipe", default=str(ROOT / "recipes/image/mae_vit_b16_in1k.yaml"))
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--steps", type=int, default=5, help="timed steps (after --warmup)")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16", "fp16"])
    p.add_argument("--device", default="auto")
    p.add_argument("overrides", nargs="*", help="recipe key=value overrides, e.g. model.encoder.size=large")
    args = p.parse_args(argv)

    recipe = load_recipe(args.recipe, args.overrides, check_components=True)
    rt = setup_runtime(args.device, args.precision)
    torch.manual_seed(0)
    model = build_model(recipe.model).to(rt.device).train()
    opt = build_optimizer(model, recipe.optim, 1e-4, rt.device)
    gen = torch.Generator().manual_seed(0)
    batch = {}
    for name, stream in model.streams.items():
        batch[stream.input_key or name] = stream.tokenizer.example_input(args.batch, gen).to(rt.device)
    params = sum(p.numel() for p in model.parameters())
    print(f"recipe {recipe.name}: {params / 1e6:.1f}M parameters, batch {args.batch}, {rt.precision} on {rt.device}, "
          f"{torch.get_num_threads()} threads", flush=True)
    if rt.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(rt.device)
    times = []
    for i in range(args.warmup + args.steps):
        if rt.device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        with rt.autocast():
            out = model(batch, generator=gen)
        out.loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if rt.device.type == "cuda":
            torch.cuda.synchronize()
        if i >= args.warmup:
            times.append(time.perf_counter() - start)
    median = sorted(times)[len(times) // 2]
    print(f"step time median {median * 1e3:.1f} ms (min {min(times) * 1e3:.1f}, max {max(times) * 1e3:.1f})")
    print(f"throughput {args.batch / median:.2f} samples/s")
    print(f"peak memory {peak_memory_mb(rt.device):.0f} MiB ({'CUDA allocated' if rt.device.type == 'cuda' else 'process RSS'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Record a training trajectory of the OFFICIAL VideoMAE (MCG-NJU/VideoMAE) or VideoMAE v2
(OpenGVLab/VideoMAEv2) pre-training loop -- ``run_mae_pretraining.py`` + ``engine_for_pretraining.py``
-- on a tiny model, for ``tests/training_parity/test_videomae_pretrain_trajectory.py``.

The official ``main(args)`` runs unchanged: its seed, ``DistributedSampler`` and loader, the lr /
min_lr / warmup_lr scaling by batch/256, ``optim_factory.create_optimizer`` (groups by
``model.no_weight_decay()``), ``utils.cosine_scheduler`` for lr and weight decay, the per-iteration
schedule, clipping and ``NativeScalerWithGradNormCount``; v2's tube encoder mask and running-cell
decoder mask come from its ``DataAugmentationForVideoMAEv2`` generators. Neither loop accumulates
gradients (``train_one_epoch`` steps the optimizer every iteration), so none is recorded.
Only what cannot run on a CPU-only machine, or what records, is replaced (listed in each
fixture's ``config.json`` as ``stand_ins``):

- ``build_pretraining_dataset`` -> a pool of standard-normal clips (already "normalised": the
  stand-in for decoding + ``GroupMultiScaleCrop`` + ``GroupNormalize``) whose masks are drawn by
  the official masking generators of the official ``DataAugmentationForVideoMAE(v2)(args)``;
- the official ``PretrainVisionTransformer`` class at a tiny size, registered with timm as
  ``pretrain_videomae_traj`` (the shipped builders are ViT-S..g);
- ``torch.cuda.synchronize`` -> no-op; CUDA autocast and ``GradScaler`` are disabled by the CPU
  build (fp32); ``torch._six.inf`` restored (v1 ``utils.py``, torch >= 2); stub ``decord``, ``cv2``, ``pandas`` and
  ``tensorboardX`` modules (imported, never used here);
- v2: ``torch.compile`` -> identity (``get_model`` compiles for torch > 1.13.1; CPU inductor is
  slow and changes round-off), ``--num_workers 1`` (its loader sets ``persistent_workers=True``);
- recording wrappers around the model's ``forward`` (clips -> pool index, masks), the loss
  scaler (loss, grad norm, every group's lr and weight decay) and ``create_optimizer`` (groups'
  parameter names, initial weights); they call the originals.

Usage (from the repository root; the official code is NOT part of the repository)::

    git clone https://github.com/MCG-NJU/VideoMAE .official/VideoMAE        # commit 14ef8d8
    git clone https://github.com/OpenGVLab/VideoMAEv2 .official/VideoMAEv2  # commit 29eab1e
    pip install --no-deps --target .official/site timm==0.4.12
    python plugins/video/scripts/make_videomae_pretrain_trajectory.py --loop videomae --set a --out tests/fixtures/trajectories/videomae_pretrain
    python plugins/video/scripts/make_videomae_pretrain_trajectory.py --loop videomae --set b --out tests/fixtures/trajectories/videomae_pretrain-b
    python plugins/video/scripts/make_videomae_pretrain_trajectory.py --loop videomaev2 --set a --out tests/fixtures/trajectories/videomaev2_pretrain
    python plugins/video/scripts/make_videomae_pretrain_trajectory.py --loop videomaev2 --set b --out tests/fixtures/trajectories/videomaev2_pretrain-b
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import types
from functools import partial
from pathlib import Path

LOOPS = {
    "videomae": dict(repo="MCG-NJU/VideoMAE", commit="14ef8d856287c94ef1f985fe30f958eb4ec2c55d",
                     checkout=".official/VideoMAE", model_module="modeling_pretrain",
                     files=["run_mae_pretraining.py", "engine_for_pretraining.py", "optim_factory.py", "utils.py",
                            "datasets.py", "masking_generator.py", "modeling_pretrain.py", "modeling_finetune.py"]),
    "videomaev2": dict(repo="OpenGVLab/VideoMAEv2", commit="29eab1e8a588d1b3ec0cdec7b03a86cca491b74b",
                       checkout=".official/VideoMAEv2", model_module="models.modeling_pretrain",
                       files=["run_mae_pretraining.py", "engine_for_pretraining.py", "optim_factory.py", "utils.py",
                              "dataset/pretrain_datasets.py", "dataset/masking_generator.py",
                              "models/modeling_pretrain.py", "models/modeling_finetune.py"]),
}

SETS = {
    # v1: 16 frames (its PatchEmbed fixes num_frames=16), tubelet 2; 8 clips, batch 2 -> 4 steps per epoch
    ("videomae", "a"): dict(img_size=8, patch_size=4, num_frames=16, embed_dim=32, depth=2, num_heads=2,
                            decoder_embed_dim=16, decoder_depth=1, decoder_num_heads=2, mlp_ratio=4.0,
                            mask_ratio=0.75, normlize_target=True, pool=8, batch_size=2, epochs=8, warmup_epochs=3,
                            lr=0.4, warmup_lr=0.01, min_lr=0.001, weight_decay=0.05, weight_decay_end=None,
                            clip_grad=None, seed=0, data_seed=1),
    # other sizes, seeds and options: 2x2 patches (128 tokens), mlp 2, plain pixels, ratio 0.5, a wd schedule
    ("videomae", "b"): dict(img_size=8, patch_size=2, num_frames=16, embed_dim=24, depth=3, num_heads=3,
                            decoder_embed_dim=12, decoder_depth=2, decoder_num_heads=2, mlp_ratio=2.0,
                            mask_ratio=0.5, normlize_target=False, pool=6, batch_size=3, epochs=15, warmup_epochs=4,
                            lr=0.6, warmup_lr=0.05, min_lr=0.0, weight_decay=0.1, weight_decay_end=0.3,
                            clip_grad=None, seed=3, data_seed=7),
    # v2: 4 frames, 4x4 patches of 16x16 (32 tokens), tube 0.75 + running cell 0.5, 2 clips per video
    # (--num_sample), clipping as vit_g_hybrid_pt.sh (0.02: below every norm, so it acts at every step)
    ("videomaev2", "a"): dict(img_size=16, patch_size=4, num_frames=4, embed_dim=32, depth=2, num_heads=2,
                              decoder_embed_dim=16, decoder_depth=1, decoder_num_heads=2, mlp_ratio=4.0,
                              mask_ratio=0.75, decoder_mask_ratio=0.5, num_sample=2, normlize_target=True, pool=6,
                              batch_size=2, epochs=11, warmup_epochs=4, lr=0.6, warmup_lr=0.01, min_lr=0.001,
                              weight_decay=0.05, weight_decay_end=None, clip_grad=0.02, seed=0, data_seed=1),
    # 8x8 clips, 2x2 patches, 6 frames (3x4x4 = 48 tokens), tube 0.5, running cell 0.25, one clip per video,
    # plain pixels, a wd schedule (the clip value is the recipe's, as in set a)
    ("videomaev2", "b"): dict(img_size=8, patch_size=2, num_frames=6, embed_dim=24, depth=3, num_heads=3,
                              decoder_embed_dim=12, decoder_depth=2, decoder_num_heads=2, mlp_ratio=2.0,
                              mask_ratio=0.5, decoder_mask_ratio=0.25, num_sample=1, normlize_target=False, pool=9,
                              batch_size=3, epochs=10, warmup_epochs=3, lr=0.8, warmup_lr=0.05, min_lr=0.0,
                              weight_decay=0.1, weight_decay_end=0.02, clip_grad=0.02, seed=5, data_seed=11),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--loop", choices=sorted(LOOPS), required=True)
    parser.add_argument("--set", choices=["a", "b"], required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--official", type=Path, default=None, help="the official checkout (default: .official/<repo>)")
    parser.add_argument("--timm", type=Path, default=Path(".official/site"), help="folder holding timm 0.4.12")
    cli = parser.parse_args()
    loop, cfg = LOOPS[cli.loop], dict(SETS[(cli.loop, cli.set)])
    v2 = cli.loop == "videomaev2"
    official = cli.official or Path(loop["checkout"])

    import numpy as np
    import torch

    torch.set_num_threads(1)
    from mmim.timm_compat import import_torchvision

    import_torchvision()  # stub torchvision op schemas so that (old) timm imports beside this torch build
    sys.path[:0] = [str(cli.timm.resolve()), str(official.resolve())]
    for name in ("datasets", "dataset", "models", "utils"):  # names the official checkout owns
        sys.modules.pop(name, None)
    import timm

    if timm.__version__ != "0.4.12":
        raise SystemExit(f"timm {timm.__version__} from {timm.__file__}: put timm 0.4.12 in --timm {cli.timm}")
    torch.cuda.synchronize = lambda *a, **k: None  # engine_for_pretraining calls it after every iteration
    six = types.ModuleType("torch._six")  # v1 utils.py imports inf from it (removed in torch 2.0)
    six.inf = math.inf
    sys.modules["torch._six"] = six
    for stub in ("decord", "tensorboardX", "cv2", "pandas"):  # imported by the dataset / logger modules, never used here
        if stub not in sys.modules:
            mod = types.ModuleType(stub)
            mod.VideoReader = mod.cpu = mod.SummaryWriter = None
            sys.modules[stub] = mod
    if "numpy.lib.function_base" not in sys.modules:  # v1 kinetics.py imports disp from it (gone in numpy 2)
        try:
            import numpy.lib.function_base  # noqa: F401
        except ImportError:
            mod = types.ModuleType("numpy.lib.function_base")
            mod.disp = print
            sys.modules["numpy.lib.function_base"] = mod
    if v2:
        torch.compile = lambda model, *a, **k: model

    import importlib

    import run_mae_pretraining as rmp
    from safetensors.torch import save_file

    modeling = importlib.import_module(loop["model_module"])
    aug_module = importlib.import_module("dataset.pretrain_datasets" if v2 else "datasets")

    commit = loop["commit"]
    if (official / ".git").exists():
        commit = subprocess.run(["git", "-C", str(official), "rev-parse", "HEAD"], capture_output=True,
                                text=True).stdout.strip()
        if commit != loop["commit"]:
            print(f"warning: {official} is at {commit}, the fixtures were made from {loop['commit']}")

    # ---- data: a pool of clips (pool, [num_sample,] C, T, H, W), masks by the official generators
    n_sample = cfg.get("num_sample", 1)
    g = torch.Generator().manual_seed(cfg["data_seed"])
    shape = (cfg["pool"], n_sample, 3, cfg["num_frames"], cfg["img_size"], cfg["img_size"])
    clips = torch.randn(*shape, generator=g)

    class Pool(torch.utils.data.Dataset):
        def __init__(self, args) -> None:
            self.aug = (aug_module.DataAugmentationForVideoMAEv2 if v2 else aug_module.DataAugmentationForVideoMAE)(args)

        def __len__(self) -> int:
            return len(clips)

        def __getitem__(self, i: int):
            if not v2:
                return clips[i, 0], self.aug.masked_position_generator()
            out = []
            for j in range(n_sample):  # as the official transform: encoder mask, then decoder mask, per clip
                enc = self.aug.encoder_mask_map_generator()
                dec = self.aug.decoder_mask_map_generator()
                out.append((clips[i, j], enc, dec))
            if n_sample == 1:
                return out[0]
            return tuple(list(x) for x in zip(*out))

    rmp.build_pretraining_dataset = Pool

    # ---- the official model class at a tiny size, registered with timm
    tiny = dict(img_size=cfg["img_size"], patch_size=cfg["patch_size"], encoder_in_chans=3, encoder_num_classes=0,
                encoder_embed_dim=cfg["embed_dim"], encoder_depth=cfg["depth"], encoder_num_heads=cfg["num_heads"],
                decoder_num_classes=3 * 2 * cfg["patch_size"] ** 2, decoder_embed_dim=cfg["decoder_embed_dim"],
                decoder_num_heads=cfg["decoder_num_heads"], mlp_ratio=cfg["mlp_ratio"], qkv_bias=True,
                norm_layer=partial(torch.nn.LayerNorm, eps=1e-6))

    def pretrain_videomae_traj(pretrained=False, **kwargs):
        return modeling.PretrainVisionTransformer(**tiny, **kwargs)

    pretrain_videomae_traj.__module__ = modeling.__name__
    timm.models.registry.register_model(pretrain_videomae_traj)

    # ---- recorders (each calls the official function it wraps)
    flat = clips.flatten(0, 1).flatten(1)
    read, enc_masks, dec_masks = [], [], []
    original_forward = modeling.PretrainVisionTransformer.forward

    def forward(self, x, mask, *rest):
        if torch.is_grad_enabled():
            hits = (x.detach().flatten(1)[:, None, :] == flat[None]).all(-1)
            assert bool((hits.sum(1) == 1).all()), "a clip that is not in the pool"
            read.append(hits.long().argmax(1))
            enc_masks.append(mask.detach().clone())
            if rest:
                dec_masks.append(rest[0].detach().clone())
        return original_forward(self, x, mask, *rest)

    modeling.PretrainVisionTransformer.forward = forward

    held: dict = {}
    original_create = rmp.create_optimizer

    def create_optimizer(args, model, *a, **k):
        optimizer = original_create(args, model, *a, **k)
        names = {id(p): n for n, p in model.named_parameters()}
        held.update(model=model, initial={k: v.detach().clone() for k, v in model.state_dict().items()},
                    group_names=[[names[id(p)] for p in grp["params"]] for grp in optimizer.param_groups])
        return optimizer

    rmp.create_optimizer = create_optimizer

    losses, lrs, wds, norms = [], [], [], []

    class RecordingScaler(rmp.NativeScaler):
        def __call__(self, loss, optimizer, clip_grad=None, parameters=None, create_graph=False, update_grad=True):
            losses.append(loss.item())
            lrs.append([grp["lr"] for grp in optimizer.param_groups])
            wds.append([grp["weight_decay"] for grp in optimizer.param_groups])
            norm = super().__call__(loss, optimizer, clip_grad, parameters, create_graph, update_grad)
            norms.append(float(norm))
            return norm

        def state_dict(self):  # a disabled GradScaler (CPU build) has an empty state; the loop logs its "scale"
            return super().state_dict() or {"scale": 1.0}

    rmp.NativeScaler = RecordingScaler

    argv = ["--model", "pretrain_videomae_traj", "--decoder_depth", str(cfg["decoder_depth"]),
            "--mask_type", "tube", "--mask_ratio", str(cfg["mask_ratio"]), "--input_size", str(cfg["img_size"]),
            "--batch_size", str(cfg["batch_size"]), "--epochs", str(cfg["epochs"]),
            "--warmup_epochs", str(cfg["warmup_epochs"]), "--lr", str(cfg["lr"]), "--warmup_lr", str(cfg["warmup_lr"]),
            "--min_lr", str(cfg["min_lr"]), "--weight_decay", str(cfg["weight_decay"]),
            "--opt", "adamw", "--opt_betas", "0.9", "0.95", "--num_frames", str(cfg["num_frames"]),
            "--seed", str(cfg["seed"]), "--device", "cpu", "--num_workers", "1" if v2 else "0", "--no_pin_mem",
            "--output_dir", "", "--data_path", "unused"]
    if cfg["weight_decay_end"] is not None:
        argv += ["--weight_decay_end", str(cfg["weight_decay_end"])]
    if cfg["clip_grad"] is not None:
        argv += ["--clip_grad", str(cfg["clip_grad"])]
    if v2:
        argv += ["--decoder_mask_type", "run_cell", "--decoder_mask_ratio", str(cfg["decoder_mask_ratio"]),
                 "--num_sample", str(n_sample), "--tubelet_size", "2"]
    saved, sys.argv = sys.argv, ["run_mae_pretraining.py", *argv]
    try:
        args = rmp.get_args()  # parses sys.argv
    finally:
        sys.argv = saved
    # --normlize_target is declared type=bool, so no command line can turn it off; set it as main() reads it
    args.normlize_target = cfg["normlize_target"]
    args.log_dir = None  # no TensorBoard writer
    rmp.main(args)

    # ---- write the fixture
    b = cfg["batch_size"]
    steps = len(norms)
    assert len(losses) == steps and len(read) == steps, (len(losses), len(read), steps)
    model = held["model"]
    t, h = cfg["num_frames"] // 2, cfg["img_size"] // cfg["patch_size"]
    num_patches = t * h * h
    index = torch.stack(read)  # (steps, b * n_sample) flat clip index = pool index * n_sample + j
    assert bool((index.view(steps, b, n_sample) % n_sample == torch.arange(n_sample)).all())
    out = cli.out
    out.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in held["initial"].items()}, out / "initial_state.safetensors")
    save_file({k: v.detach().contiguous() for k, v in model.state_dict().items()}, out / "final_state.safetensors")
    records = {
        "clips": clips if v2 else clips[:, 0],
        "sample_index": (index.view(steps, b, n_sample)[..., 0] // n_sample).to(torch.int16),
        "bool_masked_pos": torch.stack(enc_masks).view(steps, b * n_sample, num_patches).to(torch.uint8),
        "loss": torch.tensor(losses, dtype=torch.float64),
        "lr": torch.tensor(lrs, dtype=torch.float64),
        "weight_decay": torch.tensor(wds, dtype=torch.float64),
        "grad_norm": torch.tensor(norms, dtype=torch.float64),
    }
    if v2:
        records["decode_masked_pos"] = torch.stack(dec_masks).view(steps, b * n_sample, num_patches).to(torch.uint8)
    save_file(records, out / "trajectory.safetensors")
    steps_per_epoch = steps // cfg["epochs"]
    config = {
        **cfg,
        "loop": cli.loop,
        "set": cli.set,
        "num_sample": n_sample,
        "tubelet_size": 2,
        "window_size": [t, h, h],
        "num_patches": num_patches,
        "norm_layer_eps": 1e-6,
        "accum_iter": 1,
        "optimizer_steps": steps,
        "steps_per_epoch": steps_per_epoch,
        "warmup_steps": cfg["warmup_epochs"] * steps_per_epoch,
        "total_batch_size": b,
        "scaled": {"lr": args.lr, "min_lr": args.min_lr, "warmup_lr": args.warmup_lr},
        "warmup_lr_unused": "--warmup_lr is parsed and scaled, but run_mae_pretraining.py never passes it to "
                            "utils.cosine_scheduler (start_warmup_value=0): the recorded warmup starts at 0",
        "betas": [0.9, 0.95],
        "eps": 1e-8,
        "group_names": held["group_names"],
        "no_gradient_accumulation": "engine_for_pretraining.py train_one_epoch steps the optimizer every iteration "
                                    "(no --accum_iter / update_freq in run_mae_pretraining.py): recorded without",
        "official": {"repo": loop["repo"], "commit": commit, "files": loop["files"], "argv": argv,
                     "set_after_parsing": {"normlize_target": cfg["normlize_target"], "log_dir": None}},
        "stand_ins": [
            "build_pretraining_dataset -> pool of standard-normal clips (trajectory.clips), masks from the official "
            f"{'DataAugmentationForVideoMAEv2' if v2 else 'DataAugmentationForVideoMAE'}(args) generators",
            "timm model 'pretrain_videomae_traj': the official PretrainVisionTransformer at the tiny size above",
            "torch.cuda.synchronize -> no-op; torch.cuda.amp autocast/GradScaler disabled by the CPU build (fp32)",
            "torch._six.inf = math.inf (torch >= 2); stub decord, cv2, pandas and tensorboardX modules (never called); "
            "numpy.lib.function_base.disp = print for v1 kinetics.py (numpy 2, never called)",
            *(["torch.compile -> identity (get_model compiles for torch > 1.13.1)",
               "--num_workers 1 (the loader sets persistent_workers=True, which needs a worker)"] if v2 else []),
            "recording wrappers around PretrainVisionTransformer.forward, create_optimizer and "
            "NativeScalerWithGradNormCount (whose state_dict() gives scale 1.0 where the disabled GradScaler "
            "gives {}: the loop only logs it)",
            "args.log_dir = None, --output_dir '' (no TensorBoard, no checkpoints)",
        ],
        "records": {
            "clips": "[pool, num_sample, C, T, H, W] (v2) / [pool, C, T, H, W] (v1) float32 clips, already normalised",
            "sample_index": "[steps, batch] pool index of each video, in the order the official loader read them",
            "bool_masked_pos": "[steps, batch*num_sample, L] encoder mask (1 = masked) of each clip, clips of a "
                               "video adjacent",
            "decode_masked_pos": "[steps, batch*num_sample, L] v2 decoder mask (1 = not decoded)",
            "loss": "[steps] loss of each iteration",
            "lr": "[steps, groups] lr of each official param group at the optimizer step",
            "weight_decay": "[steps, groups] weight decay of each official param group",
            "grad_norm": "[steps] total L2 gradient norm NativeScalerWithGradNormCount returned (before clipping)",
            "initial_state/final_state": "model.state_dict() before the first / after the last step, official keys",
        },
        "env": {"torch": torch.__version__, "timm": timm.__version__, "numpy": np.__version__, "device": "cpu",
                "dtype": "float32", "threads": 1},
    }
    (out / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    print(f"wrote {out}: {steps} optimizer steps, final loss {losses[-1]:.6f}")


if __name__ == "__main__":
    main()

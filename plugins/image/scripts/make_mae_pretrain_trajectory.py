"""Record a training trajectory of the OFFICIAL MAE pre-training loop (facebookresearch/mae
``main_pretrain.py`` + ``engine_pretrain.py``) on a tiny model, for
``tests/training_parity/test_mae_pretrain_trajectory.py``.

The official ``main(args)`` runs unchanged: its seed, sampler, loader, ``blr * eff_batch / 256``
rule, ``optim_factory.add_weight_decay`` groups, ``AdamW(betas=(0.9, 0.95))``, per-iteration
warmup + cosine (``util/lr_sched.py``), gradient accumulation and ``NativeScalerWithGradNormCount``.
Only what cannot run on a CPU-only machine, or what records, is replaced (written into the
fixture's ``config.json`` as ``stand_ins``):

- ``datasets.ImageFolder`` -> a pool of standard-normal images (already "normalised"); its label is
  the sample index, so the order the official sampler and loader consumed is recorded;
- ``models_mae.mae_vit_traj``: the official ``MaskedAutoencoderViT`` class at a tiny size (the
  shipped archs are ViT-B/L/H), as the forward-parity fixtures do;
- ``torch.cuda.synchronize`` -> no-op (a CPU build has no CUDA); ``torch.cuda.amp.autocast`` and
  ``GradScaler`` run as the CPU build makes them: disabled, so the loop is fp32;
- timm 0.4.5 stands for 0.3.2 (``main_pretrain.py`` asserts 0.3.2, which does not import under
  torch 2.x); ``add_weight_decay`` is the same function in both;
- ``np.float = float`` for ``util/pos_embed.py`` (numpy >= 1.24), a ``torch._six`` holding ``inf``
  for ``util/misc.py`` (removed in torch 2.0), stub torchvision op schemas so the
  old timm imports next to this torch (``mmim.timm_compat``);
- recording wrappers around ``random_masking`` (the kept/masked ids of every micro-batch),
  the loss scaler (grad norm, every group's lr and weight decay at each optimizer step) and
  ``add_weight_decay`` (the groups' parameter names, initial weights); they call the originals.

Usage (from the repository root; the official code is NOT part of the repository)::

    git clone https://github.com/facebookresearch/mae .official/mae   # commit efb2a806
    pip install --no-deps --target .official/site timm==0.4.5
    python plugins/image/scripts/make_mae_pretrain_trajectory.py --set a --out tests/fixtures/trajectories/mae_pretrain
    python plugins/image/scripts/make_mae_pretrain_trajectory.py --set b --out tests/fixtures/trajectories/mae_pretrain-b
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

OFFICIAL_COMMIT = "efb2a8062c206524e35e47d04501ed4f544c0ae8"

SETS = {
    # 16x16 images, 4x4 patches; 16 images, batch 4 x accum 2 -> 2 optimizer steps per epoch
    "a": dict(img_size=16, patch_size=4, embed_dim=32, depth=2, num_heads=2, decoder_embed_dim=16,
              decoder_depth=1, decoder_num_heads=2, mlp_ratio=4.0, norm_pix_loss=True, mask_ratio=0.75,
              pool=16, batch_size=4, accum_iter=2, epochs=16, warmup_epochs=5, blr=0.1, min_lr=1e-5,
              weight_decay=0.2, seed=0, data_seed=1),
    # other sizes, seeds and options: 12x12 images, 3x3 patches (16), mlp 2, plain pixels, ratio 0.5
    "b": dict(img_size=12, patch_size=3, embed_dim=24, depth=3, num_heads=3, decoder_embed_dim=12,
              decoder_depth=2, decoder_num_heads=2, mlp_ratio=2.0, norm_pix_loss=False, mask_ratio=0.5,
              pool=12, batch_size=3, accum_iter=2, epochs=15, warmup_epochs=4, blr=0.2, min_lr=0.0,
              weight_decay=0.3, seed=3, data_seed=7),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--set", choices=sorted(SETS), required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--official", type=Path, default=Path(".official/mae"), help="facebookresearch/mae checkout")
    parser.add_argument("--timm", type=Path, default=Path(".official/site"), help="folder holding timm 0.4.5")
    cli = parser.parse_args()
    cfg = SETS[cli.set]

    import numpy as np
    import torch

    torch.set_num_threads(1)
    from mmim.timm_compat import import_torchvision

    import_torchvision()  # stub torchvision op schemas so that (old) timm imports beside this torch build
    sys.path[:0] = [str(cli.timm.resolve()), str(cli.official.resolve())]
    import timm

    if not timm.__version__.startswith("0.4."):
        raise SystemExit(f"timm {timm.__version__} from {timm.__file__}: put timm 0.4.5 in --timm {cli.timm}")
    timm_version = timm.__version__
    timm.__version__ = "0.3.2"  # main_pretrain.py asserts it; 0.3.2 itself cannot import under torch 2.x
    np.float = float  # util/pos_embed.py (numpy < 1.24 alias; the builtin is what it meant)
    torch.cuda.synchronize = lambda *a, **k: None  # engine_pretrain calls it after every iteration
    six = types.ModuleType("torch._six")  # util/misc.py imports inf from it (removed in torch 2.0)
    six.inf = math.inf
    sys.modules["torch._six"] = six

    import main_pretrain
    import models_mae
    from safetensors.torch import save_file

    commit = OFFICIAL_COMMIT  # an exported tree (git archive) has no .git of its own: never ask the enclosing repo
    if (cli.official / ".git").exists():
        commit = subprocess.run(["git", "-C", str(cli.official), "rev-parse", "HEAD"], capture_output=True,
                                text=True).stdout.strip()
        if commit != OFFICIAL_COMMIT:
            print(f"warning: {cli.official} is at {commit}, the fixtures were made from {OFFICIAL_COMMIT}")

    # ---- data: a pool of images; the label is the index, recorded in the order the loop reads them
    g = torch.Generator().manual_seed(cfg["data_seed"])
    images = torch.randn(cfg["pool"], 3, cfg["img_size"], cfg["img_size"], generator=g)
    read: list[int] = []

    class Pool(torch.utils.data.Dataset):
        def __init__(self, *args, **kwargs) -> None:
            pass

        def __len__(self) -> int:
            return len(images)

        def __getitem__(self, i: int):
            read.append(int(i))
            return images[i], i

    main_pretrain.datasets.ImageFolder = Pool

    # ---- the official model class at a tiny size
    models_mae.mae_vit_traj = partial(
        models_mae.MaskedAutoencoderViT, img_size=cfg["img_size"], patch_size=cfg["patch_size"], in_chans=3,
        embed_dim=cfg["embed_dim"], depth=cfg["depth"], num_heads=cfg["num_heads"],
        decoder_embed_dim=cfg["decoder_embed_dim"], decoder_depth=cfg["decoder_depth"],
        decoder_num_heads=cfg["decoder_num_heads"], mlp_ratio=cfg["mlp_ratio"],
        norm_layer=partial(torch.nn.LayerNorm, eps=1e-6))

    # ---- recorders (each calls the official function it wraps)
    ids_shuffle: list[torch.Tensor] = []
    original_masking = models_mae.MaskedAutoencoderViT.random_masking

    def random_masking(self, x, mask_ratio):
        x_masked, mask, ids_restore = original_masking(self, x, mask_ratio)
        ids_shuffle.append(torch.argsort(ids_restore, dim=1))
        return x_masked, mask, ids_restore

    models_mae.MaskedAutoencoderViT.random_masking = random_masking

    held: dict = {}
    original_groups = main_pretrain.optim_factory.add_weight_decay

    def add_weight_decay(model, weight_decay=1e-5, skip_list=()):
        groups = original_groups(model, weight_decay, skip_list)
        names = {id(p): n for n, p in model.named_parameters()}
        held.update(model=model, initial={k: v.detach().clone() for k, v in model.state_dict().items()},
                    group_names=[[names[id(p)] for p in grp["params"]] for grp in groups])
        return groups

    main_pretrain.optim_factory.add_weight_decay = add_weight_decay

    losses, lrs, wds, norms = [], [], [], []

    class RecordingScaler(main_pretrain.NativeScaler):
        def __call__(self, loss, optimizer, clip_grad=None, parameters=None, create_graph=False, update_grad=True):
            losses.append(loss.item() * held["args"].accum_iter)  # the loop divided it by accum_iter (a power of 2)
            norm = super().__call__(loss, optimizer, clip_grad, parameters, create_graph, update_grad)
            if update_grad:
                norms.append(float(norm))
                lrs.append([grp["lr"] for grp in optimizer.param_groups])
                wds.append([grp["weight_decay"] for grp in optimizer.param_groups])
            return norm

    main_pretrain.NativeScaler = RecordingScaler

    argv = ["--model", "mae_vit_traj", "--input_size", str(cfg["img_size"]), "--batch_size", str(cfg["batch_size"]),
            "--accum_iter", str(cfg["accum_iter"]), "--epochs", str(cfg["epochs"]),
            "--warmup_epochs", str(cfg["warmup_epochs"]), "--blr", str(cfg["blr"]), "--min_lr", str(cfg["min_lr"]),
            "--weight_decay", str(cfg["weight_decay"]), "--mask_ratio", str(cfg["mask_ratio"]),
            "--seed", str(cfg["seed"]), "--device", "cpu", "--num_workers", "0", "--no_pin_mem",
            "--output_dir", "", "--data_path", "unused"]
    if cfg["norm_pix_loss"]:
        argv.append("--norm_pix_loss")
    args = main_pretrain.get_args_parser().parse_args(argv)
    args.log_dir = None  # no TensorBoard writer
    held["args"] = args
    main_pretrain.main(args)

    # ---- write the fixture
    accum, b = cfg["accum_iter"], cfg["batch_size"]
    steps = len(norms)
    micro = steps * accum
    assert len(losses) == micro and len(ids_shuffle) == micro and len(read) == micro * b, (len(losses), len(read))
    num_patches = (cfg["img_size"] // cfg["patch_size"]) ** 2
    model = held["model"]
    out = cli.out
    out.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in held["initial"].items()}, out / "initial_state.safetensors")
    save_file({k: v.detach().contiguous() for k, v in model.state_dict().items()}, out / "final_state.safetensors")
    save_file({
        "images": images,
        "sample_index": torch.tensor(read, dtype=torch.int16).view(steps, accum, b),
        "ids_shuffle": torch.stack(ids_shuffle).to(torch.int16).view(steps, accum, b, num_patches),
        "loss": torch.tensor(losses, dtype=torch.float64).view(steps, accum),
        "lr": torch.tensor(lrs, dtype=torch.float64),
        "weight_decay": torch.tensor(wds, dtype=torch.float64),
        "grad_norm": torch.tensor(norms, dtype=torch.float64),
    }, out / "trajectory.safetensors")
    config = {
        **{k: v for k, v in cfg.items()},
        "set": cli.set,
        "num_patches": num_patches,
        "len_keep": int(num_patches * (1 - cfg["mask_ratio"])),
        "norm_layer_eps": 1e-6,
        "optimizer_steps": steps,
        "steps_per_epoch": steps // cfg["epochs"],
        "warmup_steps": cfg["warmup_epochs"] * steps // cfg["epochs"],
        "lr": args.lr,
        "betas": [0.9, 0.95],
        "grad_clip": None,
        "group_names": held["group_names"],
        "official": {"repo": "facebookresearch/mae", "commit": commit,
                     "files": ["main_pretrain.py", "engine_pretrain.py", "util/lr_sched.py", "util/misc.py",
                               "models_mae.py"],
                     "argv": argv},
        "stand_ins": [
            "datasets.ImageFolder -> pool of standard-normal images (trajectory.images); label = index",
            "models_mae.mae_vit_traj: the official MaskedAutoencoderViT at the tiny size above",
            "torch.cuda.synchronize -> no-op; torch.cuda.amp autocast/GradScaler disabled by the CPU build (fp32)",
            f"timm {timm_version} reports itself as 0.3.2 for main_pretrain.py's version assert",
            "np.float = float for util/pos_embed.py; torch._six.inf = math.inf for util/misc.py (torch >= 2)",
            "recording wrappers around random_masking, add_weight_decay and NativeScalerWithGradNormCount",
            "args.log_dir = None, --output_dir '' (no TensorBoard, no checkpoints)",
        ],
        "records": {
            "images": "[pool, 3, H, W] float32 data pool",
            "sample_index": "[steps, accum, batch] pool index of each sample, in the order the official loader read it",
            "ids_shuffle": "[steps, accum, batch, L] argsort of the official masking noise: first len_keep kept",
            "loss": "[steps, accum] loss of each micro-batch (before the division by accum_iter)",
            "lr": "[steps, groups] lr of each official param group at the optimizer step",
            "weight_decay": "[steps, groups] weight decay of each official param group",
            "grad_norm": "[steps] total L2 gradient norm NativeScalerWithGradNormCount returned",
            "initial_state/final_state": "model.state_dict() before the first / after the last step, official keys",
        },
        "env": {"torch": torch.__version__, "timm": timm_version, "numpy": np.__version__, "device": "cpu",
                "dtype": "float32", "threads": 1},
    }
    (out / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    print(f"wrote {out}: {steps} optimizer steps, final loss {losses[-1]:.6f}")


if __name__ == "__main__":
    main()

"""Record a training trajectory of the OFFICIAL Audio-MAE pre-training loop (facebookresearch/AudioMAE
``main_pretrain.py`` + ``engine_pretrain.py``) on a tiny model, for
``tests/training_parity/test_audiomae_pretrain_trajectory.py``.

The official ``main(args)`` runs unchanged: its seed, ``DistributedSampler`` (one replica; never
``set_epoch``-ed outside distributed mode, so every epoch reads the same order), loader,
``blr * eff_batch / 256`` rule, timm ``add_weight_decay`` groups (no skip list),
``AdamW(betas=(0.9, 0.95))``, per-iteration warmup + cosine (``util/lr_sched.py``), gradient
accumulation (``--accum_iter``) and ``NativeScalerWithGradNormCount`` (no clipping), with the local
(shifted-window, ``--decoder_mode 1``) decoder the released model uses. Only what cannot run on a
CPU-only machine, or what records, is replaced (listed in the fixture's ``config.json`` as
``stand_ins``):

- ``AudiosetDataset`` -> a pool of standard-normal spectrograms (already "normalised"); its label
  is the sample index, so the order the official sampler and loader consumed is recorded;
- ``models_mae.audiomae_traj``: the official ``MaskedAutoencoderViT`` at a tiny size. ``main``
  passes ``img_size=(target_length, 128)``; the tiny model keeps the 64 x 8 token grid the local
  decoder hard-codes (``feat_size``) with smaller patches, and a narrower meta network (the
  ``meta_hidden_dim=384`` default of ``WindowMultiHeadAttention``, which the block never passes,
  is lowered: the tiny size). The decoder's meta-MLP dropout
  (hard-coded 0.1, the one random draw of a training forward besides the mask) is set to 0, so the
  run is deterministic; mmim's run sets its ``meta_dropout`` to 0 likewise;
- ``torch.Tensor.cuda`` -> identity (``forward`` returns ``torch.FloatTensor([0.0]).cuda()``),
  ``torch.cuda.synchronize`` -> no-op; CUDA autocast and ``GradScaler`` run as the CPU build makes
  them: disabled, so the loop is fp32;
- timm 0.4.5 stands for 0.3.2 (asserted by ``main_pretrain.py``; it does not import under torch
  2.x), with the repository's ``timm_patch/swin_transformer.py`` and ``helpers.py`` in place of
  timm's, as ``timm_patch.sh`` installs them; a ``torchaudio`` placeholder module (``dataset.py``
  imports it; the replaced dataset never calls it);
- ``np.float = float``, ``torch._six.inf``, stub torchvision op schemas (``mmim.timm_compat``);
- recording wrappers around ``random_masking``, ``add_weight_decay`` and the loss scaler; they
  call the originals.

Usage (from the repository root; the official code is NOT part of the repository)::

    git clone https://github.com/facebookresearch/AudioMAE .official/AudioMAE   # commit bd60e296
    pip install --no-deps --target .official/site timm==0.4.5
    python plugins/audio/scripts/make_audiomae_pretrain_trajectory.py --set a --out tests/fixtures/trajectories/audiomae_pretrain
    python plugins/audio/scripts/make_audiomae_pretrain_trajectory.py --set b --out tests/fixtures/trajectories/audiomae_pretrain-b
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import subprocess
import sys
import types
from pathlib import Path

OFFICIAL_COMMIT = "bd60e29651285f80d32a6405082835ad26e6f19f"
GRID = (64, 8)  # the token grid the local decoder hard-codes (feat_size) for non-custom patches

# The decoder has 16 heads (hard-coded) and cosine attention (q and k normalised per head). With 1-d or
# 2-d heads (width 16 or 32) the direction q / |q| of a short q swings with round-off and the official
# loop itself is chaotic: run with 1 and with 2 threads it drifts apart by 6e-4 in gradient norm and
# 2e-3 in parameters within 32 steps (width 32). With 3-d heads (48) the two agree to 6e-7.
SETS = {
    # 128 x 16 spectrograms, 2 x 2 patches (64 x 8 tokens); 8 clips, batch 2 x accum 2 -> 2 steps per epoch
    "a": dict(patch_size=2, embed_dim=32, depth=2, num_heads=2, decoder_embed_dim=48, meta_hidden_dim=16,
              mlp_ratio=1.0, norm_pix_loss=True, mask_ratio=0.8, pool=8, batch_size=2, accum_iter=2, epochs=16, warmup_epochs=5,
              blr=0.1, min_lr=1e-5, weight_decay=0.2, seed=0, data_seed=1),
    # other sizes, seeds and options: 192 x 24, 3 x 3 patches, plain targets, ratio 0.5, 1 step per epoch
    "b": dict(patch_size=3, embed_dim=24, depth=3, num_heads=3, decoder_embed_dim=48, meta_hidden_dim=24,
              mlp_ratio=1.0, norm_pix_loss=False, mask_ratio=0.5, pool=6, batch_size=3, accum_iter=2, epochs=30, warmup_epochs=8,
              blr=0.2, min_lr=0.0, weight_decay=0.3, seed=3, data_seed=7),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--set", choices=sorted(SETS), required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--official", type=Path, default=Path(".official/AudioMAE"),
                        help="facebookresearch/AudioMAE checkout")
    parser.add_argument("--timm", type=Path, default=Path(".official/site"), help="folder holding timm 0.4.5")
    cli = parser.parse_args()
    cfg = SETS[cli.set]
    img_size = (GRID[0] * cfg["patch_size"], GRID[1] * cfg["patch_size"])

    import numpy as np
    import torch

    torch.set_num_threads(1)
    from mmim.timm_compat import import_torchvision

    import_torchvision()
    official = cli.official.resolve()
    sys.path[:0] = [str(cli.timm.resolve()), str(official)]
    import timm

    if not timm.__version__.startswith("0.4."):
        raise SystemExit(f"timm {timm.__version__} from {timm.__file__}: put timm 0.4.5 in --timm {cli.timm}")
    timm_version = timm.__version__
    timm.__version__ = "0.3.2"
    # timm_patch.sh: the repo's helpers.py and swin_transformer.py replace timm's (loaded from the checkout)
    import timm.models.layers  # noqa: F401

    for name, file in (("timm.models.layers.helpers", "helpers.py"), ("timm.models.swin_transformer", "swin_transformer.py")):
        spec = importlib.util.spec_from_file_location(name, official / "timm_patch" / file)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    swin = sys.modules["timm.models.swin_transformer"]
    # the meta network's width is a keyword default (384) SwinTransformerBlock never passes: the tiny size
    defaults = swin.WindowMultiHeadAttention.__init__.__defaults__
    assert defaults == (0.0, 0.0, 384, False), defaults
    swin.WindowMultiHeadAttention.__init__.__defaults__ = (0.0, 0.0, cfg["meta_hidden_dim"], False)
    if importlib.util.find_spec("torchaudio") is None:
        sys.modules["torchaudio"] = types.ModuleType("torchaudio")  # dataset.py imports it at the top
    np.float = float
    torch.cuda.synchronize = lambda *a, **k: None
    torch.Tensor.cuda = lambda self, *a, **k: self  # forward's torch.FloatTensor([0.0]).cuda()
    six = types.ModuleType("torch._six")
    six.inf = math.inf
    sys.modules["torch._six"] = six

    import main_pretrain
    import models_mae
    from safetensors.torch import save_file

    commit = OFFICIAL_COMMIT
    if (cli.official / ".git").exists():
        commit = subprocess.run(["git", "-C", str(cli.official), "rev-parse", "HEAD"], capture_output=True,
                                text=True).stdout.strip()
        if commit != OFFICIAL_COMMIT:
            print(f"warning: {cli.official} is at {commit}, the fixtures were made from {OFFICIAL_COMMIT}")

    # ---- data: a pool of spectrograms (1, T, F); the label is the index, recorded in reading order
    g = torch.Generator().manual_seed(cfg["data_seed"])
    clips = torch.randn(cfg["pool"], 1, *img_size, generator=g)
    read: list[int] = []

    class Pool(torch.utils.data.Dataset):
        def __init__(self, *args, **kwargs) -> None:
            pass

        def __len__(self) -> int:
            return len(clips)

        def __getitem__(self, i: int):
            read.append(int(i))
            return clips[i], i, i  # (fbank, label, video) as AudiosetDataset with load_video=False

    main_pretrain.AudiosetDataset = Pool

    # ---- the official model class at a tiny size (main passes img_size=(target_length, 128))
    def audiomae_traj(**kwargs):
        kwargs.update(img_size=img_size, patch_size=cfg["patch_size"], embed_dim=cfg["embed_dim"], depth=cfg["depth"],
                      num_heads=cfg["num_heads"], decoder_embed_dim=cfg["decoder_embed_dim"],
                      mlp_ratio=cfg["mlp_ratio"], norm_layer=lambda d: torch.nn.LayerNorm(d, eps=1e-6))
        model = models_mae.MaskedAutoencoderViT(**kwargs)
        dropouts = [m for m in model.modules() if isinstance(m, torch.nn.Dropout) and m.p]
        assert dropouts and all(m.p == 0.1 for m in dropouts)  # the decoder's meta-MLP dropout only
        for m in dropouts:
            m.p = 0.0
        return model

    models_mae.audiomae_traj = audiomae_traj

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
            losses.append(loss.item() * held["args"].accum_iter)  # divided by accum_iter (a power of 2) in the loop
            norm = super().__call__(loss, optimizer, clip_grad, parameters, create_graph, update_grad)
            if update_grad:
                norms.append(float(norm))
                lrs.append([grp["lr"] for grp in optimizer.param_groups])
                wds.append([grp["weight_decay"] for grp in optimizer.param_groups])
            return norm

    main_pretrain.NativeScaler = RecordingScaler

    argv = ["--model", "audiomae_traj", "--batch_size", str(cfg["batch_size"]),
            "--accum_iter", str(cfg["accum_iter"]), "--epochs", str(cfg["epochs"]),
            "--warmup_epochs", str(cfg["warmup_epochs"]), "--blr", str(cfg["blr"]), "--min_lr", str(cfg["min_lr"]),
            "--weight_decay", str(cfg["weight_decay"]), "--mask_ratio", str(cfg["mask_ratio"]),
            # argparse type=bool: any non-empty string is True, "" is False
            "--norm_pix_loss", "True" if cfg["norm_pix_loss"] else "",
            "--decoder_mode", "1", "--seed", str(cfg["seed"]), "--device", "cpu", "--num_workers", "0",
            "--no_pin_mem", "--output_dir", "", "--data_train", "unused", "--label_csv", "unused"]
    args = main_pretrain.get_args_parser().parse_args(argv)
    assert args.norm_pix_loss == cfg["norm_pix_loss"] and args.audio_exp and not args.mask_2d
    args.log_dir = None  # no TensorBoard writer
    held["args"] = args
    main_pretrain.main(args)

    # ---- write the fixture
    accum, b = cfg["accum_iter"], cfg["batch_size"]
    steps = len(norms)
    micro = steps * accum
    assert len(losses) == micro and len(ids_shuffle) == micro and len(read) == micro * b, (len(losses), len(read))
    num_patches = GRID[0] * GRID[1]
    model = held["model"]
    out = cli.out
    out.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in held["initial"].items()}, out / "initial_state.safetensors")
    final = model.state_dict()
    fixed = ("pos_embed", "decoder_pos_embed")  # sin-cos tables, requires_grad=False: in initial_state only
    assert all(torch.equal(final[k], held["initial"][k]) for k in fixed)
    save_file({k: v.detach().contiguous() for k, v in final.items() if k not in fixed}, out / "final_state.safetensors")
    save_file({
        "clips": clips,
        "sample_index": torch.tensor(read, dtype=torch.int16).view(steps, accum, b),
        "ids_shuffle": torch.stack(ids_shuffle).to(torch.int16).view(steps, accum, b, num_patches),
        "loss": torch.tensor(losses, dtype=torch.float64).view(steps, accum),
        "lr": torch.tensor(lrs, dtype=torch.float64),
        "weight_decay": torch.tensor(wds, dtype=torch.float64),
        "grad_norm": torch.tensor(norms, dtype=torch.float64),
    }, out / "trajectory.safetensors")
    config = {
        **cfg,
        "set": cli.set,
        "img_size": list(img_size),
        "grid": list(GRID),
        "num_patches": num_patches,
        "len_keep": int(num_patches * (1 - cfg["mask_ratio"])),
        "norm_layer_eps": 1e-6,
        "decoder": {"mode": 1, "depth": 16, "num_heads": 16, "window": [4, 4], "shift": [2, 0],
                    "meta_hidden_dim": cfg["meta_hidden_dim"], "meta_dropout": 0.0},
        "optimizer_steps": steps,
        "steps_per_epoch": steps // cfg["epochs"],
        "warmup_steps": cfg["warmup_epochs"] * steps // cfg["epochs"],
        "lr": args.lr,
        "betas": [0.9, 0.95],
        "grad_clip": None,
        "group_names": held["group_names"],
        "official": {"repo": "facebookresearch/AudioMAE", "commit": commit,
                     "files": ["main_pretrain.py", "engine_pretrain.py", "util/lr_sched.py", "util/misc.py",
                               "models_mae.py", "timm_patch/swin_transformer.py"],
                     "argv": argv},
        "stand_ins": [
            "AudiosetDataset -> pool of standard-normal spectrograms (trajectory.clips); label = index",
            "models_mae.audiomae_traj: the official MaskedAutoencoderViT at the tiny size above (img_size set "
            "here, not main's (target_length, 128)); WindowMultiHeadAttention's meta_hidden_dim default 384 -> the "
            "tiny meta_hidden_dim above; the decoder's meta-MLP dropout 0.1 set to 0 (deterministic run)",
            "torch.Tensor.cuda -> identity, torch.cuda.synchronize -> no-op; torch.cuda.amp autocast/GradScaler "
            "disabled by the CPU build (fp32)",
            f"timm {timm_version} reports itself as 0.3.2; timm_patch/{{helpers,swin_transformer}}.py installed "
            "in its place as timm_patch.sh does",
            "torchaudio placeholder module when not installed (dataset.py imports it; unused)",
            "np.float = float; torch._six.inf = math.inf (torch >= 2)",
            "recording wrappers around random_masking, add_weight_decay and NativeScalerWithGradNormCount",
            "args.log_dir = None, --output_dir '' (no TensorBoard, no checkpoints)",
        ],
        "records": {
            "clips": "[pool, 1, T, F] float32 data pool",
            "sample_index": "[steps, accum, batch] pool index of each sample, in the order the official loader read it",
            "ids_shuffle": "[steps, accum, batch, L] argsort of the official masking noise: first len_keep kept",
            "loss": "[steps, accum] loss of each micro-batch (before the division by accum_iter)",
            "lr": "[steps, groups] lr of each official param group at the optimizer step",
            "weight_decay": "[steps, groups] weight decay of each official param group",
            "grad_norm": "[steps] total L2 gradient norm NativeScalerWithGradNormCount returned",
            "initial_state/final_state": "model.state_dict() before the first / after the last step, official keys "
                                         "(the fixed tables pos_embed/decoder_pos_embed in initial_state only)",
        },
        "env": {"torch": torch.__version__, "timm": timm_version, "numpy": np.__version__, "device": "cpu",
                "dtype": "float32", "threads": 1},
    }
    (out / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    print(f"wrote {out}: {steps} optimizer steps, final loss {losses[-1]:.6f}")


if __name__ == "__main__":
    main()

"""Record a training trajectory of the OFFICIAL MAE fine-tuning loop (facebookresearch/mae
``main_finetune.py`` + ``engine_finetune.py``) on a tiny ViT, for
``tests/training_parity/test_mae_finetune_trajectory.py``.

The official ``main(args)`` runs unchanged: its seed, ``DistributedSampler`` (world size 1),
loader (``drop_last``), the ``--finetune`` checkpoint load (``interpolate_pos_embed``, head
re-initialised ``trunc_normal_(std=2e-5)``), ``blr * eff_batch / 256``, layer-wise lr decay
(``util/lr_decay.param_groups_lrd`` with ``model.no_weight_decay()``), ``AdamW`` (default betas),
timm ``Mixup`` + ``SoftTargetCrossEntropy`` (label smoothing inside the mixed targets), the
per-iteration warmup + cosine (``util/lr_sched.py``), gradient accumulation, the loss scaler, and
its per-epoch evaluation. Only what cannot run on a CPU-only machine, or what records, is
replaced (written into the fixture's ``config.json`` as ``stand_ins``):

- ``datasets.ImageFolder`` -> a pool of standard-normal images with random labels (already
  "normalised"; the RandAugment / random-erasing transform the official code builds is not
  applied); the train pool records the index of every sample read, in the loader's order;
- ``models_vit.vit_traj``: the official ``models_vit.VisionTransformer`` at a tiny size, and the
  ``--finetune`` checkpoint: the official ``models_mae.MaskedAutoencoderViT`` at the same size,
  freshly initialised (its sin-cos ``pos_embed`` included), saved as ``{"model": state_dict}``;
- ``torch.cuda.synchronize`` -> no-op; CUDA autocast and GradScaler disabled by the CPU build (fp32);
- timm 0.4.5 stands for 0.3.2 (``main_finetune.py`` asserts 0.3.2, which does not import under
  torch 2.x); ``Mixup``, ``param_groups`` inputs and the criteria are the same code in both;
  timm's ``mixup_target`` is called with ``device=target.device`` (its default is ``'cuda'``);
- ``np.float = float``, ``torch._six.inf``, stub torchvision op schemas (as the pre-training script);
- recording wrappers that call the originals: ``param_groups_lrd`` (group names, the initial
  state), the loss scaler (loss, every group's lr and weight decay, grad norm at each step), the
  numpy draws of timm's ``mixup`` module (every ``np.random.rand/beta/randint`` and its arguments,
  per micro-batch) and ``Mixup._mix_batch`` (the mixing weight it returned).

Usage (from the repository root; the official code is NOT part of the repository)::

    git clone https://github.com/facebookresearch/mae .official/mae   # commit efb2a806
    pip install --no-deps --target .official/site timm==0.4.5
    python plugins/image/scripts/make_mae_finetune_trajectory.py --set a --out tests/fixtures/trajectories/mae_finetune
    python plugins/image/scripts/make_mae_finetune_trajectory.py --set b --out tests/fixtures/trajectories/mae_finetune-b
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import tempfile
import types
from functools import partial
from pathlib import Path

OFFICIAL_COMMIT = "efb2a8062c206524e35e47d04501ed4f544c0ae8"

#: numpy draw kinds recorded from timm's mixup module
DRAW_KINDS = ("rand", "beta", "randint")
MAX_DRAWS = 5  # batch mode: rand (prob), rand (switch), beta, randint (cy), randint (cx)

SETS = {
    # the shipped ViT-B recipe's fine-tuning rules at a tiny size: global pool, layer decay 0.65,
    # wd 0.05, smoothing 0.1, mixup 0.8 / cutmix 1.0, prob 1, switch 0.5; 16 images, batch 4 x
    # accum 2 -> 2 optimizer steps per epoch
    "a": dict(img_size=16, patch_size=4, embed_dim=32, depth=2, num_heads=2, mlp_ratio=4.0, nb_classes=10,
              global_pool=True, pool=16, batch_size=4, accum_iter=2, epochs=16, warmup_epochs=5, blr=0.05,
              min_lr=1e-5, weight_decay=0.05, layer_decay=0.65, smoothing=0.1, mixup=0.8, cutmix=1.0,
              mixup_prob=1.0, mixup_switch_prob=0.5, seed=0, data_seed=1),
    # other sizes, seeds and options: 12x12 images, 3x3 patches, depth 3, cls-token pooling,
    # mixup applied with probability 0.7, cutmix chosen with 0.3; 24 images, batch 6 x accum 2
    "b": dict(img_size=12, patch_size=3, embed_dim=24, depth=3, num_heads=3, mlp_ratio=2.0, nb_classes=7,
              global_pool=False, pool=24, batch_size=6, accum_iter=2, epochs=15, warmup_epochs=4, blr=0.08,
              min_lr=0.0, weight_decay=0.3, layer_decay=0.8, smoothing=0.2, mixup=0.4, cutmix=0.6,
              mixup_prob=0.7, mixup_switch_prob=0.3, seed=5, data_seed=9),
}
DECODER = dict(decoder_embed_dim=16, decoder_depth=1, decoder_num_heads=2)  # only in the pre-training checkpoint


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
    timm.__version__ = "0.3.2"  # main_finetune.py asserts it; 0.3.2 itself cannot import under torch 2.x
    np.float = float  # util/pos_embed.py (numpy < 1.24 alias)
    torch.cuda.synchronize = lambda *a, **k: None  # engine_finetune calls it after every iteration
    six = types.ModuleType("torch._six")  # util/misc.py imports inf from it (removed in torch 2.0)
    six.inf = math.inf
    sys.modules["torch._six"] = six

    import main_finetune
    import models_mae
    import models_vit
    import timm.data.mixup as timm_mixup
    from safetensors.torch import save_file

    commit = OFFICIAL_COMMIT  # an exported tree (git archive) has no .git of its own: never ask the enclosing repo
    if (cli.official / ".git").exists():
        commit = subprocess.run(["git", "-C", str(cli.official), "rev-parse", "HEAD"], capture_output=True,
                                text=True).stdout.strip()
        if commit != OFFICIAL_COMMIT:
            print(f"warning: {cli.official} is at {commit}, the fixtures were made from {OFFICIAL_COMMIT}")

    # ---- data: a pool of labelled images; the train pool records the order the loop reads them
    g = torch.Generator().manual_seed(cfg["data_seed"])
    images = torch.randn(cfg["pool"], 3, cfg["img_size"], cfg["img_size"], generator=g)
    labels = torch.randint(cfg["nb_classes"], (cfg["pool"],), generator=g)
    read: list[int] = []

    class Pool(torch.utils.data.Dataset):
        def __init__(self, root, transform=None) -> None:
            self.train = Path(root).name == "train"

        def __len__(self) -> int:
            return len(images)

        def __getitem__(self, i: int):
            if self.train:
                read.append(int(i))
            return images[i].clone(), int(labels[i])

    main_finetune.build_dataset.__globals__["datasets"].ImageFolder = Pool

    # ---- the official model classes at a tiny size; the pre-trained checkpoint --finetune loads
    size = dict(img_size=cfg["img_size"], patch_size=cfg["patch_size"], embed_dim=cfg["embed_dim"], depth=cfg["depth"],
                num_heads=cfg["num_heads"], mlp_ratio=cfg["mlp_ratio"], norm_layer=partial(torch.nn.LayerNorm, eps=1e-6))
    models_vit.vit_traj = partial(models_vit.VisionTransformer, qkv_bias=True, **size)
    torch.manual_seed(cfg["data_seed"] + 1000)
    pretrained = models_mae.MaskedAutoencoderViT(in_chans=3, **DECODER, **size)
    tmp = tempfile.TemporaryDirectory()
    checkpoint = Path(tmp.name) / "pretrained.pth"
    torch.save({"model": pretrained.state_dict()}, checkpoint)

    # ---- CPU stand-in: timm 0.4.5's mixup_target defaults to device='cuda'
    original_target = timm_mixup.mixup_target
    timm_mixup.mixup_target = lambda target, *a, **k: original_target(target, *a, **{**k, "device": target.device})

    # ---- recorders (each calls the official function it wraps)
    held: dict = {}
    original_groups = main_finetune.lrd.param_groups_lrd

    def param_groups_lrd(model, *args, **kwargs):
        groups = original_groups(model, *args, **kwargs)
        names = {id(p): n for n, p in model.named_parameters()}
        held.update(model=model, initial={k: v.detach().clone() for k, v in model.state_dict().items()},
                    group_names=[[names[id(p)] for p in grp["params"]] for grp in groups],
                    no_weight_decay=sorted(kwargs.get("no_weight_decay_list", ())))
        return groups

    main_finetune.lrd.param_groups_lrd = param_groups_lrd

    draws: list[list[tuple[int, float, float, float]]] = []  # per micro-batch: (kind, value, arg0, arg1)
    lams: list[float] = []

    class RecordingRandom:
        def rand(self, *a):
            assert not a, a
            v = float(np.random.rand())
            draws[-1].append((0, v, math.nan, math.nan))
            return v

        def beta(self, a, b, size=None):
            assert size is None
            v = float(np.random.beta(a, b))
            draws[-1].append((1, v, a, b))
            return v

        def randint(self, low, high=None, size=None):
            assert size is None and high is not None
            v = int(np.random.randint(low, high, size=size))
            draws[-1].append((2, v, low, high))
            return v

    class NumpyProxy(types.ModuleType):
        random = RecordingRandom()

        def __getattr__(self, name):
            return getattr(np, name)

    timm_mixup.np = NumpyProxy("numpy")
    original_mix = timm_mixup.Mixup._mix_batch

    def mix_batch(self, x):
        draws.append([])
        lam = original_mix(self, x)
        lams.append(float(lam))
        return lam

    timm_mixup.Mixup._mix_batch = mix_batch

    losses, lrs, wds, norms = [], [], [], []

    class RecordingScaler(main_finetune.NativeScaler):
        def __call__(self, loss, optimizer, clip_grad=None, parameters=None, create_graph=False, update_grad=True):
            losses.append(loss.item() * held["args"].accum_iter)  # the loop divided it by accum_iter (a power of 2)
            norm = super().__call__(loss, optimizer, clip_grad, parameters, create_graph, update_grad)
            if update_grad:
                norms.append(float(norm))
                lrs.append([grp["lr"] for grp in optimizer.param_groups])
                wds.append([grp["weight_decay"] for grp in optimizer.param_groups])
            return norm

    main_finetune.NativeScaler = RecordingScaler

    argv = ["--model", "vit_traj", "--finetune", str(checkpoint), "--input_size", str(cfg["img_size"]),
            "--nb_classes", str(cfg["nb_classes"]), "--batch_size", str(cfg["batch_size"]),
            "--accum_iter", str(cfg["accum_iter"]), "--epochs", str(cfg["epochs"]),
            "--warmup_epochs", str(cfg["warmup_epochs"]), "--blr", str(cfg["blr"]), "--min_lr", str(cfg["min_lr"]),
            "--weight_decay", str(cfg["weight_decay"]), "--layer_decay", str(cfg["layer_decay"]),
            "--drop_path", "0", "--smoothing", str(cfg["smoothing"]), "--mixup", str(cfg["mixup"]),
            "--cutmix", str(cfg["cutmix"]), "--mixup_prob", str(cfg["mixup_prob"]),
            "--mixup_switch_prob", str(cfg["mixup_switch_prob"]), "--mixup_mode", "batch",
            "--seed", str(cfg["seed"]), "--device", "cpu", "--num_workers", "0", "--no_pin_mem",
            "--output_dir", "", "--log_dir", "", "--data_path", "unused"]
    if not cfg["global_pool"]:
        argv.append("--cls_token")
    args = main_finetune.get_args_parser().parse_args(argv)
    args.log_dir = None  # no TensorBoard writer
    held["args"] = args
    assert args.global_pool == cfg["global_pool"] and args.clip_grad is None and args.cutmix_minmax is None
    main_finetune.main(args)

    # ---- write the fixture
    accum, b = cfg["accum_iter"], cfg["batch_size"]
    steps = len(norms)
    micro = steps * accum
    if not draws:  # --mixup 0 --cutmix 0: no Mixup, no draws
        draws = [[] for _ in range(micro)]
        lams = [1.0] * micro
    assert len(losses) == micro and len(draws) == micro and len(read) == micro * b, (len(losses), len(read))
    assert all(len(d) <= MAX_DRAWS for d in draws)
    kinds = torch.full((micro, MAX_DRAWS), -1, dtype=torch.int8)
    values = torch.full((micro, MAX_DRAWS, 3), math.nan, dtype=torch.float64)
    for k, seq in enumerate(draws):
        for j, (kind, v, a0, a1) in enumerate(seq):
            kinds[k, j] = kind
            values[k, j] = torch.tensor([v, a0, a1], dtype=torch.float64)
    model = held["model"]
    out = cli.out
    out.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in held["initial"].items()}, out / "initial_state.safetensors")
    save_file({k: v.detach().contiguous() for k, v in model.state_dict().items()}, out / "final_state.safetensors")
    save_file({
        "images": images,
        "labels": labels.to(torch.int16),
        "sample_index": torch.tensor(read, dtype=torch.int16).view(steps, accum, b),
        "mixup_draw_kind": kinds.view(steps, accum, MAX_DRAWS),
        "mixup_draws": values.view(steps, accum, MAX_DRAWS, 3),
        "mixup_lam": torch.tensor(lams, dtype=torch.float64).view(steps, accum),
        "loss": torch.tensor(losses, dtype=torch.float64).view(steps, accum),
        "lr": torch.tensor(lrs, dtype=torch.float64),
        "weight_decay": torch.tensor(wds, dtype=torch.float64),
        "grad_norm": torch.tensor(norms, dtype=torch.float64),
    }, out / "trajectory.safetensors")
    config = {
        **dict(cfg),
        "set": cli.set,
        "num_patches": (cfg["img_size"] // cfg["patch_size"]) ** 2,
        "norm_layer_eps": 1e-6,
        "drop_path": 0.0,
        "mixup_mode": "batch",
        "pool_mode": "mean" if cfg["global_pool"] else "cls",
        "optimizer_steps": steps,
        "steps_per_epoch": steps // cfg["epochs"],
        "warmup_steps": cfg["warmup_epochs"] * steps // cfg["epochs"],
        "lr": args.lr,
        "betas": [0.9, 0.999],
        "eps": 1e-8,
        "grad_clip": None,
        "group_names": held["group_names"],
        "no_weight_decay_list": held["no_weight_decay"],
        "draw_kinds": list(DRAW_KINDS),
        "pretrained": {"class": "models_mae.MaskedAutoencoderViT", **DECODER,
                       "init_seed": cfg["data_seed"] + 1000},
        "official": {"repo": "facebookresearch/mae", "commit": commit,
                     "files": ["main_finetune.py", "engine_finetune.py", "util/lr_decay.py", "util/lr_sched.py",
                               "util/misc.py", "util/pos_embed.py", "models_vit.py"],
                     "argv": [a if a != str(checkpoint) else "<pretrained.pth>" for a in argv]},
        "stand_ins": [
            "datasets.ImageFolder -> pool of standard-normal images with random labels (trajectory.images/labels); "
            "the official transform (RandAugment, random erasing) is built but not applied",
            "models_vit.vit_traj: the official models_vit.VisionTransformer at the tiny size above (qkv_bias, "
            "LayerNorm eps 1e-6); --finetune: a freshly initialised official models_mae.MaskedAutoencoderViT",
            "torch.cuda.synchronize -> no-op; torch.cuda.amp autocast/GradScaler disabled by the CPU build (fp32)",
            f"timm {timm_version} reports itself as 0.3.2 for the version assert; its Mixup is 0.3.2's",
            "timm.data.mixup.mixup_target called with device=target.device (default 'cuda')",
            "np.float = float for util/pos_embed.py; torch._six.inf = math.inf for util/misc.py (torch >= 2)",
            "recording wrappers around param_groups_lrd, NativeScalerWithGradNormCount, the numpy draws of "
            "timm.data.mixup and Mixup._mix_batch",
            "args.log_dir = None, --output_dir '' (no TensorBoard, no checkpoints)",
        ],
        "records": {
            "images": "[pool, 3, H, W] float32 data pool",
            "labels": "[pool] class of each pool image",
            "sample_index": "[steps, accum, batch] pool index of each sample, in the order the official loader read it",
            "mixup_draw_kind": "[steps, accum, 5] index into draw_kinds of each numpy draw timm's Mixup made "
                               "for the micro-batch, in order; -1: no draw",
            "mixup_draws": "[steps, accum, 5, 3] (value, arg0, arg1) of each draw: beta(a, b), randint(low, high)",
            "mixup_lam": "[steps, accum] the mixing weight Mixup._mix_batch returned (cut-mix area corrected)",
            "loss": "[steps, accum] loss of each micro-batch (before the division by accum_iter)",
            "lr": "[steps, groups] lr of each official param group at the optimizer step",
            "weight_decay": "[steps, groups] weight decay of each official param group",
            "grad_norm": "[steps] total L2 gradient norm NativeScalerWithGradNormCount returned",
            "initial_state/final_state": "model.state_dict() when the optimizer is built (after the --finetune "
                                         "load and head init) / after the last step, official keys",
        },
        "env": {"torch": torch.__version__, "timm": timm_version, "numpy": np.__version__, "device": "cpu",
                "dtype": "float32", "threads": 1},
    }
    (out / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    tmp.cleanup()
    print(f"wrote {out}: {steps} optimizer steps, final loss {losses[-1]:.6f}, mixing weights {lams[:4]} ...")


if __name__ == "__main__":
    main()

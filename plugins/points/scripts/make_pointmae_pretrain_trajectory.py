"""Record a training trajectory of the OFFICIAL Point-MAE pre-training loop (Pang-Yatian/Point-MAE
``main.py`` -> ``tools/runner_pretrain.py``, ``tools/builder.py``) on a tiny model, for
``tests/training_parity/test_pointmae_pretrain_trajectory.py``.

The official ``main()`` runs unchanged on a config file written like ``cfgs/pretrain.yaml``: its
seeding (``misc.set_random_seed``), shuffling loader, ``PointcloudScaleAndTranslate`` augmentation,
``build_opti_sche`` (AdamW with its own ``add_weight_decay``: 1-D, ``.bias`` and names containing
``token`` not decayed; timm ``CosineLRScheduler(t_initial=epochs, lr_min=1e-6, warmup_lr_init=1e-6,
warmup_t=initial_epochs, t_in_epochs=True)`` stepped with ``scheduler.step(epoch)`` after each
epoch), ``range(0, max_epoch + 1)`` epochs, and ``step_per_update`` accumulation: gradients of
``step_per_update`` micro-batches are SUMMED (``loss.backward()``, no division), then
``optimizer.step()``; no clipping. What cannot run on a CPU-only machine, or what records, is
replaced (listed in the fixture's ``config.json`` as ``stand_ins``):

- the CUDA extensions, by plain-torch modules written here from the kernels' sources:
  ``pointnet2_ops.pointnet2_utils.furthest_point_sample`` / ``gather_operation`` (start at index 0,
  points with squared norm <= 1e-3 skipped, as ``sampling_gpu.cu``; a tie for the farthest point,
  where the kernel's thread order would decide, is an error), ``knn_cuda.KNN`` (stable ascending
  sort of fp32 squared distances, as the kernel's insertion sort), and ``chamfer`` (forward: nearest
  neighbour, first index on ties; backward: ``chamfer_dist_grad_kernel`` twice, with index_add_ in
  place of atomicAdd);
- ``ShapeNet`` (the registered dataset) -> a pool of clouds (``trajectory.clouds``), already
  sampled and normalised; the model id is the index, so the reading order is recorded;
- ``Encoder`` (the mini-PointNet) built at the tiny widths below instead of its hard-coded
  128/256/512 (the layers and ``forward`` are the official ones); ``drop_path_rate`` 0 (a drop-path
  draw cannot be replayed);
- ``torch.Tensor.cuda`` / ``torch.nn.Module.cuda`` -> identity (``DataParallel(model).cuda()``,
  ``data.cuda()``, the augmentation's ``.cuda()``); ``DataParallel`` without GPUs calls the model;
- timm 0.4.5 (the repository's pin); placeholder modules for ``cv2``, ``sklearn``, ``open3d``,
  ``matplotlib``, ``termcolor`` when not installed (imported by unused code paths);
- recording wrappers (they call the originals): ``np.random.uniform`` (the augmentation's scale and
  shift of every sample), ``MaskTransformer._mask_center_rand`` (every mask), the optimizer's
  ``step`` (each group's lr and weight decay, the gradient norm) and ``build_opti_sche`` (groups,
  initial weights).

Usage (from the repository root; the official code is NOT part of the repository)::

    git clone https://github.com/Pang-Yatian/Point-MAE .official/Point-MAE   # commit 7445a680
    pip install --no-deps --target .official/site timm==0.4.5 easydict tensorboardX
    python plugins/points/scripts/make_pointmae_pretrain_trajectory.py --set a --out tests/fixtures/trajectories/pointmae_pretrain
    python plugins/points/scripts/make_pointmae_pretrain_trajectory.py --set b --out tests/fixtures/trajectories/pointmae_pretrain-b
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import subprocess
import sys
import tempfile
import types
from pathlib import Path

OFFICIAL_COMMIT = "7445a68068d707da6d959b66773bfef84c4e3e32"

SETS = {
    # 8 clouds of 128 points, batch 2 x step_per_update 2 -> 2 optimizer steps per epoch; 16 groups of 8
    "a": dict(npoints=128, num_group=16, group_size=8, trans_dim=32, depth=2, num_heads=4, decoder_depth=1,
              decoder_num_heads=4, mask_ratio=0.6, pointnet_channels=[16, 32, 64], pool=8, batch_size=2,
              step_per_update=2, max_epoch=15, initial_epochs=5, lr=1e-3, weight_decay=0.05, seed=0, data_seed=1),
    # other sizes and seeds: 96 points, 12 groups of 6, ratio 0.5, 3 decoder blocks, 1 step per epoch
    "b": dict(npoints=96, num_group=12, group_size=6, trans_dim=24, depth=3, num_heads=3, decoder_depth=2,
              decoder_num_heads=2, mask_ratio=0.5, pointnet_channels=[8, 24, 32], pool=6, batch_size=3,
              step_per_update=2, max_epoch=29, initial_epochs=8, lr=2e-3, weight_decay=0.1, seed=3, data_seed=7),
}


# ---------------------------------------------------------------- CPU stand-ins for the CUDA extensions
def cpu_extensions(torch):
    """``pointnet2_ops.pointnet2_utils``, ``knn_cuda`` and ``chamfer`` modules in plain torch."""

    def furthest_point_sample(xyz, m):
        xyz = xyz.detach().float()
        b, n, _ = xyz.shape
        out = torch.zeros(b, m, dtype=torch.int32)
        for i in range(b):
            p = xyz[i]
            x, y, z = p[:, 0], p[:, 1], p[:, 2]
            skip = (x * x + y * y + z * z).double() <= 1e-3
            temp = torch.full((n,), 1e10, dtype=torch.float32)
            old = 0
            for j in range(1, m):
                d = (x - x[old]) ** 2 + (y - y[old]) ** 2 + (z - z[old]) ** 2
                temp = torch.where(skip, temp, torch.minimum(d, temp))
                cand = torch.where(skip, torch.full_like(temp, -1.0), temp)
                best = cand.max()
                if int((cand == best).sum()) != 1:
                    raise RuntimeError("FPS tie: the CUDA kernel's thread order would decide; use other data")
                old = int(cand.argmax())
                out[i, j] = old
        return out

    def gather_operation(features, idx):
        return torch.stack([features[i][:, idx[i].long()] for i in range(features.shape[0])])

    pointnet2_utils = types.ModuleType("pointnet2_ops.pointnet2_utils")
    pointnet2_utils.furthest_point_sample = furthest_point_sample
    pointnet2_utils.gather_operation = gather_operation
    pointnet2_ops = types.ModuleType("pointnet2_ops")
    pointnet2_ops.pointnet2_utils = pointnet2_utils

    class KNN(torch.nn.Module):
        def __init__(self, k, transpose_mode=False):
            super().__init__()
            self.k, self.transpose_mode = k, transpose_mode

        def forward(self, ref, query):
            assert self.transpose_mode
            with torch.no_grad():
                diff = query[:, :, None, :] - ref[:, None, :, :]  # (B, G, N, 3)
                d = diff[..., 0] ** 2 + diff[..., 1] ** 2 + diff[..., 2] ** 2
                dist, idx = torch.sort(d, dim=-1, stable=True)
            return dist[..., : self.k].sqrt(), idx[..., : self.k]

    knn_cuda = types.ModuleType("knn_cuda")
    knn_cuda.KNN = KNN

    def nearest(a, b):
        diff = a[:, :, None, :] - b[:, None, :, :]
        d = diff[..., 0] ** 2 + diff[..., 1] ** 2 + diff[..., 2] ** 2
        dist, idx = d.min(dim=-1)  # first index on ties
        return dist, idx.to(torch.int32)

    def chamfer_forward(xyz1, xyz2):
        dist1, idx1 = nearest(xyz1, xyz2)
        dist2, idx2 = nearest(xyz2, xyz1)
        return dist1, dist2, idx1, idx2

    def grad_kernel(xyz1, xyz2, grad_dist, idx, grad1, grad2):
        for i in range(xyz1.shape[0]):
            j2 = idx[i].long()
            g = (grad_dist[i] * 2)[:, None]
            delta = g * (xyz1[i] - xyz2[i][j2])
            grad1[i] += delta
            grad2[i].index_add_(0, j2, -delta)

    def chamfer_backward(xyz1, xyz2, idx1, idx2, grad_dist1, grad_dist2):
        grad1, grad2 = torch.zeros_like(xyz1), torch.zeros_like(xyz2)
        grad_kernel(xyz1, xyz2, grad_dist1, idx1, grad1, grad2)
        grad_kernel(xyz2, xyz1, grad_dist2, idx2, grad2, grad1)
        return grad1, grad2

    chamfer = types.ModuleType("chamfer")
    chamfer.forward, chamfer.backward = chamfer_forward, chamfer_backward
    return {"pointnet2_ops": pointnet2_ops, "pointnet2_ops.pointnet2_utils": pointnet2_utils, "knn_cuda": knn_cuda,
            "chamfer": chamfer}


def _placeholder(attr, module):
    if attr.startswith("__"):
        raise AttributeError(attr)
    return type(attr, (), {"__module__": module})


def placeholders(names):
    """Modules imported by code paths the pre-training run never calls."""
    for name in names:
        try:
            importlib.import_module(name)
            continue
        except ImportError:
            pass
        parts = name.split(".")
        for i in range(1, len(parts) + 1):
            sub = ".".join(parts[:i])
            if sub not in sys.modules:
                module = types.ModuleType(sub)
                module.__getattr__ = lambda attr, sub=sub: _placeholder(attr, sub)
                sys.modules[sub] = module
                if i > 1:
                    setattr(sys.modules[".".join(parts[: i - 1])], parts[i - 1], module)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--set", choices=sorted(SETS), required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--official", type=Path, default=Path(".official/Point-MAE"), help="Point-MAE checkout")
    parser.add_argument("--site", type=Path, default=Path(".official/site"),
                        help="folder holding timm 0.4.5, easydict, tensorboardX")
    cli = parser.parse_args()
    cfg = SETS[cli.set]
    out = cli.out.resolve()
    official = cli.official.resolve()

    import numpy as np
    import torch

    torch.set_num_threads(1)
    from mmim.timm_compat import import_torchvision

    import_torchvision()
    sys.path[:0] = [str(cli.site.resolve()), str(official)]
    import timm

    if not timm.__version__.startswith("0.4."):
        raise SystemExit(f"timm {timm.__version__} from {timm.__file__}: put timm 0.4.5 in --site {cli.site}")
    sys.modules.update(cpu_extensions(torch))
    placeholders(["cv2", "sklearn.svm", "open3d", "matplotlib.pyplot", "mpl_toolkits.mplot3d", "termcolor"])
    torch.Tensor.cuda = lambda self, *a, **k: self
    torch.nn.Module.cuda = lambda self, *a, **k: self

    commit = OFFICIAL_COMMIT
    if (official / ".git").exists():
        commit = subprocess.run(["git", "-C", str(official), "rev-parse", "HEAD"], capture_output=True,
                                text=True).stdout.strip()
        if commit != OFFICIAL_COMMIT:
            print(f"warning: {official} is at {commit}, the fixtures were made from {OFFICIAL_COMMIT}")

    work = Path(tempfile.mkdtemp(prefix="pointmae_traj_"))
    os.chdir(work)  # main.py writes ./experiments/...
    import main as official_main
    from datasets import build as dataset_build
    from models import Point_MAE
    from tools import builder, runner_pretrain

    # ---- data: a pool of clouds (random directions, radius U(0.3, 1)); model id = index, recorded in reading order
    g = torch.Generator().manual_seed(cfg["data_seed"])
    dirs = torch.randn(cfg["pool"], cfg["npoints"], 3, generator=g)
    clouds = dirs / dirs.norm(dim=-1, keepdim=True) * (0.3 + 0.7 * torch.rand(cfg["pool"], cfg["npoints"], 1, generator=g))
    read: list[int] = []

    class Pool(torch.utils.data.Dataset):
        def __init__(self, config) -> None:
            self.subset = config.subset

        def __len__(self) -> int:
            return len(clouds)

        def __getitem__(self, i: int):
            if self.subset == "train":
                read.append(int(i))
            return "pool", i, clouds[i].clone()  # the runner's augmentation writes into the batch

    dataset_build.DATASETS._module_dict["ShapeNet"] = Pool

    # ---- the mini-PointNet at tiny widths (its forward is the official one)
    c1, c2, c3 = cfg["pointnet_channels"]

    def encoder_init(self, encoder_channel):
        torch.nn.Module.__init__(self)
        self.encoder_channel = encoder_channel
        self.first_conv = torch.nn.Sequential(torch.nn.Conv1d(3, c1, 1), torch.nn.BatchNorm1d(c1),
                                              torch.nn.ReLU(inplace=True), torch.nn.Conv1d(c1, c2, 1))
        self.second_conv = torch.nn.Sequential(torch.nn.Conv1d(2 * c2, c3, 1), torch.nn.BatchNorm1d(c3),
                                               torch.nn.ReLU(inplace=True), torch.nn.Conv1d(c3, encoder_channel, 1))

    Point_MAE.Encoder.__init__ = encoder_init

    # ---- recorders (each calls the official function it wraps)
    draws: list[np.ndarray] = []
    uniform = np.random.uniform

    def recording_uniform(*args, **kwargs):
        value = uniform(*args, **kwargs)
        draws.append(np.asarray(value, dtype=np.float64))
        return value

    np.random.uniform = recording_uniform
    masks: list[torch.Tensor] = []
    fps_centers: list[torch.Tensor] = []
    original_mask = Point_MAE.MaskTransformer._mask_center_rand

    def mask_center_rand(self, center, noaug=False):
        mask = original_mask(self, center, noaug)
        masks.append(mask.clone())
        fps_centers.append(center.detach().clone())
        return mask

    Point_MAE.MaskTransformer._mask_center_rand = mask_center_rand

    held: dict = {}
    lrs, wds, norms = [], [], []
    losses: list[float] = []
    original_build = builder.build_opti_sche

    def build_opti_sche(base_model, config):
        optimizer, scheduler = original_build(base_model, config)
        model = base_model.module
        names = {id(p): n for n, p in model.named_parameters()}
        held.update(model=model, initial={k: v.detach().clone() for k, v in model.state_dict().items()},
                    group_names=[[names[id(p)] for p in grp["params"]] for grp in optimizer.param_groups],
                    optimizer=optimizer, scheduler=scheduler)

        def pre_step(opt, args, kwargs):
            lrs.append([grp["lr"] for grp in opt.param_groups])
            wds.append([grp["weight_decay"] for grp in opt.param_groups])
            grads = [p.grad.detach() for grp in opt.param_groups for p in grp["params"] if p.grad is not None]
            norms.append(float(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(x) for x in grads]))))

        optimizer.register_step_pre_hook(pre_step)
        forward = model.forward

        def recording_forward(*args, **kwargs):
            loss = forward(*args, **kwargs)
            losses.append(float(loss))
            return loss

        model.forward = recording_forward
        return optimizer, scheduler

    builder.build_opti_sche = build_opti_sche
    runner_pretrain.builder.build_opti_sche = build_opti_sche

    # ---- the config file, laid out as cfgs/pretrain.yaml
    (work / "shapenet_pool.yaml").write_text(f"NAME: ShapeNet\nDATA_PATH: unused\nN_POINTS: {cfg['npoints']}\n"
                                             "PC_PATH: unused\n")
    config_text = f"""optimizer : {{
  type: AdamW,
  kwargs: {{
  lr : {cfg['lr']},
  weight_decay : {cfg['weight_decay']}
}}}}

scheduler: {{
  type: CosLR,
  kwargs: {{
    epochs: {cfg['max_epoch']},
    initial_epochs : {cfg['initial_epochs']}
}}}}

dataset : {{
  train : {{ _base_: shapenet_pool.yaml,
            others: {{subset: 'train', npoints: {cfg['npoints']}}}}},
  val : {{ _base_: shapenet_pool.yaml,
            others: {{subset: 'test', npoints: {cfg['npoints']}}}}},
  test : {{ _base_: shapenet_pool.yaml,
            others: {{subset: 'test', npoints: {cfg['npoints']}}}}}}}

model : {{
  NAME: Point_MAE,
  group_size: {cfg['group_size']},
  num_group: {cfg['num_group']},
  loss: cdl2,
  transformer_config: {{
    mask_ratio: {cfg['mask_ratio']},
    mask_type: 'rand',
    trans_dim: {cfg['trans_dim']},
    encoder_dims: {cfg['trans_dim']},
    depth: {cfg['depth']},
    drop_path_rate: 0.0,
    num_heads: {cfg['num_heads']},
    decoder_depth: {cfg['decoder_depth']},
    decoder_num_heads: {cfg['decoder_num_heads']},
  }},
  }}

npoints: {cfg['npoints']}
total_bs : {cfg['batch_size']}
step_per_update : {cfg['step_per_update']}
max_epoch : {cfg['max_epoch']}
"""
    (work / "pretrain_traj.yaml").write_text(config_text)
    argv = ["main.py", "--config", "pretrain_traj.yaml", "--exp_name", "traj", "--seed", str(cfg["seed"]),
            "--num_workers", "0"]
    sys.argv = argv
    official_main.main()

    # ---- write the fixture
    accum, b = cfg["step_per_update"], cfg["batch_size"]
    steps = len(norms)
    micro = steps * accum
    epochs = cfg["max_epoch"] + 1  # range(start_epoch, max_epoch + 1)
    assert len(losses) == micro and len(masks) == micro and len(read) == micro * b, (len(losses), len(masks), len(read))
    assert len(draws) == 2 * micro * b  # scale then shift, per sample
    draw = torch.tensor(np.stack(draws), dtype=torch.float32).view(steps, accum, b, 2, 3)  # as .float() in the loop
    model = held["model"]
    out.mkdir(parents=True, exist_ok=True)
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in held["initial"].items()}, out / "initial_state.safetensors")
    save_file({k: v.detach().contiguous() for k, v in model.state_dict().items()}, out / "final_state.safetensors")
    save_file({
        "clouds": clouds,
        "sample_index": torch.tensor(read, dtype=torch.int16).view(steps, accum, b),
        "scale": draw[:, :, :, 0].contiguous(),
        "shift": draw[:, :, :, 1].contiguous(),
        "mask": torch.stack(masks).view(steps, accum, b, cfg["num_group"]),
        "centers": torch.stack(fps_centers).view(steps, accum, b, cfg["num_group"], 3),
        "loss": torch.tensor(losses, dtype=torch.float64).view(steps, accum),
        "lr": torch.tensor(lrs, dtype=torch.float64),
        "weight_decay": torch.tensor(wds, dtype=torch.float64),
        "grad_norm": torch.tensor(norms, dtype=torch.float64),
    }, out / "trajectory.safetensors")
    num_mask = int(cfg["mask_ratio"] * cfg["num_group"])
    config = {
        **cfg,
        "set": cli.set,
        "epochs": epochs,
        "accum_iter": accum,
        "num_mask": num_mask,
        "len_keep": cfg["num_group"] - num_mask,
        "drop_path_rate": 0.0,
        "norm_layer_eps": 1e-5,
        "optimizer_steps": steps,
        "steps_per_epoch": steps // epochs,
        "warmup_steps": cfg["initial_epochs"] * steps // epochs,
        "scheduler": {"type": "timm CosineLRScheduler", "t_initial": cfg["max_epoch"], "warmup_t": cfg["initial_epochs"],
                      "warmup_lr_init": 1e-6, "lr_min": 1e-6, "t_in_epochs": True,
                      "stepped": "scheduler.step(epoch) after epoch `epoch`: epoch e trains at t = max(e - 1, 0)"},
        "accumulation": "sum (loss.backward() per micro-batch, no division by step_per_update)",
        "betas": [0.9, 0.999],
        "eps": 1e-8,
        "grad_clip": None,
        "group_names": held["group_names"],
        "official": {"repo": "Pang-Yatian/Point-MAE", "commit": commit,
                     "files": ["main.py", "tools/runner_pretrain.py", "tools/builder.py", "models/Point_MAE.py",
                               "datasets/data_transforms.py", "extensions/chamfer_dist/__init__.py", "utils/misc.py"],
                     "argv": argv[1:], "config": config_text},
        "stand_ins": [
            "pointnet2_ops.pointnet2_utils.furthest_point_sample/gather_operation, knn_cuda.KNN, chamfer "
            "(forward + backward): plain torch, following sampling_gpu.cu, knn.cu and chamfer.cu",
            "datasets ShapeNet -> pool of clouds (trajectory.clouds); model id = index",
            f"models.Point_MAE.Encoder at widths {cfg['pointnet_channels']} instead of 128/256/512 (official forward)",
            "drop_path_rate 0.0 (deterministic run)",
            "torch.Tensor.cuda / torch.nn.Module.cuda -> identity; nn.DataParallel without GPUs calls the module",
            "timm 0.4.5; placeholder modules for cv2, sklearn, open3d, matplotlib, termcolor when not installed",
            "recording wrappers around np.random.uniform, MaskTransformer._mask_center_rand, build_opti_sche "
            "(an optimizer step pre-hook reads lr, weight decay, gradient norm) and Point_MAE.forward (the loss)",
        ],
        "records": {
            "clouds": "[pool, N, 3] float32 data pool",
            "sample_index": "[steps, accum, batch] pool index of each sample, in the order the official loader read it",
            "scale/shift": "[steps, accum, batch, 3] float32 PointcloudScaleAndTranslate draws: points * scale + shift",
            "mask": "[steps, accum, batch, G] bool, True = masked group (official _mask_center_rand)",
            "centers": "[steps, accum, batch, G, 3] FPS centers of each micro-batch (a check, not replayed)",
            "loss": "[steps, accum] Chamfer-L2 loss of each micro-batch",
            "lr": "[steps, groups] lr of each official param group at the optimizer step",
            "weight_decay": "[steps, groups] weight decay of each official param group",
            "grad_norm": "[steps] total L2 norm of the (summed) gradients the optimizer stepped with",
            "initial_state/final_state": "model.state_dict() (incl. BatchNorm buffers) before the first / after "
                                         "the last step, official keys",
        },
        "env": {"torch": torch.__version__, "timm": timm.__version__, "numpy": np.__version__, "device": "cpu",
                "dtype": "float32", "threads": 1},
    }
    (out / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    print(f"wrote {out}: {steps} optimizer steps, final loss {losses[-1]:.6f}")


if __name__ == "__main__":
    main()

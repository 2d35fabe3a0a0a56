"""Record a training trajectory of the OFFICIAL MultiMAE pre-training loop (EPFL-VILAB/MultiMAE
``run_pretraining_multimae.py``: ``main`` + ``train_one_epoch``) on a tiny model, for
``tests/training_parity/test_multimae_pretrain_trajectory.py``.

The official ``main(args)`` runs unchanged: its seeding, ``DistributedSampler`` and loader,
``blr * batch / 256`` rule, ``utils.optim_factory.create_optimizer(args, {'model': ..., 'balancer': ...})``
(the dict form: ONE group holding every model parameter, all decayed, plus the balancer's empty
group), ``AdamW(betas)``, ``utils.cosine_scheduler`` lr and weight-decay values per iteration, the
truncated depth standardisation, the Dirichlet token budget of ``MultiMAE.generate_random_masks``,
the per-task losses summed by ``NoWeightingStrategy``, and ``NativeScalerWithGradNormCount``. The
official loop has NO gradient accumulation (one optimizer step per loader batch), so none is recorded.
Only what cannot run on a CPU-only machine, or what records, is replaced (written into the
fixture's ``config.json`` as ``stand_ins``):

- ``build_multimae_pretraining_dataset`` -> a pool of already-augmented samples (``rgb``
  standard-normal, as after ImageNet normalisation; ``depth`` in [0.1, 0.6) as after ``/ 2**16``;
  ``semseg`` class ids at 1/4 size); the label is the sample index, so the order the official
  sampler and loader read is recorded. (The crop/flip of ``DataAugmentationForMultiMAE`` is data,
  not loop; the depth standardisation stays in the loop and runs.)
- ``pretrain_multimae_traj``: the official ``MultiMAE`` class at a tiny size (the shipped archs
  are ViT-B/L); the ``DOMAIN_CONF`` adapters are built with ``image_size=input_size``, which is what
  the shipped 224 configuration has (their default 224 equals its input size), so that no
  position table is resized;
- ``torch.cuda.synchronize`` -> no-op; ``torch.cuda.amp.autocast`` and ``GradScaler`` run as the
  CPU build makes them: disabled, so the loop is fp32; the disabled scaler's empty ``state_dict``
  gets the ``scale`` entry (1.0) the loop reads for logging;
- ``torch._six.inf`` restored (``utils/native_scaler.py``, removed in torch 2.0), an empty
  ``pandas`` module (imported by the unused Taskonomy dataset), einops 0.3.2 (requirements.txt)
  from ``--site``; torchvision's missing op schemas stubbed (``mmim.timm_compat``);
- recording wrappers that call the originals: around ``generate_random_masks`` (the Dirichlet
  concentration and sample, each task's noise and the shuffle noise, i.e. every random number of
  the token budget, and the resulting ``ids_keep``), ``NoWeightingStrategy.forward`` (the per-task
  losses), the loss scaler (loss, grad norm, every group's lr and weight decay at each step) and
  ``create_optimizer`` (the groups' parameter names, the initial weights).

Usage (from the repository root; the official code is NOT part of the repository)::

    git clone https://github.com/EPFL-VILAB/MultiMAE .official/MultiMAE   # commit 66910f5b
    pip install --no-deps --target .official/site einops==0.3.2
    python plugins/multimodal/scripts/make_multimae_pretrain_trajectory.py --set a --out tests/fixtures/trajectories/multimae_pretrain
    python plugins/multimodal/scripts/make_multimae_pretrain_trajectory.py --set b --out tests/fixtures/trajectories/multimae_pretrain-b
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import types
import warnings
from functools import partial
from pathlib import Path

OFFICIAL_COMMIT = "66910f5b5ba236f5e731883db85fe4f24ee01106"

SETS = {
    # rgb + depth + semseg in and out, the extra norm_rgb head, semseg decoded in fp32 (as the shipped
    # config); 32x32 images, 8x8 patches: 16 tokens per task, 12 of 48 encoded. 16 samples, batch 4
    # -> 4 steps per epoch, 8 epochs = 32 steps, warmup 2 epochs = 8 steps; wd cosine 0.1 -> 0.3.
    "a": dict(domains="rgb-depth-semseg", extra_norm_pix_loss=True, standardize_depth=True,
              fp32_output_adapters="semseg", input_size=32, patch_size=8, dim_tokens=32, depth=2, num_heads=2,
              mlp_ratio=4.0, decoder_dim=16, decoder_depth=1, decoder_num_heads=2, num_global_tokens=1,
              num_encoded_tokens=12, alphas=1.0, sample_tasks_uniformly=False, pool=16, batch_size=4, epochs=8,
              warmup_epochs=2, blr=0.05, min_lr=1e-5, weight_decay=0.1, weight_decay_end=0.3, opt_betas=[0.9, 0.95], seed=0, data_seed=1),
    # another modality set (rgb + depth, no semseg, no norm_rgb head), sizes and seeds: 24x24 images,
    # 6x6 patches (16 tokens per task), 10 of 32 encoded, alpha 0.5, two global tokens, raw depth;
    # 15 samples, batch 3 -> 5 steps per epoch, 6 epochs = 30 steps, warmup 3 epochs = 15 steps;
    # constant weight decay; another decoder depth.
    "b": dict(domains="rgb-depth", extra_norm_pix_loss=False, standardize_depth=False, fp32_output_adapters="",
              input_size=24, patch_size=6, dim_tokens=24, depth=3, num_heads=3, mlp_ratio=2.0, decoder_dim=12,
              decoder_depth=2, decoder_num_heads=3, num_global_tokens=2, num_encoded_tokens=10, alphas=0.5,
              sample_tasks_uniformly=False, pool=15, batch_size=3, epochs=6, warmup_epochs=3, blr=0.08, min_lr=0.0,
              weight_decay=0.05, weight_decay_end=None, opt_betas=[0.9, 0.95], seed=3, data_seed=7),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--set", choices=sorted(SETS), required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--official", type=Path, default=Path(".official/MultiMAE"),
                        help="EPFL-VILAB/MultiMAE checkout")
    parser.add_argument("--site", type=Path, default=Path(".official/site"), help="folder holding einops 0.3.2")
    cli = parser.parse_args()
    cfg = SETS[cli.set]

    import numpy as np
    import torch

    torch.set_num_threads(1)
    from mmim.timm_compat import import_torchvision

    import_torchvision()  # utils/ imports torchvision; stub its op schemas beside this torch build if needed
    sys.path[:0] = [str(cli.site.resolve()), str(cli.official.resolve())]
    import einops

    if not einops.__version__.startswith("0.3."):
        raise SystemExit(f"einops {einops.__version__} from {einops.__file__}: put einops 0.3.2 in --site {cli.site}")
    six = types.ModuleType("torch._six")  # utils/native_scaler.py imports inf from it (removed in torch 2.0)
    six.inf = math.inf
    sys.modules["torch._six"] = six
    sys.modules.setdefault("pandas", types.ModuleType("pandas"))  # only the (unused) Taskonomy dataset imports it
    torch.cuda.synchronize = lambda *a, **k: None  # train_one_epoch calls it after every iteration
    warnings.filterwarnings("ignore")  # CUDA amp on a CPU build

    import run_pretraining_multimae as rp
    import utils.registry
    from multimae import multimae as mm
    from safetensors.torch import save_file

    commit = OFFICIAL_COMMIT  # an exported tree (git archive) has no .git of its own: never ask the enclosing repo
    if (cli.official / ".git").exists():
        commit = subprocess.run(["git", "-C", str(cli.official), "rev-parse", "HEAD"], capture_output=True,
                                text=True).stdout.strip()
        if commit != OFFICIAL_COMMIT:
            print(f"warning: {cli.official} is at {commit}, the fixtures were made from {OFFICIAL_COMMIT}")

    domains = cfg["domains"].split("-")
    size, stride = cfg["input_size"], rp.DOMAIN_CONF["semseg"]["stride_level"]
    num_classes = rp.COCO_SEMSEG_NUM_CLASSES

    # ---- data: a pool of augmented samples; the label is the index, recorded in the order the loop reads them
    g = torch.Generator().manual_seed(cfg["data_seed"])
    pool = {
        "rgb": torch.randn(cfg["pool"], 3, size, size, generator=g),
        "depth": 0.1 + 0.5 * torch.rand(cfg["pool"], 1, size, size, generator=g),
        "semseg": torch.randint(0, num_classes, (cfg["pool"], size // stride, size // stride), generator=g),
    }
    read: list[int] = []

    class Pool(torch.utils.data.Dataset):
        def __len__(self) -> int:
            return cfg["pool"]

        def __getitem__(self, i: int):
            read.append(int(i))
            return {t: pool[t][i] for t in domains}, i

    rp.build_multimae_pretraining_dataset = lambda args: Pool()

    # ---- the official model class at a tiny size; adapters sized for the input (as at 224)
    for conf in rp.DOMAIN_CONF.values():
        conf["input_adapter"] = partial(conf["input_adapter"], image_size=size)
        conf["output_adapter"] = partial(conf["output_adapter"], image_size=size)

    def pretrain_multimae_traj(input_adapters, output_adapters, **kwargs):
        return mm.MultiMAE(input_adapters=input_adapters, output_adapters=output_adapters, dim_tokens=cfg["dim_tokens"],
                           depth=cfg["depth"], num_heads=cfg["num_heads"], mlp_ratio=cfg["mlp_ratio"], qkv_bias=True,
                           norm_layer=partial(torch.nn.LayerNorm, eps=1e-6), **kwargs)

    utils.registry._model_entrypoints["pretrain_multimae_traj"] = pretrain_multimae_traj

    # ---- recorders (each calls the official function it wraps)
    draws: list[dict] = []
    original_masks = mm.MultiMAE.generate_random_masks
    original_dirichlet = mm.Dirichlet

    def generate_random_masks(self, input_tokens, num_encoded_tokens, alphas=1.0, sample_tasks_uniformly=False):
        seen: dict = {"rand": []}
        rand, rand_like = torch.rand, torch.rand_like

        class Dirichlet(original_dirichlet):
            def sample(self, *args, **kwargs):
                out = super().sample(*args, **kwargs)
                seen["concentration"], seen["dirichlet"] = self.concentration.clone(), out.clone()
                return out

        def recording_rand(*args, **kwargs):
            out = rand(*args, **kwargs)
            seen["rand"].append(out.clone())
            return out

        def recording_rand_like(*args, **kwargs):
            out = rand_like(*args, **kwargs)
            seen["shuffle"] = out.clone()
            return out

        torch.rand, torch.rand_like, mm.Dirichlet = recording_rand, recording_rand_like, Dirichlet
        try:
            task_masks, ids_keep, ids_restore = original_masks(self, input_tokens, num_encoded_tokens, alphas,
                                                               sample_tasks_uniformly)
        finally:
            torch.rand, torch.rand_like, mm.Dirichlet = rand, rand_like, original_dirichlet
        seen["tasks"], seen["ids_keep"] = list(input_tokens), ids_keep.clone()
        draws.append(seen)
        return task_masks, ids_keep, ids_restore

    mm.MultiMAE.generate_random_masks = generate_random_masks

    task_losses: list[dict[str, float]] = []
    original_balance = rp.NoWeightingStrategy.forward

    def balance(self, losses):
        task_losses.append({k: float(v) for k, v in losses.items()})
        return original_balance(self, losses)

    rp.NoWeightingStrategy.forward = balance

    held: dict = {}
    original_create = rp.create_optimizer

    def create_optimizer(args, model, *a, **k):
        net = model["model"] if isinstance(model, dict) else model
        optimizer = original_create(args, model, *a, **k)
        names = {id(p): n for n, p in net.named_parameters()}
        held.update(model=net, initial={k: v.detach().clone() for k, v in net.state_dict().items()},
                    group_names=[[names[id(p)] for p in grp["params"] if id(p) in names]
                                 for grp in optimizer.param_groups])
        return optimizer

    rp.create_optimizer = create_optimizer

    losses, lrs, wds, norms = [], [], [], []

    class RecordingScaler(rp.NativeScaler):
        def __call__(self, loss, optimizer, clip_grad=None, skip_grad=None, parameters=None, create_graph=False,
                     update_grad=True):
            losses.append(loss.item())
            norm = super().__call__(loss, optimizer, clip_grad, skip_grad, parameters, create_graph, update_grad)
            norms.append(float(norm))
            lrs.append([grp["lr"] for grp in optimizer.param_groups])
            wds.append([grp["weight_decay"] for grp in optimizer.param_groups])
            return norm

        def state_dict(self):
            return {"scale": 1.0, **super().state_dict()}  # the disabled (CPU) GradScaler's is empty

    rp.NativeScaler = RecordingScaler

    argv = ["--model", "pretrain_multimae_traj", "--in_domains", cfg["domains"], "--out_domains", cfg["domains"],
            "--input_size", str(size), "--patch_size", str(cfg["patch_size"]),
            "--num_encoded_tokens", str(cfg["num_encoded_tokens"]), "--num_global_tokens", str(cfg["num_global_tokens"]),
            "--alphas", str(cfg["alphas"]), "--decoder_dim", str(cfg["decoder_dim"]),
            "--decoder_depth", str(cfg["decoder_depth"]), "--decoder_num_heads", str(cfg["decoder_num_heads"]),
            "--batch_size", str(cfg["batch_size"]), "--epochs", str(cfg["epochs"]),
            "--warmup_epochs", str(cfg["warmup_epochs"]), "--blr", str(cfg["blr"]), "--min_lr", str(cfg["min_lr"]),
            "--weight_decay", str(cfg["weight_decay"]), "--opt_betas", *map(str, cfg["opt_betas"]),
            "--fp32_output_adapters", cfg["fp32_output_adapters"],
            "--seed", str(cfg["seed"]), "--device", "cpu", "--num_workers", "0", "--no_pin_mem",
            "--output_dir", "", "--data_path", "unused", "--no_auto_resume"]
    if cfg["weight_decay_end"] is not None:
        argv += ["--weight_decay_end", str(cfg["weight_decay_end"])]
    if cfg["sample_tasks_uniformly"]:
        argv.append("--sample_tasks_uniformly")
    argv.append("--extra_norm_pix_loss" if cfg["extra_norm_pix_loss"] else "--no_extra_norm_pix_loss")
    argv.append("--standardize_depth" if cfg["standardize_depth"] else "--no_standardize_depth")
    saved_argv = sys.argv
    sys.argv = [sys.argv[0], *argv]
    try:
        args = rp.get_args()
    finally:
        sys.argv = saved_argv
    rp.main(args)

    # ---- write the fixture
    b, steps = cfg["batch_size"], len(norms)
    assert len(losses) == steps == len(draws) == len(task_losses) and len(read) == steps * b, (len(losses), len(read))
    tasks = draws[0]["tasks"]
    assert all(d["tasks"] == tasks and len(d["rand"]) == len(tasks) for d in draws)
    heads = list(task_losses[0])  # the order of preds: the loss is summed in it
    model = held["model"]
    out = cli.out
    out.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in held["initial"].items()}, out / "initial_state.safetensors")
    save_file({k: v.detach().contiguous() for k, v in model.state_dict().items()}, out / "final_state.safetensors")
    records = {
        **{f"pool_{t}": pool[t] for t in domains},
        "sample_index": torch.tensor(read, dtype=torch.int16).view(steps, b),
        "dirichlet_concentration": torch.stack([d["concentration"] for d in draws]),
        "dirichlet_sample": torch.stack([d["dirichlet"] for d in draws]),
        **{f"noise_{t}": torch.stack([d["rand"][i] for d in draws]) for i, t in enumerate(tasks)},
        "shuffle_noise": torch.stack([d["shuffle"] for d in draws]),
        "ids_keep": torch.stack([d["ids_keep"] for d in draws]).to(torch.int16),
        "loss": torch.tensor(losses, dtype=torch.float64),
        "task_loss": torch.tensor([[tl[h] for h in heads] for tl in task_losses], dtype=torch.float64),
        "lr": torch.tensor(lrs, dtype=torch.float64),
        "weight_decay": torch.tensor(wds, dtype=torch.float64),
        "grad_norm": torch.tensor(norms, dtype=torch.float64),
    }
    save_file({k: v.contiguous() for k, v in records.items()}, out / "trajectory.safetensors")
    steps_per_epoch = cfg["pool"] // b
    config = {
        **cfg,
        "set": cli.set,
        "domains": domains,
        "input_dict_order": tasks,
        "heads": heads,
        "semseg_num_classes": num_classes,
        "semseg_stride": stride,
        "semseg_dim_class_emb": 64,
        "tokens_per_task": {t: int(records[f"noise_{t}"].shape[-1]) for t in tasks},
        "norm_layer_eps": 1e-6,
        "accum_iter": 1,
        "gradient_accumulation": "none: run_pretraining_multimae.py has no accumulation (one optimizer step per batch)",
        "optimizer_steps": steps,
        "steps_per_epoch": steps_per_epoch,
        "warmup_steps": cfg["warmup_epochs"] * steps_per_epoch,
        "lr": args.lr,
        "warmup_lr_used": 0.0,
        "warmup_lr_note": "main() calls utils.cosine_scheduler without start_warmup_value: warmup starts at 0, "
                          "--warmup_lr (1e-6 in the shipped config) is not used",
        "min_lr_scaled": False,
        "eps": args.opt_eps,
        "grad_clip": args.clip_grad,
        "task_balancer": args.task_balancer,
        "group_names": held["group_names"],
        "official": {"repo": "EPFL-VILAB/MultiMAE", "commit": commit,
                     "files": ["run_pretraining_multimae.py", "utils/optim_factory.py", "utils/native_scaler.py",
                               "utils/task_balancing.py", "multimae/multimae.py", "multimae/input_adapters.py",
                               "multimae/output_adapters.py", "multimae/criterion.py"],
                     "argv": argv},
        "stand_ins": [
            "build_multimae_pretraining_dataset -> pool of augmented samples (trajectory.pool_*); label = index; "
            "dict order = domains",
            "utils.registry 'pretrain_multimae_traj': the official MultiMAE at the tiny size above",
            "DOMAIN_CONF adapters built with image_size=input_size (the shipped 224 run's default)",
            "torch.cuda.synchronize -> no-op; torch.cuda.amp autocast/GradScaler disabled by the CPU build (fp32); "
            "the disabled scaler's state_dict gets scale=1.0 (only logged)",
            "torch._six.inf = math.inf (torch >= 2); empty pandas module (unused Taskonomy import); einops 0.3.2",
            "recording wrappers around generate_random_masks (torch.rand, torch.rand_like and Dirichlet while it runs), "
            "NoWeightingStrategy.forward, NativeScalerWithGradNormCount and create_optimizer",
            "--output_dir '' and no wandb (no checkpoints, no logger); --no_auto_resume",
        ],
        "records": {
            "pool_<task>": "[pool, ...] the data pool per task: rgb (3, S, S) float, depth (1, S, S) float before "
                           "the loop's standardisation, semseg (S/4, S/4) int64",
            "sample_index": "[steps, batch] pool index of each sample, in the order the official loader read it",
            "dirichlet_concentration": "[steps, tasks] the Dirichlet concentration (alphas) of each draw",
            "dirichlet_sample": "[steps, batch, tasks] the Dirichlet split of the token budget per sample",
            "noise_<task>": "[steps, batch, tokens] the uniform noise ranking each task's tokens",
            "shuffle_noise": "[steps, batch, all tokens] the uniform noise of the final shuffle (ids_shuffle)",
            "ids_keep": "[steps, batch, num_encoded_tokens] the encoded tokens the draw gave",
            "loss": "[steps] the summed loss of each step",
            "task_loss": "[steps, heads] each head's loss (heads in config.heads: preds order)",
            "lr": "[steps, groups] lr of each official param group at the optimizer step",
            "weight_decay": "[steps, groups] weight decay of each official param group",
            "grad_norm": "[steps] total L2 gradient norm NativeScalerWithGradNormCount returned",
            "initial_state/final_state": "model.state_dict() before the first / after the last step, official keys",
        },
        "env": {"torch": torch.__version__, "einops": einops.__version__, "numpy": np.__version__, "device": "cpu",
                "dtype": "float32", "threads": 1},
    }
    (out / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    print(f"wrote {out}: {steps} optimizer steps, final loss {losses[-1]:.6f}")


if __name__ == "__main__":
    main()

"""How a multi-process run shares the model: DDP (a full replica per process) or FSDP2.

FSDP2 (``torch.distributed.fsdp.fully_shard``) shards every transformer block (each element of
a ``blocks`` ``ModuleList``: encoder, decoders, an EMA teacher's encoder) and then the whole
model, so parameters, gradients and optimizer state are split across processes and a block's
parameters are gathered only while it runs.

Checkpoints stay in the one-process format whatever the sharding: :func:`full_state` gathers
the full model and optimizer state on rank 0 (``get_model_state_dict`` /
``get_optimizer_state_dict`` with ``full_state_dict``) and re-keys the optimizer state by
parameter index exactly as ``optimizer.state_dict()`` of an unsharded run does, and
:func:`load_full_state` does the reverse. So a checkpoint written under FSDP2 resumes on one
process, under DDP, or under FSDP2 with another process count, and vice versa.
"""

from __future__ import annotations

import warnings
from typing import Any

import torch
from torch import nn

from mmim.engine.runtime import Runtime


def block_modules(model: nn.Module) -> list[nn.Module]:
    """The transformer blocks of ``model``: the elements of every ``ModuleList`` named ``*blocks``."""
    found = []
    for name, module in model.named_modules():
        if isinstance(module, nn.ModuleList) and name.rsplit(".", 1)[-1].endswith("blocks"):
            found.extend(module)
    return found


def shard_fsdp2(model: nn.Module, rt: Runtime) -> nn.Module:
    """Apply FSDP2 in place: ``fully_shard`` each block, then the model (the root).

    With bf16 precision, parameters are gathered in bf16 and gradients reduced in fp32
    (``MixedPrecisionPolicy``); the engine's autocast stays on around the forward, so buffers
    and inputs that remain fp32 mix as they do without sharding. The root does not cast its
    inputs: targets are computed from the raw fp32 batch, as under DDP.

    On a single process (no torchrun) a one-process group is started, so the same policy keeps
    bf16 compute copies of the fp32 master weights: autocast then finds the weights already in
    bf16 instead of casting every weight in every step.
    """
    if not torch.distributed.is_initialized():
        start_single_process_group(rt.device)
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    # MaskedModel returns views (tokens, masks) next to its loss; the engine only differentiates the loss
    warnings.filterwarnings("ignore", message=r"FSDP2-wrapped module .* returned a view tensor")
    mesh = init_device_mesh(rt.device.type, (rt.world_size,))
    if rt.precision in ("bf16", "fp16"):
        dtype = torch.bfloat16 if rt.precision == "bf16" else torch.float16
        block_mp = MixedPrecisionPolicy(param_dtype=dtype, reduce_dtype=torch.float32)
        root_mp = MixedPrecisionPolicy(param_dtype=dtype, reduce_dtype=torch.float32, cast_forward_inputs=False)
    else:
        block_mp = root_mp = MixedPrecisionPolicy()
    for block in block_modules(model):
        fully_shard(block, mesh=mesh, mp_policy=block_mp)
    fully_shard(model, mesh=mesh, mp_policy=root_mp)
    return model


def start_single_process_group(device: torch.device) -> None:
    """A process group of one (gloo on CPU, nccl on CUDA) on a free local port."""
    import os
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ["MASTER_PORT"] = str(port)
    torch.distributed.init_process_group("nccl" if device.type == "cuda" else "gloo", rank=0, world_size=1)


def set_micro_batch(model: nn.Module, last: bool) -> None:
    """Gradient accumulation under FSDP2: reduce-scatter gradients only after the last micro-batch,
    and keep parameters gathered between the backward of one micro-batch and the next forward."""
    model.set_requires_gradient_sync(last)
    model.set_reshard_after_backward(last)


def _param_names(model: nn.Module, optimizer: torch.optim.Optimizer) -> list[str]:
    """Fully qualified name of each optimizer parameter, in ``optimizer.state_dict()`` index order."""
    name_of = {id(p): n for n, p in model.named_parameters()}
    return [name_of[id(p)] for group in optimizer.param_groups for p in group["params"]]


def full_state(model: nn.Module, optimizer: torch.optim.Optimizer) -> tuple[dict[str, Any], dict[str, Any]]:
    """Full (unsharded) model and optimizer state dicts on rank 0, on the CPU; empty dicts elsewhere.

    A collective: every rank must call it. The optimizer dict has the format of a one-process
    ``optimizer.state_dict()`` (state keyed by parameter index).
    """
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict, get_optimizer_state_dict

    options = StateDictOptions(full_state_dict=True, cpu_offload=True)
    model_state = get_model_state_dict(model, options=options)
    optim_state = get_optimizer_state_dict(model, optimizer, options=options)
    if not model_state:  # not rank 0
        return {}, {}
    index = {name: i for i, name in enumerate(_param_names(model, optimizer))}
    plain = optimizer.state_dict()  # hyper-parameters with index-keyed params (no sharded tensors in them)
    state = {index[name]: value for name, value in optim_state["state"].items()}
    return model_state, {"state": state, "param_groups": plain["param_groups"]}


def load_full_state(model: nn.Module, optimizer: torch.optim.Optimizer, model_state: dict[str, Any],
                    optim_state: dict[str, Any]) -> None:
    """Load one-process-format state dicts (every rank holds them in full) into a sharded model."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict, set_optimizer_state_dict

    options = StateDictOptions(full_state_dict=True)
    set_model_state_dict(model, model_state, options=options)
    names = _param_names(model, optimizer)
    if len(names) != sum(len(g["params"]) for g in optim_state["param_groups"]):
        raise ValueError("the checkpoint's optimizer has a different number of parameters than this model's")
    keyed = {
        "state": {names[i]: value for i, value in optim_state["state"].items()},
        "param_groups": [dict(g, params=[names[i] for i in g["params"]]) for g in optim_state["param_groups"]],
    }
    set_optimizer_state_dict(model, optimizer, keyed, options=options)

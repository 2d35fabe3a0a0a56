"""What the Hugging Face ``transformers`` interop of every plugin shares (``mmim export --format
transformers`` and ``--init hf:DIR``); the model-specific key maps (ViTMAE, VideoMAE) live with
each plugin's converters.

- :func:`blocks_to_hf` / :func:`blocks_from_hf`: timm ``Block`` weights (one fused ``qkv``
  projection) <-> a transformers ViT layer (separate query, key and value projections), in either
  naming of the installed transformers: the one of transformers 4.x and early 5.x
  (``attention.attention.query``, ``intermediate.dense``) or the newer one (``attention.q_proj``,
  ``mlp.fc1``). :func:`find_naming` tells which one a state dict uses. Exports are written in the older naming, the
  one of the checkpoints on the Hugging Face hub, which every transformers version reads.
- :func:`save_checked`: build the transformers model from its config, load the mapped weights
  strictly, ``save_pretrained`` and load the folder back (the class and ``AutoModel``), failing on any
  missing or unexpected key.
- :func:`load_folder`: a ``save_pretrained`` folder read through transformers (so every naming
  transformers itself reads is accepted), without network access.

Everything that imports transformers goes through :func:`mmim.timm_compat.import_transformers`,
so a missing extra ends in the one-line ``pip install "mmim[transformers]"`` hint.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from mmim.files import usual_mode
from mmim.timm_compat import import_transformers

log = logging.getLogger(__name__)

# timm Block part -> transformers layer part, in the two namings transformers has used for ViT layers
LEGACY_NAMES = {"norm1": "layernorm_before", "q": "attention.attention.query", "k": "attention.attention.key",
                "v": "attention.attention.value", "proj": "attention.output.dense", "norm2": "layernorm_after",
                "fc1": "intermediate.dense", "fc2": "output.dense"}
CURRENT_NAMES = {"norm1": "layernorm_before", "q": "attention.q_proj", "k": "attention.k_proj", "v": "attention.v_proj",
                 "proj": "attention.o_proj", "norm2": "layernorm_after", "fc1": "mlp.fc1", "fc2": "mlp.fc2"}
# VideoMAE's query/value biases: separate parameters (legacy), or the projections' own biases (current)
LEGACY_QV_BIAS = {"q_bias": "attention.attention.q_bias", "v_bias": "attention.attention.v_bias"}
CURRENT_QV_BIAS = {"q_bias": "attention.attention.query.bias", "v_bias": "attention.attention.value.bias"}
QKV_BIAS_MODES = ("qkv", "qv", "none")


class TransformersFormatError(ValueError):
    """A model that transformers cannot hold, or a folder that does not fit the mmim model."""


NAMINGS = {"current": CURRENT_NAMES, "legacy": LEGACY_NAMES}


def find_naming(keys: Mapping[str, Any] | list[str], prefixes: Mapping[str, str]) -> str:
    """Which naming (``"current"`` or ``"legacy"``) a transformers state dict uses for its ViT layers.

    Args:
        keys: the state dict (or its keys).
        prefixes: the layer list's prefix in each naming, e.g. ``{"current": "vit.layers.",
            "legacy": "vit.encoder.layer."}``.
    """
    have = set(keys)
    for which, names in NAMINGS.items():
        prefix = prefixes.get(which)
        if prefix is not None and f"{prefix}0.{names['q']}.weight" in have:
            return which
    raise TransformersFormatError(f"no transformers ViT layer under {sorted(prefixes.values())} (layer 0's query "
                                  f"weight not found; first keys: {sorted(have)[:5]})")


def blocks_to_hf(state: Mapping[str, Tensor], src: str, dst: str, depth: int, names: Mapping[str, str],
                 qkv_bias: str = "qkv", qv_names: Mapping[str, str] | None = None) -> dict[str, Tensor]:
    """timm blocks ``{src}{i}.*`` of ``state`` -> transformers layers ``{dst}{i}.*``.

    Args:
        qkv_bias: ``"qkv"`` (three biases, ViTMAE), ``"qv"`` (query and value only, VideoMAE; the key
            bias is dropped, which changes no output: softmax ignores the shift ``q . b_k`` that it
            adds to every logit of a query) or ``"none"``.
        qv_names: the query/value bias names with ``"qv"`` (:data:`LEGACY_QV_BIAS` or :data:`CURRENT_QV_BIAS`).
    """
    if qkv_bias not in QKV_BIAS_MODES:
        raise ValueError(f"qkv_bias must be one of {QKV_BIAS_MODES}, got {qkv_bias!r}")
    out = {}
    for i in range(depth):
        s, d = f"{src}{i}.", f"{dst}{i}."
        for part in ("norm1", "norm2", "proj", "fc1", "fc2"):
            timm = {"proj": "attn.proj", "fc1": "mlp.fc1", "fc2": "mlp.fc2"}.get(part, part)
            for leaf in ("weight", "bias"):
                out[f"{d}{names[part]}.{leaf}"] = state[f"{s}{timm}.{leaf}"]
        q, k, v = state[f"{s}attn.qkv.weight"].chunk(3)
        out[f"{d}{names['q']}.weight"], out[f"{d}{names['k']}.weight"], out[f"{d}{names['v']}.weight"] = q, k, v
        bias = state.get(f"{s}attn.qkv.bias")
        if qkv_bias == "none":
            if bias is not None and bias.abs().max() > 0:
                raise TransformersFormatError(f"{s}attn.qkv.bias is not zero, the transformers model has no qkv bias")
            continue
        if bias is None:
            raise TransformersFormatError(f"{s}attn.qkv.bias is missing (the transformers model has {qkv_bias} biases)")
        qb, _, vb = bias.chunk(3)
        if qkv_bias == "qkv":
            out[f"{d}{names['q']}.bias"], out[f"{d}{names['k']}.bias"], out[f"{d}{names['v']}.bias"] = bias.chunk(3)
        else:
            out[f"{d}{qv_names['q_bias']}"], out[f"{d}{qv_names['v_bias']}"] = qb, vb
    return {k: v.detach().float().contiguous().clone() for k, v in out.items()}


def blocks_from_hf(hf: Mapping[str, Tensor], src: str, dst: str, depth: int, names: Mapping[str, str],
                   qkv_bias: str = "qkv", qv_names: Mapping[str, str] | None = None) -> dict[str, Tensor]:
    """Inverse of :func:`blocks_to_hf`: transformers layers ``{src}{i}.*`` -> timm blocks ``{dst}{i}.*``
    (with ``"qv"`` the key third of ``qkv.bias`` is zero)."""
    out = {}
    for i in range(depth):
        s, d = f"{src}{i}.", f"{dst}{i}."
        for part in ("norm1", "norm2", "proj", "fc1", "fc2"):
            timm = {"proj": "attn.proj", "fc1": "mlp.fc1", "fc2": "mlp.fc2"}.get(part, part)
            for leaf in ("weight", "bias"):
                out[f"{d}{timm}.{leaf}"] = hf[f"{s}{names[part]}.{leaf}"]
        out[f"{d}attn.qkv.weight"] = torch.cat([hf[f"{s}{names[x]}.weight"] for x in "qkv"])
        if qkv_bias == "qkv":
            out[f"{d}attn.qkv.bias"] = torch.cat([hf[f"{s}{names[x]}.bias"] for x in "qkv"])
        elif qkv_bias == "qv":
            qb, vb = hf[f"{s}{qv_names['q_bias']}"], hf[f"{s}{qv_names['v_bias']}"]
            out[f"{d}attn.qkv.bias"] = torch.cat([qb, torch.zeros_like(qb), vb])
    return out


def _loading_problems(info: Mapping[str, Any]) -> list[str]:
    problems = []
    for what in ("missing_keys", "unexpected_keys", "mismatched_keys"):
        found = sorted(str(k) for k in info.get(what) or [])
        if found:
            problems.append(f"{what.replace('_', ' ')} {found[:6]}")
    return problems


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """transformers' load reports and progress bars off (the checks here read the loading info)."""
    logging_utils = import_transformers().utils.logging
    verbosity, bars = logging_utils.get_verbosity(), logging_utils.is_progress_bar_enabled()
    logging_utils.set_verbosity_error()
    logging_utils.disable_progress_bar()
    try:
        yield
    finally:
        logging_utils.set_verbosity(verbosity)
        if bars:
            logging_utils.enable_progress_bar()


def loading_info(loader: Any, folder: str | Path) -> tuple[Any, dict[str, list[str]]]:
    """``loader.from_pretrained(folder, output_loading_info=True)`` (local files only): the model
    and the keys missing, unexpected and of mismatched shape."""
    with quiet(), torch.random.fork_rng(devices=[]):
        model, info = loader.from_pretrained(Path(folder), output_loading_info=True, local_files_only=True)
    return model, {k: sorted(str(x) for x in info.get(k) or []) for k in ("missing_keys", "unexpected_keys", "mismatched_keys")}


def save_checked(model_class: str, config: Any, state: Mapping[str, Tensor], out_dir: str | Path,
                 file_state: Mapping[str, Tensor] | None = None) -> Path:
    """Write a ``save_pretrained`` folder of transformers' ``model_class`` (e.g. ``"ViTMAEForPreTraining"``)
    holding ``state`` (keyed as the installed transformers names the model's parameters), and check
    how it loads back.

    Args:
        file_state: the same weights under the keys to write in ``model.safetensors`` (the hub's
            naming), instead of what ``save_pretrained`` writes; loading must give back ``state``.

    The class and ``AutoModelForPreTraining`` must report no missing, unexpected or mismatched key
    and give back ``state`` exactly; ``AutoModel`` (the encoder alone, e.g. ``ViTMAEModel``) no missing
    or mismatched key, and as unexpected only the keys outside its base model (the decoder, which it
    has no place for). A base ``model_class`` (``ViTMAEModel``) is checked through itself and
    ``AutoModel``, with nothing unexpected.

    Returns:
        the weights file.
    """

    transformers = import_transformers()
    cls = getattr(transformers, model_class)
    with torch.random.fork_rng(devices=[]):  # the model's random init leaves the caller's randomness alone
        model = cls(config).eval()
    ours = dict(state)
    theirs = model.state_dict()
    missing, unexpected = sorted(set(theirs) - set(ours)), sorted(set(ours) - set(theirs))
    if missing or unexpected:
        raise TransformersFormatError(f"{model_class}: the mapped weights do not fit: missing {missing[:6]}, "
                                      f"unexpected {unexpected[:6]}")
    wrong = [f"{k} {tuple(v.shape)} vs {tuple(theirs[k].shape)}" for k, v in ours.items() if v.shape != theirs[k].shape]
    if wrong:
        raise TransformersFormatError(f"{model_class}: shapes differ: {wrong[:4]}")
    model.load_state_dict(ours, strict=True)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    with quiet():
        model.save_pretrained(out_dir)
    del model  # one copy of the weights at a time (ViT-H: 2.5 GB each)
    weights = out_dir / "model.safetensors"
    if file_state is not None:
        for old in out_dir.glob("model*.safetensors*"):
            old.unlink()
        from safetensors.torch import save_file

        save_file({k: v.detach().float().contiguous() for k, v in file_state.items()}, str(weights),
                  metadata={"format": "pt"})
    for written in out_dir.glob("*.safetensors"):  # save_pretrained's files too: the mode other new files get
        usual_mode(written)
    base = f"{cls.base_model_prefix}."
    head = model_class.endswith("ForPreTraining")  # else the encoder alone, which AutoModel builds itself
    loaders = (cls, transformers.AutoModelForPreTraining, transformers.AutoModel) if head else (cls, transformers.AutoModel)
    for loader in loaders:
        loaded, info = loading_info(loader, out_dir)
        if loader is transformers.AutoModel and head:  # the base model: the head's keys have no place in it
            info["unexpected_keys"] = [k for k in info["unexpected_keys"] if k.startswith(base)]
        else:
            changed = [k for k, v in loaded.state_dict().items() if k in ours and not torch.equal(v, ours[k].to(v.dtype))]
            if changed:
                info["mismatched_keys"] = info["mismatched_keys"] + [f"{k} (other values)" for k in changed]
        del loaded
        problems = _loading_problems(info)
        if problems:
            raise TransformersFormatError(f"{out_dir}: {loader.__name__}.from_pretrained reports {'; '.join(problems)}")
    return weights


def read_config(path: str | Path, model_types: tuple[str, ...]) -> dict[str, Any]:
    """``config.json`` of a transformers folder, checked to be one of ``model_types``."""
    folder = Path(path)
    cfg_path = folder / "config.json"
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: not a directory (--init hf:DIR takes a transformers save_pretrained folder)")
    if not cfg_path.is_file():
        raise FileNotFoundError(f"{folder}: no config.json (not a transformers save_pretrained folder)")
    try:
        config = json.loads(cfg_path.read_text())
    except json.JSONDecodeError as err:
        raise TransformersFormatError(f"{cfg_path}: not valid JSON: {err}") from None
    kind = config.get("model_type")
    if kind not in model_types:
        raise TransformersFormatError(f"{cfg_path}: model_type {kind!r}; this model reads {', '.join(model_types)} "
                                      "folders")
    return config


def load_folder(path: str | Path, model_class: str, model_types: tuple[str, ...]) -> tuple[Any, dict[str, Tensor], list[str]]:
    """Load a transformers folder as ``model_class`` (no download: ``local_files_only``).

    Returns:
        ``(config, state, missing)``: the transformers config, the model's state dict in the
        installed transformers' naming, and the keys the folder did not hold (freshly initialised by
        transformers, e.g. the decoder of an encoder-only ``ViTMAEModel`` folder; never copied).
    """
    read_config(path, model_types)
    transformers = import_transformers()
    cls = getattr(transformers, model_class)
    try:
        with quiet(), torch.random.fork_rng(devices=[]):
            model, info = cls.from_pretrained(Path(path), output_loading_info=True, local_files_only=True)
    except (OSError, ValueError) as err:
        raise TransformersFormatError(f"{path}: {model_class}.from_pretrained failed: {err}") from None
    if info.get("mismatched_keys") or info.get("unexpected_keys"):
        raise TransformersFormatError(f"{path}: {'; '.join(_loading_problems({**info, 'missing_keys': []}))}")
    state = {k: v.detach().float() for k, v in model.state_dict().items()}
    return model.config, state, sorted(str(k) for k in info.get("missing_keys") or [])


def check_loaded(path: str | Path, model: torch.nn.Module, mapped: Mapping[str, Tensor],
                 required: Callable[[str], bool]) -> list[str]:
    """Load ``mapped`` into ``model`` (``strict=False``); raise if a key for which ``required(key)`` is
    true stays unset, or if ``mapped`` has a key the model lacks. Returns the keys left unset."""
    try:
        result = model.load_state_dict(dict(mapped), strict=False)
    except RuntimeError as err:  # shape mismatches
        detail = "; ".join(line.strip() for line in str(err).splitlines()[1:4])
        raise TransformersFormatError(f"{path}: does not fit the recipe's model: {detail}") from None
    missing = [k for k in result.missing_keys if required(k)]
    if missing or result.unexpected_keys:
        raise TransformersFormatError(f"{path}: does not fit the recipe's model: missing {missing[:6]}, "
                                      f"unexpected {list(result.unexpected_keys)[:6]}")
    return list(result.missing_keys)

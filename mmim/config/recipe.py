"""The recipe schema: one fully expanded YAML file per recipe, validated against dataclasses.

Components (tokenizer, masker, ...) are named by their registered names and take their own
options; those are checked against the component's constructor when the recipe is loaded.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from mmim.config.loop import OptimConfig, ScheduleConfig
from mmim.config.typed import ConfigError, from_dict, to_dict
from mmim.fusion.masking import FusionConfig
from mmim.teacher import TeacherConfig
from mmim.trunk.encoder import EncoderConfig

Component = dict[str, Any]  # {"name": registered name, **options}


@dataclass
class Provenance:
    """Where a recipe comes from and what the paper reports for it."""

    paper: str = ""
    url: str = ""
    table: str = ""
    metric: str = ""
    reported: float | None = None
    notes: str = ""
    unverified: str = ""  # what could not be checked against the paper, and why (shown by `mmim recipes`)


@dataclass
class StreamConfig:
    """One named token stream and the components in its slots.

    In a fused model (``model.fusion``) the joint budget masks every stream, so ``masker`` is
    not used; an input-only stream needs no ``target``/``loss``/``decoder``; and a stream with
    ``tokens_of: other`` has no tokenizer of its own: it is an extra prediction head on
    ``other``'s tokens and mask (MultiMAE's ``norm_rgb``).
    """

    tokenizer: Component | None = None
    masker: Component | None = None
    target: Component | None = None
    loss: Component | None = None
    decoder: Component | None = None
    tokens_of: str | None = None
    weight: float = 1.0
    input_key: str | None = None  # batch key holding the stream's raw input (default: stream name)
    teacher_input_key: str | None = None  # batch key of the teacher's view (default: the student's input)
    mask_in_encoder: bool = False  # SimMIM: encode every token, masked ones replaced by a learned mask token


@dataclass
class ModelConfig:
    encoder: EncoderConfig
    streams: dict[str, StreamConfig]
    fusion: FusionConfig | None = None  # several streams under MultiMAE/4M budgets (see mmim.fusion)
    pool: Literal["mean", "cls"] = "mean"  # how eval pools encoder features
    teacher: TeacherConfig = field(default_factory=TeacherConfig)  # used when a target requires a teacher


@dataclass
class DataConfig:
    dataset: Component
    batch_size: int = 64  # per process
    num_workers: int = 0
    persistent_workers: bool = True  # with num_workers > 0: keep the loader workers from epoch to epoch
    prefetch_factor: int = 4  # with num_workers > 0: batches each worker loads ahead
    pin_memory: bool | None = None  # page-locked batches for asynchronous copies; None: on for CUDA
    skip_corrupt: bool = False
    max_skip_fraction: float | None = None  # with skip_corrupt: stop once more than this fraction was corrupt
    shards: str | list[str] | None = None  # train from tar shards (mmim pack): dir, brace pattern, URLs, pipe:
    shards_index: str | None = None  # their index.json (default: next to the first shard)
    shuffle_buffer: int = 1000  # samples each shard reader holds for shuffling (<= 1: shard order only)


@dataclass
class TrainConfig:
    effective_batch_size: int | None = None  # None: batch_size * world size (no accumulation)
    grad_clip: float | None = None
    # how the micro-batches of an optimizer step combine: "mean" (loss / accumulation steps, MAE's
    # accum_iter) or "sum" (each micro-batch's loss.backward() as is, Point-MAE's step_per_update)
    grad_accumulation: Literal["mean", "sum"] = "mean"
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"  # auto: bf16 on GPU, fp32 on CPU
    device: str = "auto"
    log_every: int = 10
    checkpoint_every: int = 0  # optimizer steps; 0 = at the end of each epoch only
    keep_checkpoints: int = 2
    out_dir: str = "runs/{name}"
    # experiment trackers (mmim.engine.loggers); wandb and mlflow are extras: pip install "mmim[wandb]"
    loggers: list[Literal["tensorboard", "wandb", "mlflow"]] = field(default_factory=lambda: ["tensorboard"])
    project: str = "mmim"  # W&B project and MLflow experiment (the run is named after its run directory)
    wandb_mode: Literal["offline", "online"] | None = None  # None: $WANDB_MODE, else offline (`wandb sync` uploads)
    mlflow_uri: str | None = None  # None: $MLFLOW_TRACKING_URI, else a local file store <out_dir>/../mlruns
    tensorboard: bool | None = None  # deprecated: use loggers; false drops tensorboard from loggers
    progress: bool = True
    distributed: Literal["ddp", "fsdp2"] = "ddp"  # how a multi-process run shares the model (fsdp2: fully_shard)
    compile: bool | None = None  # torch.compile tokenize/predict (keys unchanged); None: on for CUDA, off on CPU
    compile_mode: Literal["default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"] = "default"
    fused_attention: bool | None = None  # timm's SDPA attention; None: on, except bf16 on CPU (measured slower)
    tf32: bool | None = None  # TF32 matmuls for fp32 runs; None: on for CUDA fp32
    threads: int | None = None  # torch intra-op threads (None: torch's default; 1 helps on busy shared CPUs)
    # fault tolerance (docs/scaling.md): checkpoint format, failed saves, hung processes
    checkpoint_format: Literal["file", "sharded"] = "file"  # file: ckpt-<step>.pt on rank 0; sharded: DCP ckpt-<step>/
    async_checkpoint: bool = False  # sharded only: write in a background thread while training goes on
    save_retries: int = 0  # a checkpoint write that fails (e.g. full disk) is retried this often, then the run stops
    save_retry_wait: float = 30.0  # seconds between those tries
    collective_timeout: float | None = None  # seconds a collective waits for a hung process (None: torch's default)


@dataclass
class EvalConfig:
    # cross_modal (fused models): each target stream's loss predicted from the other streams vs from none
    protocols: list[Literal["linear", "knn", "cross_modal"]] = field(default_factory=lambda: ["linear", "knn"])
    dataset: Component | None = None  # labelled data; default: data.dataset without augmentation
    train_split: str = "train"
    test_split: str = "test"
    # read the splits from tar shards (mmim pack --split ...) instead of files: the forms of data.shards
    train_shards: str | list[str] | None = None
    train_shards_index: str | None = None
    test_shards: str | list[str] | None = None
    test_shards_index: str | None = None
    after_train: bool = True
    compare_random_init: bool = True
    batch_size: int = 256
    knn_k: int = 20
    knn_temperature: float = 0.07
    linear_epochs: int = 100
    linear_lr: float = 1e-3
    linear_weight_decay: float = 1e-4


@dataclass
class FinetuneConfig:
    """End-to-end fine-tuning of the pretrained encoder for classification (``mmim finetune``)."""

    dataset: Component | None = None  # labelled data; default: eval.dataset, then data.dataset
    train_split: str = "train"
    test_split: str = "test"
    # train / test from tar shards (mmim pack --split ...) instead of files: the forms of data.shards
    train_shards: str | list[str] | None = None
    train_shards_index: str | None = None
    test_shards: str | list[str] | None = None
    test_shards_index: str | None = None
    num_classes: int | None = None  # default: the dataset's num_classes
    epochs: int = 100
    warmup_epochs: float = 5.0
    batch_size: int = 64  # per process
    effective_batch_size: int | None = None
    base_lr: float = 5e-4  # scaled by effective_batch_size / 256
    lr: float | None = None
    min_lr: float = 1e-6
    weight_decay: float = 0.05
    betas: tuple[float, float] = (0.9, 0.999)
    layer_decay: float = 0.75  # layer-wise lr decay factor
    drop_path: float = 0.1
    label_smoothing: float = 0.1
    mixup: float = 0.0  # mixup alpha (timm Mixup); 0 disables
    cutmix: float = 0.0  # cutmix alpha; 0 disables
    mixup_prob: float = 1.0  # probability of mixing a batch at all (timm Mixup prob, MAE --mixup_prob)
    mixup_switch_prob: float = 0.5  # with both alphas, probability of cutmix over mixup (--mixup_switch_prob)
    pool: Literal["mean", "cls", "cls_max"] = "mean"  # cls_max: [cls, max over tokens] (Point-MAE)
    # train the position table (and a cls position, zero-initialised) as parameters, as timm's ViT trains
    # pos_embed (MAE fine-tuning); false: the fixed sin-cos table stays a buffer
    train_positions: bool = False
    head: Literal["linear", "mlp"] = "linear"  # mlp: Point-MAE's Linear-BN-ReLU-Dropout x2 + Linear head
    head_hidden: int = 256  # width of the mlp head's hidden layers
    head_dropout: float = 0.5  # dropout of the mlp head
    votes: int = 1  # test-time votes (Point-MAE's voting: average logits over augmented copies)
    streams: list[str] | None = None  # fused models: the input streams the classifier sees (default: all inputs)
    token_masker: Component | None = None  # drop tokens while fine-tuning (Audio-MAE: time_frequency 0.2 / 0.2)
    sampler: Literal["uniform", "weighted"] = "uniform"  # weighted: dataset.sample_weights() (AudioSet), with replacement
    epoch_samples: int | None = None  # samples per epoch with the weighted sampler (Audio-MAE AS-2M: 200000)
    sampler_replacement: bool = False  # the weighted sampler draws with replacement (Audio-MAE: without)
    multilabel: bool = False  # multi-label targets (AudioSet): BCE on multi-hot labels, mAP as the metric
    grad_clip: float | None = None
    # weight-decay exemptions beyond 1-D parameters and biases, as optim.no_weight_decay (None: mmim's rule)
    no_weight_decay: list[str] | None = None
    max_steps: int | None = None  # stop early (smoke tests); the schedule still spans ``epochs``
    out_dir: str = "runs/{name}_finetune"
    reported_top1: float | None = None  # the paper's fine-tuned accuracy for this setting
    notes: str = ""


@dataclass
class Recipe:
    name: str
    model: ModelConfig
    data: DataConfig
    description: str = ""
    modality: str = ""
    provenance: Provenance = field(default_factory=Provenance)
    seed: int = 0
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)
    source: str = ""  # file the recipe was read from (filled in by the loader)


def parse_override(text: str) -> tuple[list[str], Any]:
    """``"optim.lr=1e-3"`` -> ``(["optim", "lr"], 0.001)``; the value is parsed as YAML."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise ConfigError(f"override {text!r} is not of the form key=value")
    parsed = yaml.safe_load(value) if value else ""
    if isinstance(parsed, str) and parsed.strip().lower() in ("nan", "inf", "-inf"):
        parsed = float(parsed)
    return key.strip().split("."), parsed


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Return a copy of ``data`` with dotted ``key=value`` overrides applied."""
    data = copy.deepcopy(data)
    for text in overrides:
        path, value = parse_override(text)
        node = data
        for i, part in enumerate(path[:-1]):
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                raise ConfigError(f"override {text!r}: {'.'.join(path[: i + 1])} is not a mapping")
            node = child
        node[path[-1]] = value
    return data


def read_yaml(path: str | Path) -> dict[str, Any]:
    """Safe-load a recipe file; errors name the file."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"recipe file not found: {path}") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from err
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a recipe must be a YAML mapping, got {type(data).__name__}")
    return data


def recipe_from_dict(data: dict[str, Any], source: str = "", check_components: bool = True) -> Recipe:
    """Validate ``data`` into a :class:`Recipe`; component names and options are checked too."""
    data = {k: v for k, v in data.items() if k != "source"}
    recipe: Recipe = from_dict(Recipe, data, "", source)
    recipe.source = source
    recipe.model.encoder.resolved()
    if check_components:
        check_recipe_components(recipe)
    return recipe


def load_recipe(path: str | Path, overrides: list[str] | None = None, check_components: bool = True) -> Recipe:
    """Read, override and validate a recipe file."""
    data = apply_overrides(read_yaml(path), overrides or [])
    return recipe_from_dict(data, str(path), check_components)


def recipe_to_dict(recipe: Recipe) -> dict[str, Any]:
    """The resolved recipe as plain data (what is saved as ``config.yaml`` in a run)."""
    return to_dict(recipe)


# Options that the model builder supplies to each kind of component.
CONTEXT = {
    "tokenizer": ("embed_dim",),
    "masker": (),
    "target": (),
    "loss": (),
    "decoder": ("encoder_dim", "out_dim", "position", "context_positions", "stream"),
    "dataset": ("split", "augment"),
}


def check_stream_slots(model: ModelConfig, prefix: str = "") -> None:
    """Which slots each stream must fill. Every stream has a tokenizer (or ``tokens_of``); a
    predicted stream has target, loss and decoder (under fusion the predicted streams are
    ``model.fusion.targets``, else those that name any of the three); without fusion every
    stream with a tokenizer has a masker (under fusion the budget masks)."""
    streams = model.streams
    fused = model.fusion is not None
    if fused and model.fusion.targets is not None:
        targets = set(model.fusion.targets)
    elif fused:
        targets = set(streams)
    else:
        targets = {n for n, s in streams.items() if s.target or s.loss or s.decoder}
        if not targets:
            raise ConfigError(f"{prefix}model.streams: no stream is predicted (give one a target, loss and decoder)")
    for name, s in streams.items():
        at = f"{prefix}model.streams.{name}"
        if s.tokens_of is not None:
            if s.tokens_of not in streams or streams[s.tokens_of].tokens_of is not None:
                raise ConfigError(f"{at}.tokens_of: {s.tokens_of!r} is not a stream with its own tokenizer")
            if s.tokenizer is not None:
                raise ConfigError(f"{at}: give either a tokenizer or tokens_of, not both")
        elif s.tokenizer is None:
            raise ConfigError(f"{at}.tokenizer: missing")
        needed = ["target", "loss", "decoder"] if name in targets else []
        if not fused and s.tokens_of is None:
            needed.append("masker")
        for kind in needed:
            if getattr(s, kind) is None:
                raise ConfigError(f"{at}.{kind}: missing" + (" (the stream is a fusion target)" if fused else ""))
    if fused:
        for key in ("inputs", "targets"):
            for name in getattr(model.fusion, key) or []:
                if name not in streams:
                    raise ConfigError(f"{prefix}model.fusion.{key}: no stream {name!r}; streams: {', '.join(streams)}")
        for name in model.fusion.inputs or []:
            if streams[name].tokens_of is not None:
                raise ConfigError(f"{prefix}model.fusion.inputs: {name!r} has no tokens of its own (tokens_of)")


def check_decoder_fits(model: ModelConfig, name: str, decoder_cls: type, at: str) -> None:
    """A decoder's declared capabilities against its stream's settings."""
    stream = model.streams[name]
    source = model.streams[stream.tokens_of] if stream.tokens_of else stream
    if getattr(decoder_cls, "needs_all_tokens", False) and not source.mask_in_encoder:
        raise ConfigError(f"{at}: decoder {stream.decoder['name']!r} predicts from encoded mask tokens; set "
                          f"mask_in_encoder: true on stream {stream.tokens_of or name!r}")
    if getattr(decoder_cls, "per_stream", True) and model.fusion is not None:
        raise ConfigError(f"{at}: decoder {stream.decoder['name']!r} reads its own stream's tokens only, but "
                          "model.fusion budgets split the encoded tokens differently per sample; use a decoder "
                          "that reads the joint context (multimae, joint)")


def check_recipe_components(recipe: Recipe) -> None:
    """Validate the recipe once, at load: stream slots, every component name and its options,
    and each decoder's declared capabilities; nothing is built."""
    from mmim.registry import RegistryError, check_options

    prefix = f"{recipe.source}: " if recipe.source else ""
    try:
        check_stream_slots(recipe.model, prefix)
        for sname, stream in recipe.model.streams.items():
            for kind in ("tokenizer", "masker", "target", "loss", "decoder"):
                if getattr(stream, kind) is not None:
                    at = f"{prefix}model.streams.{sname}.{kind}"
                    cls = check_options(kind, getattr(stream, kind), CONTEXT[kind], where=at)
                    if kind == "decoder":
                        check_decoder_fits(recipe.model, sname, cls, at)
        check_options("dataset", recipe.data.dataset, CONTEXT["dataset"], where=f"{prefix}data.dataset")
        for section in ("eval", "finetune"):
            spec = getattr(recipe, section).dataset
            if spec is not None:
                check_options("dataset", spec, CONTEXT["dataset"], where=f"{prefix}{section}.dataset")
        if recipe.finetune.token_masker is not None:
            check_options("masker", recipe.finetune.token_masker, (), where=f"{prefix}finetune.token_masker")
    except RegistryError as err:
        raise ConfigError(str(err)) from err

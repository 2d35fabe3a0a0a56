"""``mmim new-plugin NAME DIR``: a new plugin package that installs, passes ``mmim check-plugin``
and trains with ``mmim train --modality NAME`` as it is, ready to be changed into a real modality.

The package adds a trivial modality, 1-D signals of ``length`` values:

- ``mmim_NAME/__init__.py``: the :class:`~mmim.registry.Plugin` declaration (light: components
  are ``"module:attribute"`` strings, imported when a recipe names them);
- ``tokenizer.py``: ``NAME_patch``, non-overlapping windows of ``patch_len`` values -> tokens;
- ``datasets.py``: ``NAME_waves``, generated labelled signals (a sine whose number of cycles is
  the class, random phase, amplitude and noise), deterministic per ``(seed, split, index)``;
- ``visualize.py``: ``mmim visualize`` for the modality (Pillow: signal, hidden patches, prediction);
- ``recipes/mae_NAME.yaml``: the default recipe (MAE with the core's masker, target, loss and
  decoder), a few seconds on a CPU;
- ``tests/``: the package's own tests;
- ``pyproject.toml`` with the ``mmim.plugins`` entry point, and a README.

``docs/plugins.md`` starts from it.
"""

from __future__ import annotations

import keyword
import re
from pathlib import Path
from string import Template

NAME = re.compile(r"[a-z][a-z0-9_]*")

PYPROJECT = '''\
# An mmim plugin package, scaffolded by `mmim new-plugin $name`.
[build-system]
requires = ["setuptools>=64"]
build-backend = "setuptools.build_meta"

[project]
name = "mmim-$dist"
version = "0.1.0"
description = "mmim plugin: the $name modality"
readme = "README.md"
requires-python = ">=3.10"
dependencies = ["mmim"]

[project.optional-dependencies]
test = ["pytest>=7"]

# The line that makes mmim find the plugin: an entry point in the "mmim.plugins" group naming the
# light Plugin object in mmim_$name/__init__.py.
[project.entry-points."mmim.plugins"]
$name = "mmim_$name:plugin"

[tool.setuptools]
packages = ["mmim_$name"]

# the recipes ship inside the package (Plugin.recipes)
[tool.setuptools.package-data]
mmim_$name = ["recipes/*.yaml"]

[tool.pytest.ini_options]
testpaths = ["tests"]
addopts = "-ra"

[tool.ruff]
line-length = 120
target-version = "py310"

[tool.ruff.lint]
select = ["E", "F", "W", "I", "B", "UP"]
'''

INIT = '''\
"""mmim plugin for the $name modality.

Only the Plugin declaration lives here: components are named as "module:attribute" strings, so
`mmim plugins` lists the plugin without importing them; each is imported when a recipe names it.
"""

from mmim.registry import Plugin

plugin = Plugin(
    name="$name",
    description="$name: 1-D signals in patch tokens, generated labelled waves",
    modality="$name",
    components={
        "tokenizer": {"${name}_patch": "mmim_$name.tokenizer:PatchTokenizer"},
        "dataset": {"${name}_waves": "mmim_$name.datasets:Waves"},
        "visualizer": {"${name}_patch": "mmim_$name.visualize:Visualizer"},  # under the tokenizer's name
    },
    recipes="mmim_$name/recipes",
    default_recipe="mae_$name.yaml",
)
'''

TOKENIZER = '''\
"""Patch tokens of a 1-D signal: non-overlapping windows of ``patch_len`` values."""

from __future__ import annotations

import torch
from mmim.interfaces import Tokenizer
from mmim.trunk.position import FixedPositionTable, sincos_1d
from mmim.types import Layout, Tokens
from torch import Tensor, nn


def positions(dim: int, num_patches: int) -> FixedPositionTable:
    """A fixed 1-D sin-cos table over patch indices -> ``(1, L, dim)``."""
    return FixedPositionTable(sincos_1d(dim, torch.arange(num_patches)).to(torch.float32))


class PatchTokenizer(Tokenizer):
    """A signal ``(B, T)`` as ``T / patch_len`` tokens: each window of ``patch_len`` values is the
    token's content and is embedded by one linear map ``proj`` (``patch_len -> D``).

    Args:
        embed_dim: encoder width ``D`` (given by the model builder, not written in recipes).
        length: signal length ``T`` the model is built for.
        patch_len: values per token; must divide ``length``.
    """

    def __init__(self, embed_dim: int, length: int = 64, patch_len: int = 8) -> None:
        super().__init__()
        if length <= 0 or patch_len <= 0 or length % patch_len:
            raise ValueError(f"length {length} must be a positive multiple of patch_len {patch_len}")
        self.length, self.patch_len = length, patch_len
        self.grid = (length // patch_len,)
        self.proj = nn.Linear(patch_len, embed_dim)
        self.pos = positions(embed_dim, self.grid[0])

    @property
    def content_dim(self) -> int:
        return self.patch_len

    def forward(self, x: Tensor) -> Tokens:
        if x.dim() != 2 or x.shape[1] != self.length:
            raise ValueError(f"PatchTokenizer expects signals (B, {self.length}), got {tuple(x.shape)}")
        layout = Layout(batch_size=x.shape[0], grid=self.grid, device=x.device)
        content = x.reshape(x.shape[0], self.grid[0], self.patch_len)
        return Tokens(self.proj(content), self.pos(layout), content, layout)

    def content_to_raw(self, content: Tensor, layout: Layout | None = None) -> Tensor:
        """``(B, L, patch_len)`` -> ``(B, T)``: the inverse of the patching."""
        return content.reshape(content.shape[0], -1)

    def position_embedding(self, dim: int) -> nn.Module:
        return positions(dim, self.grid[0])

    def example_input(self, batch_size: int, generator: torch.Generator) -> Tensor:
        return torch.randn(batch_size, self.length, generator=generator)
'''

DATASETS = '''\
"""Generated labelled signals: nothing is read from disk or downloaded."""

from __future__ import annotations

import numpy as np
import torch
from mmim.data.errors import DataError
from torch.utils.data import Dataset

SPLITS = {"train": 0, "val": 1, "test": 2}


class Waves(Dataset):
    """A sine with ``label + 1`` cycles per signal, random phase, amplitude, offset and noise.

    Sample ``i`` of a split comes from a generator seeded with ``(seed, split, i)``: the same in
    every run and worker, different across splits. Labels are ``i % num_classes``.

    Args:
        split: ``"train"``, ``"val"`` or ``"test"``.
        augment: random gain (0.8-1.2) on training samples, from torch's global RNG.
        num_samples: samples per split.
        length: values per signal.
        num_classes: classes (cycles per signal 1 .. num_classes).
        seed: dataset seed.

    Items are ``{"$name": float32 tensor (length,), "label": int}``.
    """

    def __init__(self, split: str, augment: bool, num_samples: int = 1024, length: int = 64, num_classes: int = 4,
                 seed: int = 0) -> None:
        if split not in SPLITS:
            raise DataError(f"${name}_waves: unknown split {split!r}; splits: {', '.join(SPLITS)}")
        if num_samples <= 0 or length <= 1 or num_classes <= 0:
            raise DataError(f"${name}_waves: need num_samples > 0, length > 1 and num_classes > 0, "
                            f"got {num_samples}, {length}, {num_classes}")
        self.split, self.augment = split, augment
        self.num_samples, self.length, self.num_classes, self.seed = num_samples, length, num_classes, seed

    def __len__(self) -> int:
        return self.num_samples

    def __getitem__(self, index: int) -> dict[str, object]:
        if not 0 <= index < self.num_samples:
            raise IndexError(f"${name}_waves: index {index} out of range for {self.num_samples} samples")
        rng = np.random.default_rng([self.seed, SPLITS[self.split], index])
        label = index % self.num_classes
        t = np.arange(self.length) / self.length
        wave = rng.uniform(0.5, 1.5) * np.sin(2 * np.pi * (label + 1) * t + rng.uniform(0, 2 * np.pi))
        x = torch.from_numpy(wave + rng.uniform(-0.3, 0.3) + 0.1 * rng.standard_normal(self.length)).float()
        if self.augment:
            x = x * (0.8 + 0.4 * torch.rand(()))
        return {"$name": x, "label": label}
'''

VISUALIZE = '''\
"""``mmim visualize`` for the $name modality: one PNG per sample, drawn with Pillow."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageDraw
from torch import Tensor


class Visualizer:
    """The signal (blue) with its hidden patches shaded and the model's prediction there (red)."""

    def render(self, model: Any, stream: str, raw: Tensor, output: Any, out_dir: Path,
               dataset_spec: dict[str, Any] | None = None, prefix: str = "sample") -> list[Path]:
        s = model.streams[stream]
        tokens, mask, pred = output.tokens[stream], output.stream_mask(stream), output.predictions[stream]
        if pred.full is None:
            raise ValueError("visualisation needs predictions for every token (a decoder that honours full)")
        full = pred.full.float()
        if getattr(s.target, "normalize", False):  # predictions of per-patch normalised values: back to the input scale
            content = tokens.content.float()
            full = full * (content.var(-1, keepdim=True) + s.target.eps) ** 0.5 + content.mean(-1, keepdim=True)
        recon = s.tokenizer.content_to_raw(full, tokens.layout)
        hidden = mask.bool_mask().unsqueeze(-1).expand_as(tokens.content).float()
        hidden = s.tokenizer.content_to_raw(hidden, tokens.layout).bool()
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        paths = []
        for i in range(raw.shape[0]):
            path = out_dir / f"{prefix}_{i:03d}.png"
            self.draw(raw[i].float().cpu().numpy(), recon[i].detach().cpu().numpy(), hidden[i].cpu().numpy()).save(path)
            paths.append(path)
        return paths

    @staticmethod
    def draw(x: np.ndarray, recon: np.ndarray, hidden: np.ndarray, step: int = 6, height: int = 160) -> Image.Image:
        pad = 16
        img = Image.new("RGB", (len(x) * step + 2 * pad, height + 2 * pad), "white")
        ink = ImageDraw.Draw(img)
        shown = np.concatenate([x, recon[hidden]])
        lo, hi = float(shown.min()), float(shown.max())
        y = lambda v: pad + (hi - v) / max(hi - lo, 1e-6) * height  # noqa: E731
        for t in np.flatnonzero(hidden):
            ink.rectangle([pad + t * step, pad, pad + (t + 1) * step, pad + height], fill=(225, 225, 225))
        ink.line([(pad + t * step + step / 2, y(v)) for t, v in enumerate(x)], fill=(31, 119, 180), width=2)
        for t in range(len(x) - 1):
            if hidden[t] and hidden[t + 1]:
                ink.line([(pad + t * step + step / 2, y(recon[t])), (pad + (t + 1) * step + step / 2, y(recon[t + 1]))],
                         fill=(214, 39, 40), width=2)
        ink.text((pad, 2), "signal (blue), hidden patches (grey), prediction (red)", fill="black")
        return img

    def load_input(self, path: str | Path, model: Any, stream: str,
                   dataset_spec: dict[str, Any] | None = None) -> Tensor:
        """A ``.npy`` or ``.csv`` file holding one signal -> ``(1, length)`` float32."""
        path = Path(path)
        try:
            data = np.load(path) if path.suffix == ".npy" else np.loadtxt(path, delimiter=",")
        except (OSError, ValueError) as err:
            raise ValueError(f"{path}: cannot read a signal: {err}") from err
        length = model.streams[stream].tokenizer.length
        if data.shape != (length,):
            raise ValueError(f"{path}: a signal of shape {data.shape}; the model takes ({length},)")
        return torch.as_tensor(data, dtype=torch.float32).unsqueeze(0)
'''

RECIPE = '''\
# The default recipe of the $name plugin (`mmim train --modality $name`): MAE on generated waves,
# with the core's random masker, content target, MSE loss and MAE decoder; then linear and k-NN
# probes next to a random-init encoder. Change the tokenizer and dataset, keep the loop.
name: mae_$name
description: Masked patch reconstruction of 1-D signals (a scaffold from mmim new-plugin)
modality: $name
provenance:
  paper: He et al. 2022, "Masked Autoencoders Are Scalable Vision Learners", CVPR 2022
  url: https://arxiv.org/abs/2111.06377
  notes: the MAE objective on a toy modality; nothing is reported
seed: 0
model:
  encoder:
    embed_dim: 64
    depth: 2
    num_heads: 4
  streams:
    $name:
      tokenizer:
        name: ${name}_patch
        length: 64
        patch_len: 8
      masker:
        name: random
        ratio: 0.5
      target:
        name: content
        normalize: true
      loss:
        name: mse
      decoder:
        name: mae
        embed_dim: 32
        depth: 1
        num_heads: 4
data:
  dataset:
    name: ${name}_waves
    num_samples: 1024
    length: 64
    num_classes: 4
  batch_size: 64
optim:
  lr: 1.0e-3
  weight_decay: 0.05
schedule:
  epochs: 10
  warmup_epochs: 1
train:
  log_every: 10
  loggers: [tensorboard]
eval:
  protocols: [linear, knn]
  linear_epochs: 50
  knn_k: 10
'''

CONFTEST = '''\
"""Make mmim_$name importable from the checkout even when the package is not installed."""

import importlib.util
import sys
from pathlib import Path

if importlib.util.find_spec("mmim_$name") is None:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
'''

TESTS = '''\
"""The $name plugin's own tests: its components built directly, its recipe trained a step, and,
when the package is installed, mmim's conformance kit on every component."""

from __future__ import annotations

from importlib import metadata
from pathlib import Path

import pytest
import torch
from mmim.config import load_recipe
from mmim.model import build_model

from mmim_$name.datasets import Waves
from mmim_$name.tokenizer import PatchTokenizer

RECIPE = Path(__file__).resolve().parents[1] / "mmim_$name" / "recipes" / "mae_$name.yaml"


def test_tokenizer_shapes_and_round_trip():
    tok = PatchTokenizer(embed_dim=16, length=32, patch_len=4)
    x = tok.example_input(3, torch.Generator().manual_seed(0))
    out = tok(x)
    assert out.embeddings.shape == (3, 8, 16) and out.content.shape == (3, 8, tok.content_dim)
    assert out.layout.num_tokens == 8 and tok.position_embedding(6)(out.layout).shape == (1, 8, 6)
    assert torch.equal(tok.content_to_raw(out.content, out.layout), x)
    with pytest.raises(ValueError, match="expects signals"):
        tok(torch.randn(3, 30))


def test_dataset_is_deterministic_and_labelled():
    a, b = Waves("train", augment=False, num_samples=16), Waves("train", augment=False, num_samples=16)
    assert torch.equal(a[5]["$name"], b[5]["$name"]) and a[5]["label"] == 5 % a.num_classes
    assert not torch.equal(a[5]["$name"], Waves("test", augment=False, num_samples=16)[5]["$name"])
    assert a[0]["$name"].shape == (a.length,)


def test_recipe_trains_a_step():
    recipe = load_recipe(RECIPE)
    torch.manual_seed(0)
    model = build_model(recipe.model)
    ds = Waves("train", augment=True, **{k: v for k, v in recipe.data.dataset.items() if k != "name"})
    batch = {k: torch.stack([torch.as_tensor(ds[i][k]) for i in range(8)]) for k in ("$name", "label")}
    out = model(batch, generator=torch.Generator().manual_seed(0))
    assert torch.isfinite(out.loss)
    out.loss.backward()
    assert model.streams["$name"].tokenizer.proj.weight.grad.abs().sum() > 0
    assert model.features(batch).shape == (8, recipe.model.encoder.embed_dim)


def _installed() -> bool:
    try:
        return any(ep.name == "$name" for ep in metadata.distribution("mmim-$dist").entry_points)
    except metadata.PackageNotFoundError:
        return False


@pytest.mark.skipif(not _installed(), reason="the package is not installed (pip install -e .)")
def test_conformance_kit():
    from mmim.testing.plugin_checks import check_plugin

    results = check_plugin("$name")
    failed = [f"{r.kind} {r.name}: {r.message}" for r in results if r.status == "fail"]
    assert results and not failed, failed
'''

README = '''\
# mmim-$dist

An [mmim](https://pypi.org/project/mmim/) plugin adding the `$name` modality, scaffolded by
`mmim new-plugin $name`.

```bash
pip install -e .                 # offline: add --no-deps --no-build-isolation
mmim plugins                     # "$name 0.1.0 [mmim-$dist] ok" with its components
mmim check-plugin $name          # mmim's conformance kit on every component
mmim train --modality $name      # the default recipe: a few seconds on a CPU, then the probes
pytest                           # the package's own tests
```

| file | what to change |
|---|---|
| `mmim_$name/__init__.py` | the Plugin: components by name, recipes, extras |
| `mmim_$name/tokenizer.py` | `${name}_patch`: your raw input -> tokens (`content`, `layout`, positions) |
| `mmim_$name/datasets.py` | `${name}_waves`: generated data; point a dataset at real files |
| `mmim_$name/recipes/mae_$name.yaml` | the default recipe |
| `tests/` | the package's own tests |

mmim's `docs/plugins.md` describes every plug point and its contract.
'''

FILES = {
    "pyproject.toml": PYPROJECT,
    "README.md": README,
    "mmim_{name}/__init__.py": INIT,
    "mmim_{name}/tokenizer.py": TOKENIZER,
    "mmim_{name}/datasets.py": DATASETS,
    "mmim_{name}/visualize.py": VISUALIZE,
    "mmim_{name}/recipes/mae_{name}.yaml": RECIPE,
    "tests/conftest.py": CONFTEST,
    "tests/test_{name}_plugin.py": TESTS,
}


def check_name(name: str) -> None:
    """A plugin name becomes a module (``mmim_NAME``), a component prefix and a modality."""
    if not NAME.fullmatch(name) or keyword.iskeyword(name):
        raise ValueError(f"plugin name {name!r}: use lower-case letters, digits and _, starting with a letter "
                         "(it names the module mmim_NAME and the modality)")
    from mmim import registry

    taken = {info.name: info.distribution for info in registry.discover()}
    if name in taken:
        raise ValueError(f"plugin name {name!r} is taken: the installed distribution {taken[name]} registers it")
    modalities = {p.modality for p in registry.plugins().values() if p.modality}
    if name in modalities:
        raise ValueError(f"modality {name!r} is served by an installed plugin already")


def new_plugin(name: str, out_dir: str | Path) -> list[Path]:
    """Write the package for plugin ``name`` into ``out_dir`` (absent or empty); return the files."""
    check_name(name)
    out = Path(out_dir)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise FileExistsError(f"{out} exists and is not an empty folder; give a new folder for the package")
    values = {"name": name, "dist": name.replace("_", "-")}
    written = []
    for rel, text in FILES.items():
        path = out / rel.format(name=name)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(Template(text).substitute(values))
        written.append(path)
    return written

"""Evaluation from shards (eval.train_shards / eval.test_shards): the same features and probe
figures as from the files the shards were packed from, and clear errors for broken shards."""

from __future__ import annotations

import copy
import io
import tarfile

import pytest
import torch

from mmim.config.recipe import recipe_from_dict
from mmim.data.errors import DataError
from mmim.data.pack import pack
from mmim.eval.features import extract_features
from mmim.eval.protocols import eval_datasets, evaluate_with_baseline
from mmim.model import build_model


def _recipe(tiny_recipe_dict, **eval_options):
    data = copy.deepcopy(tiny_recipe_dict)
    data["eval"].update(eval_options)
    return recipe_from_dict(data)


def _pack_splits(recipe, root):
    spec = dict(recipe.eval.dataset or recipe.data.dataset)
    for split in (recipe.eval.train_split, recipe.eval.test_split):
        pack(spec, root / split, split=split, samples_per_shard=37, progress=False)
    return root / recipe.eval.train_split, root / recipe.eval.test_split


def test_probes_from_shards_equal_probes_from_files(tiny_recipe_dict, tmp_path):
    files = _recipe(tiny_recipe_dict)
    train_dir, test_dir = _pack_splits(files, tmp_path)
    shards = _recipe(tiny_recipe_dict, train_shards=str(train_dir), test_shards=str(test_dir))
    torch.manual_seed(files.seed)
    model = build_model(files.model).eval()
    for a, b in zip(eval_datasets(files), eval_datasets(shards)):
        assert len(a) == len(b)
        fa, la = extract_features(model, a, batch_size=16)
        fb, lb = extract_features(model, b, batch_size=16)
        assert torch.equal(fa, fb) and torch.equal(la, lb)
    assert evaluate_with_baseline(model, files) == evaluate_with_baseline(model, shards)


def _rewrite(shard, change) -> str:
    """Rewrite ``shard`` with ``change(name, data) -> data | None`` (None drops the member); the
    first sample's key."""
    with tarfile.open(shard) as tar:
        members = [(m, tar.extractfile(m).read()) for m in tar.getmembers()]
    with tarfile.open(shard, "w") as tar:
        for member, data in members:
            data = change(member.name, data)
            if data is not None:
                member.size = len(data)
                tar.addfile(member, io.BytesIO(data))
    return members[0][0].name.split(".")[0]


def test_a_cut_eval_shard_is_an_error(tiny_recipe_dict, tmp_path):
    recipe = _recipe(tiny_recipe_dict)
    train_dir, test_dir = _pack_splits(recipe, tmp_path)
    shard = sorted(test_dir.glob("*.tar"))[-1]
    with tarfile.open(shard) as tar:
        last = tar.getnames()[-1].split(".")[0]
    _rewrite(shard, lambda name, data: None if name.startswith(last) else data)  # one sample fewer than the index
    recipe = _recipe(tiny_recipe_dict, train_shards=str(train_dir), test_shards=str(test_dir))
    model = build_model(recipe.model).eval()
    with pytest.raises(DataError, match="eval shards gave .* samples, their index lists"):
        extract_features(model, eval_datasets(recipe)[1], batch_size=16)


def test_a_corrupt_eval_member_is_an_error_naming_shard_and_member(tiny_recipe_dict, tmp_path):
    from mmim.data.errors import CorruptSampleError

    recipe = _recipe(tiny_recipe_dict)
    train_dir, test_dir = _pack_splits(recipe, tmp_path)
    shard = sorted(test_dir.glob("*.tar"))[0]
    key = _rewrite(shard, lambda name, data: b"not an image" if name.endswith(".png") and
                   name.startswith("000000001") else data)
    assert key == "000000000"
    recipe = _recipe(tiny_recipe_dict, train_shards=str(train_dir), test_shards=str(test_dir))
    model = build_model(recipe.model).eval()
    with pytest.raises(CorruptSampleError, match=rf"{shard.name} \(000000001\.json, 000000001\.png\): cannot decode") as err:
        extract_features(model, eval_datasets(recipe)[1], batch_size=16)
    assert "the .png member" in str(err.value) and "mmim-" not in str(err.value)  # not the temporary file

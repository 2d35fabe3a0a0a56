"""The benchmark scripts' own logic on CPU: the Point-MAE stand-ins, the step-rate source of the
loader benchmark, and the worker environment (no timing, no official code)."""

from __future__ import annotations

import importlib.util
import json
import os
import sys
from pathlib import Path

import pytest
import torch

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"


def _load(name: str):  # noqa: ANN202
    spec = importlib.util.spec_from_file_location(f"_bench_{name}", BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses with postponed annotations look their module up
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def vs():  # noqa: ANN201
    return _load("bench_vs_official")


def test_fps_stand_in_is_farthest_point_sampling(vs) -> None:  # noqa: ANN001
    g = torch.Generator().manual_seed(0)
    xyz = torch.rand(2, 50, 3, generator=g)
    idx = vs._fps(xyz, 8).long()
    assert idx.shape == (2, 8) and vs._fps(xyz, 8).dtype == torch.int32
    for b in range(2):  # brute force: each next index maximises the distance to those chosen
        chosen = [0]
        for _ in range(7):
            d = torch.cdist(xyz[b], xyz[b, chosen]).min(dim=1).values
            chosen.append(int(d.argmax()))
        assert idx[b].tolist() == chosen
    gathered = vs._gather(xyz.transpose(1, 2), idx.int())
    assert torch.equal(gathered.transpose(1, 2), xyz[torch.arange(2)[:, None], idx])


def test_knn_and_chamfer_stand_ins_match_brute_force(vs) -> None:  # noqa: ANN001
    g = torch.Generator().manual_seed(1)
    ref, query = torch.rand(2, 40, 3, generator=g), torch.rand(2, 5, 3, generator=g)
    dist, idx = vs._KNN(k=4, transpose_mode=True)(ref, query)
    d = ((query[:, :, None] - ref[:, None]) ** 2).sum(-1).sqrt()
    assert torch.equal(idx, d.argsort(-1)[..., :4])
    assert torch.allclose(dist, d.sort(-1).values[..., :4], atol=1e-5)
    x, y = torch.rand(3, 7, 3, generator=g), torch.rand(3, 9, 3, generator=g)
    sq = ((x[:, :, None] - y[:, None]) ** 2).sum(-1)
    l2 = sq.min(2).values.mean() + sq.min(1).values.mean()
    l1 = (sq.min(2).values.sqrt().mean() + sq.min(1).values.sqrt().mean()) / 2
    assert torch.allclose(vs._Chamfer()(x, y), l2, atol=1e-5)
    assert torch.allclose(vs._Chamfer(l1=True)(x, y), l1, atol=1e-5)


def test_fake_module_registers_parents(vs, monkeypatch) -> None:  # noqa: ANN001
    for name in ("_mmim_fake_pkg", "_mmim_fake_pkg.sub"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    vs._fake_module("_mmim_fake_pkg.sub", value=3)
    from _mmim_fake_pkg.sub import value  # noqa: PLC0415

    assert value == 3 and sys.modules["_mmim_fake_pkg"].sub.value == 3
    for name in ("_mmim_fake_pkg", "_mmim_fake_pkg.sub"):
        sys.modules.pop(name, None)


@pytest.mark.parametrize("policy", ["PASSIVE", ""])
def test_worker_environment_sets_threads_and_wait_policy(vs, monkeypatch, policy) -> None:  # noqa: ANN001
    for key in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OMP_WAIT_POLICY"):
        monkeypatch.setenv(key, "unset-marker")
    args = vs.main.__globals__["argparse"].Namespace(threads=3, omp_wait_policy=policy)
    vs._worker_env(args)
    assert os.environ["OMP_NUM_THREADS"] == "3" and os.environ["MKL_NUM_THREADS"] == "3"
    assert os.environ["OMP_WAIT_POLICY"] == (policy or "unset-marker")


def test_official_path_required_unless_mmim_only(vs, tmp_path) -> None:  # noqa: ANN001
    with pytest.raises(SystemExit):
        vs.main(["--official", str(tmp_path / "missing")])


def test_loader_step_rates_read_gpu_results(tmp_path) -> None:  # noqa: ANN001
    loaders = _load("bench_loaders")
    rates, source = loaders.step_rates(None)
    assert rates == loaders.STEP_RATES and "docs/scaling.md" in source
    run = loaders.GPU_RUNS["video"]
    for kind, rate in (("eager", 100.0), ("compiled", 150.0)):
        (tmp_path / f"{run}_{kind}.json").write_text(json.dumps({"sides": {"mmim": {"samples_per_s": rate}}}))
    rates, source = loaders.step_rates(str(tmp_path))
    assert rates["video"] == 150.0 and str(tmp_path) in source
    assert rates["image"] == loaders.STEP_RATES["image"]


def test_flop_count_includes_cpu_fused_attention(vs) -> None:  # noqa: ANN001
    q = torch.randn(2, 3, 16, 8)
    fused = vs._count_flops(lambda x: torch.nn.functional.scaled_dot_product_attention(x, x, x), q, None)
    by_hand = vs._count_flops(lambda x: torch.softmax(x @ x.transpose(-1, -2), -1) @ x, q, None)
    assert fused == by_hand == 2 * (2 * 2 * 3 * 16 * 16 * 8)


@pytest.mark.parametrize("choice", ["on", "off"])
def test_fused_attention_switch_reaches_the_measured_model(tmp_path, choice) -> None:  # noqa: ANN001
    """``--fused-attention`` sets the attention of the timed model (and shows in the results)."""
    import subprocess

    out = tmp_path / "r.json"
    subprocess.run([sys.executable, str(BENCH / "bench_vs_official.py"), "--sides", "mmim",
                    "--model", "pointmae", "--batch", "2", "--rounds", "1", "--steps", "1", "--warmup", "0",
                    "--threads", "1", "--fused-attention", choice, "--json", str(out)],
                   check=True, capture_output=True, env=dict(os.environ, OMP_NUM_THREADS="1"))
    attention = json.loads(out.read_text())["sides"]["mmim"]["attention"]
    assert attention.startswith("fused in " if choice == "on" else "plain in ") and " 0 timm" not in attention


def _importable(formats, dist: str) -> bool:  # noqa: ANN001
    if formats.installed_version(dist) is None:
        return False
    try:
        formats.import_library(dist)
    except ImportError:
        return False
    return True


def test_shard_formats_reads_every_sample_of_each_installed_format(capsys) -> None:  # noqa: ANN001
    formats = _load("bench_shard_formats")
    formats.main(["--samples", "40", "--rounds", "1", "--json"])
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["dataset"]["name"] == "fashion_mnist" and result["samples"] == 40
    rows = {(r["library"], r["reader"]): r for r in result["rows"]}
    for reader in ("mmim iter_samples", "webdataset.WebDataset"):
        row = rows[("webdataset", reader)]
        assert row["status"] == "ok" and row["samples"] == 40 and row["rate"] > 0 and len(row["rates"]) == 1
    member_bytes = rows[("webdataset", "mmim iter_samples")]["member_bytes"]
    assert member_bytes > 40 * 100 and rows[("webdataset", "webdataset.WebDataset")]["member_bytes"] == member_bytes
    assert result["libraries"]["webdataset"]["tar"] == "yes"
    for dist in ("mosaicml-streaming", "litdata"):
        mine = [r for r in result["rows"] if r["library"] == dist]
        if _importable(formats, dist):
            assert mine and all(r["status"] == "ok" and r["samples"] == 40 and r["rate"] > 0 and
                                r["member_bytes"] == member_bytes for r in mine), mine
            assert result["libraries"][dist]["tar"].startswith("no")
        else:
            assert [r["status"] for r in mine] == ["not installed"]


def test_shard_formats_reports_a_missing_library_and_a_miscount(capsys, monkeypatch) -> None:  # noqa: ANN001
    formats = _load("bench_shard_formats")
    real = formats.installed_version
    monkeypatch.setattr(formats, "installed_version", lambda dist: real(dist) if dist == "webdataset" else None)
    monkeypatch.setattr(formats, "read_webdataset", lambda urls: (39, 0))  # a reader that loses a sample
    formats.main(["--samples", "40", "--rounds", "1", "--json"])
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    status = {(r["library"], r["reader"]): r["status"] for r in result["rows"]}
    assert status == {("webdataset", "mmim iter_samples"): "ok",
                      ("webdataset", "webdataset.WebDataset"): "MISCOUNT: 39 of 40 samples, 0 of "
                      f"{next(r['member_bytes'] for r in result['rows'] if r['status'] == 'ok')} bytes",
                      ("mosaicml-streaming", "-"): "not installed", ("litdata", "-"): "not installed"}


@pytest.mark.parametrize("normalize", ["host", "device"])
def test_loader_bench_hands_over_what_image_normalize_says(tmp_path, normalize) -> None:  # noqa: ANN001
    loaders = _load("bench_loaders")
    batch = 4
    (row,) = loaders.measure("image", tmp_path, 3 * batch, [0], batch, 0, normalize)
    assert row["modality"] == ("image/uint8" if normalize == "device" else "image")
    assert row["dtype"] == ("uint8" if normalize == "device" else "float32") and row["samples"] == 2 * batch

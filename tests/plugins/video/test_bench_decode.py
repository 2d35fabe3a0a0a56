"""The decoding benchmark runs end to end on a tiny setting and reports every backend and loader figure."""

from __future__ import annotations

import json
import runpy
from pathlib import Path

import pytest

from mmim_video.reader import available_backends

pytest.importorskip("av")
SCRIPT = Path(__file__).resolve().parents[3] / "benchmarks" / "bench_video_decode.py"


def test_bench_video_decode_smoke(tmp_path):
    main = runpy.run_path(str(SCRIPT))["main"]
    out = tmp_path / "bench.json"
    results = main(["--videos", "2", "--frames", "40", "--size", "64", "48", "--clips", "4", "--batch", "2",
                    "--img-size", "32", "--workers", "0", "--json", str(out)])
    expected = {f"backend/{b}" for b in available_backends()} | {"loader/workers=0"}
    if "decord" in available_backends():
        expected.add("plain_decord")
    assert set(results) == expected and all(v > 0 for v in results.values())
    assert json.loads(out.read_text()) == results

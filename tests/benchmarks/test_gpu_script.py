"""benchmarks/gpu.sh's control flow with a stand-in for python's benchmark runs (no model is built)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FAKE = """#!/bin/bash
case "$1" in
  -) exec {python} "$@";;
  -m) exit 0;;
  benchmarks/bench_vs_official.py)
     echo "$*" >> "$OUT/calls.txt"
     json=$(echo "$*" | sed -E 's/.*--json ([^ ]+).*/\\1/'); batch=$(echo "$*" | sed -E 's/.*--batch ([^ ]+).*/\\1/')
     [ "$batch" = "$OOM_BATCH" ] && {{ echo "CUDA out of memory"; exit 1; }}
     echo '{{"batch": '$batch', "sides": {{"mmim": {{"samples_per_s": 10, "mfu": 0.5, "tflops": 1, "peak_mib": 1}},
       "official": {{"samples_per_s": 5, "peak_mib": 2}}}}, "ratio": 2.0, "memory_ratio": 0.5}}' > "$json"; exit 0;;
  benchmarks/bench_loaders.py) echo "$*" >> "$OUT/calls.txt"; exit 0;;
  -c) [ "$HAVE_AV" = 1 ]; exit $?;;
  benchmarks/bench_gpu_decode.py)
     echo "$*" >> "$OUT/calls.txt"
     json=$(echo "$*" | sed -E 's/.*--json ([^ ]+).*/\\1/')
     echo '{{"clips_per_s": {{"host": 10.0, "device": 40.0, "plans only": 80.0}}, "decoder": "NVDEC (torchcodec)"}}' > "$json"
     exit 0;;
esac
exit 3
"""


def _run(tmp_path: Path, **env: str) -> tuple[str, list[str]]:
    fake = tmp_path / "python"
    fake.write_text(FAKE.format(python=sys.executable))
    fake.chmod(0o755)
    out = tmp_path / "out"
    full = {**os.environ, "OUT": str(out), "PYTHON": str(fake), "SKIP_INSTALL": "1", "OFFICIAL": str(tmp_path / "off"),
            **env}
    subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu.sh")], env=full, check=True, capture_output=True, text=True)
    return (out / "summary.txt").read_text(), (out / "calls.txt").read_text().splitlines()


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_gpu_script_runs_every_measurement_and_falls_back_in_batch(tmp_path) -> None:  # noqa: ANN001
    (tmp_path / "off" / "mae").mkdir(parents=True)
    summary, calls = _run(tmp_path, OOM_BATCH="1024", DEVICE="cuda", HAVE_AV="1")
    largest = [c for c in calls if "mae_l_largest" in c]
    assert ["--batch 1024" in c for c in largest] == [True, False] and "--batch 768" in largest[1]
    assert all("--compile" in c for c in largest)
    # a present checkout is compared, a missing one runs mmim alone
    assert "--official" in next(c for c in calls if "mae_b_eager" in c)
    assert "--sides mmim" in next(c for c in calls if "pointmae_eager" in c)
    for name in ("mae_b_eager", "mae_b_compiled", "videomae_b_eager", "audiomae_b_compiled", "pointmae_compiled",
                 "videomae_b_single", "mae_l_largest_b768", "loaders"):
        assert name in summary
    assert any("bench_loaders.py" in c and "--steps-from" in c for c in calls)
    assert any("bench_gpu_decode.py" in c and "--device cuda" in c for c in calls)
    assert "video decode (NVDEC (torchcodec)): host 10.0 clips/s, device 40.0 clips/s" in summary


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_gpu_script_compile_off_and_budget(tmp_path) -> None:  # noqa: ANN001
    _, calls = _run(tmp_path, COMPILE="0", TINY="1", OOM_BATCH="none", HAVE_AV="0")
    assert calls and not any("--compile" in c for c in calls)
    assert not any("bench_gpu_decode" in c for c in calls)  # no PyAV on the machine: skipped, said in results.tsv
    assert "video_decode\tskipped" in (tmp_path / "out" / "results.tsv").read_text()
    assert any("--batch 4" in c and "mae_l_largest" in c for c in calls)  # TINY sizes
    (tmp_path / "b").mkdir()
    _, calls = _run(tmp_path / "b", BUDGET_S="-1", OOM_BATCH="none", HAVE_AV="0")
    assert [c for c in calls if "bench_vs_official" in c] == []  # every measurement skipped, the loaders still run
    tsv = (tmp_path / "b" / "out" / "results.tsv").read_text()
    assert "mae_b_eager\tskipped" in tsv

#!/usr/bin/env bash
# Every GPU measurement of issue 15 in one run (under 8 minutes on one H200), results under $OUT.
#
#   OUT=/tmp/out benchmarks/gpu.sh                      # on the GPU machine, from the repository root
#   OUT=/tmp/out DEVICE=cpu TINY=1 benchmarks/gpu.sh    # every code path on CPU, tiny batches, 2 steps
#   (COMPILE=0 skips the compiled runs, BUDGET_S=seconds after which the remaining runs are skipped, default 450)
#
# The GPU machine has torch, timm, einops, safetensors, PyYAML, Pillow and numpy but no package registry:
# the project installs with `pip install --no-deps --no-build-isolation -e .` (SKIP_INSTALL=1 skips it).
# Official checkouts are read from $OFFICIAL (default .official/, git-ignored): mae, VideoMAE, AudioMAE,
# Point-MAE; a missing one turns its comparison into an mmim-only run.
# Each measurement has its own timeout (seconds, scaled by TIMEOUT_SCALE) and a failure does not stop
# the others; the summary table (and results.tsv, one JSON per measurement) is written under $OUT.
set -u
{  # the whole script is read before it runs (an edit during a run cannot shift it)
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/mmim-gpu}
OFFICIAL=${OFFICIAL:-.official}
DEVICE=${DEVICE:-cuda}
PRECISION=${PRECISION:-bf16}
TINY=${TINY:-0}
TIMEOUT_SCALE=${TIMEOUT_SCALE:-1}
PY=${PYTHON:-python}
mkdir -p "$OUT"
: > "$OUT/results.tsv"
START=$(date +%s)

if [ "${SKIP_INSTALL:-0}" != 1 ]; then
    $PY -m pip install -q --no-deps --no-build-isolation -e . > "$OUT/install.log" 2>&1 \
        || echo "pip install failed (see $OUT/install.log); using the tree as it is"
fi
$PY - > "$OUT/env.txt" 2>&1 <<'PYEOF'
import torch, platform
print("python", platform.python_version(), "torch", torch.__version__)
print("device", torch.cuda.get_device_name() if torch.cuda.is_available() else "CPU")
try:
    from mmim.timm_compat import import_timm; print("timm", import_timm().__version__)
except Exception as e:
    print("timm import failed:", e)
PYEOF
cat "$OUT/env.txt"

if [ "$TINY" = 1 ]; then
    STEPS=${STEPS:-2}; ROUNDS=${ROUNDS:-1}; WARMUP=${WARMUP:-1}
    B_MAE=2; B_MAEL=1; B_VID=1; B_AUD=1; B_PTS=2; LARGE_BATCHES=${LARGE_BATCHES:-"4 2"}; LOADER_N=8; LOADER_WORKERS="0 1"
else
    STEPS=${STEPS:-5}; ROUNDS=${ROUNDS:-3}; WARMUP=${WARMUP:-3}
    B_MAE=256; B_MAEL=256; B_VID=32; B_AUD=64; B_PTS=128; LARGE_BATCHES=${LARGE_BATCHES:-"1024 768 512"}; LOADER_N=64; LOADER_WORKERS="0 4"
fi

COMPILE=${COMPILE:-1}  # 0: skip the --compile runs (CPU tests of the other paths; inductor on CPU takes minutes)

# run NAME TIMEOUT_S ARGS...: one bench_vs_official.py measurement, its log and JSON under $OUT
run() {
    local name=$1 limit=$2; shift 2
    local t0=$(date +%s) rc
    case " $* " in *" --compile "*) [ "$COMPILE" = 1 ] || { echo "=== $name: skipped (COMPILE=0)"
        printf '%s\tskipped\t0\n' "$name" >> "$OUT/results.tsv"; return 1; } ;; esac
    if [ $(( t0 - START )) -gt "${BUDGET_S:-450}" ]; then  # keep the whole run under 8 minutes
        echo "=== $name: skipped (budget of ${BUDGET_S:-450} s spent)"; printf '%s\tskipped\t0\n' "$name" >> "$OUT/results.tsv"
        return 1
    fi
    echo "=== $name: bench_vs_official.py $*"
    timeout -k 10 $((limit * TIMEOUT_SCALE)) $PY benchmarks/bench_vs_official.py --device "$DEVICE" \
        --precision "$PRECISION" --steps "$STEPS" --rounds "$ROUNDS" --warmup "$WARMUP" \
        --json "$OUT/$name.json" "$@" > "$OUT/$name.log" 2>&1
    rc=$?
    grep -E "samples/s \(|^ratio|^round" "$OUT/$name.log" | tail -6
    [ $rc -ne 0 ] && tail -5 "$OUT/$name.log"
    printf '%s\t%s\t%s\n' "$name" "$rc" "$(( $(date +%s) - t0 ))" >> "$OUT/results.tsv"
    return $rc
}

# official NAME: the checkout's path, or nothing (then the comparison runs mmim alone)
official() { [ -d "$OFFICIAL/$1" ] && echo "--official $OFFICIAL/$1" || echo "--sides mmim"; }

# MAE ViT-B/16 and ViT-L/16: mmim eager against the official code (as shipped, eager) in one run; mmim compiled
# alone (its ratio in the summary is against the official rate of the eager run)
run mae_b_eager 90 --model mae_vit_base_patch16 --batch $B_MAE $(official mae)
run mae_b_compiled 150 --model mae_vit_base_patch16 --batch $B_MAE --sides mmim --compile
run mae_l_eager 100 --model mae_vit_large_patch16 --batch $B_MAEL $(official mae)
# ViT-L compiled (its MFU target) at the largest batch that fits: the first of LARGE_BATCHES that runs
for b in $LARGE_BATCHES; do
    run "mae_l_largest_b$b" 150 --model mae_vit_large_patch16 --batch "$b" --sides mmim \
        $([ "$COMPILE" = 1 ] && echo --compile) && break
done
# VideoMAE ViT-B, Audio-MAE ViT-B, Point-MAE
run videomae_b_eager 90 --model pretrain_videomae_base_patch16_224 --batch $B_VID $(official VideoMAE)
run videomae_b_compiled 150 --model pretrain_videomae_base_patch16_224 --batch $B_VID --sides mmim --compile
run audiomae_b_eager 90 --model audiomae_vit_base_patch16 --batch $B_AUD $(official AudioMAE)
run audiomae_b_compiled 150 --model audiomae_vit_base_patch16 --batch $B_AUD --sides mmim --compile
run pointmae_eager 90 --model pointmae --batch $B_PTS $(official Point-MAE)
run pointmae_compiled 150 --model pointmae --batch $B_PTS --sides mmim --compile
# cross-check of the alternating schedule: each side alone in a fresh process
run videomae_b_single 90 --model pretrain_videomae_base_patch16_224 --batch $B_VID $(official VideoMAE) --single

# the input pipeline against the step rates just measured
echo "=== loaders"
t0=$(date +%s)
timeout -k 10 $((120 * TIMEOUT_SCALE)) $PY benchmarks/bench_loaders.py --samples $LOADER_N --workers $LOADER_WORKERS --cores "$(nproc)" \
    --steps-from "$OUT" --json "$OUT/loaders.json" > "$OUT/loaders.log" 2>&1
rc=$?
tail -12 "$OUT/loaders.log"
printf '%s\t%s\t%s\n' loaders "$rc" "$(( $(date +%s) - t0 ))" >> "$OUT/results.tsv"

# video decoded on the host vs on the device (decode: device; NVDEC when torchcodec imports): needs PyAV, which
# the GPU machine lacks unless GPU_DEPS names a carried `pip install --target` folder holding av (and torchcodec)
echo "=== video_decode"
t0=$(date +%s)
if [ -n "${GPU_DEPS:-}" ] && [ -d "${GPU_DEPS}" ]; then export PYTHONPATH="${GPU_DEPS}:${PYTHONPATH:-}"; fi
if $PY -c "import av" > /dev/null 2>&1; then
    if [ "$TINY" = 1 ]; then DEC_ARGS="--clips 2 --seconds 2 --batch 2 --batches 1"; else DEC_ARGS="--clips 8 --batches 4"; fi
    timeout -k 10 $((120 * TIMEOUT_SCALE)) $PY benchmarks/bench_gpu_decode.py --device "$DEVICE" $DEC_ARGS \
        --data-dir "$OUT/videos" --json "$OUT/video_decode.json" > "$OUT/video_decode.log" 2>&1
    rc=$?
    tail -4 "$OUT/video_decode.log"
else
    echo "video_decode: skipped (no PyAV here: set GPU_DEPS to a carried pip --target folder with av)"; rc=skipped
fi
printf '%s\t%s\t%s\n' video_decode "$rc" "$(( $(date +%s) - t0 ))" >> "$OUT/results.tsv"

$PY - "$OUT" > "$OUT/summary.txt" <<'PYEOF'
import json, sys
from pathlib import Path
out = Path(sys.argv[1])
print(f"{'measurement':<24}{'rc':>4}{'s':>5}  {'batch':>5} {'mmim/s':>9} {'MFU/TFLOPs':>11} {'off/s':>9} {'ratio':>7} {'mem':>6}")
for line in (out / "results.tsv").read_text().splitlines():
    name, rc, secs = line.split("\t")
    f = out / f"{name}.json"
    if name in ("loaders", "video_decode") or not f.is_file():
        print(f"{name:<24}{rc:>4}{secs:>5}")
        continue
    r = json.loads(f.read_text())
    m, o = r["sides"].get("mmim", {}), r["sides"].get("official", {})
    eager = out / f"{name.replace('_compiled', '_eager')}.json"
    if not o and eager.is_file():  # compiled runs: against the official side of the eager run
        e = json.loads(eager.read_text())
        o = e["sides"].get("official", {})
        if o and m:
            r["ratio"] = m["samples_per_s"] / o["samples_per_s"]
            r["memory_ratio"] = m["peak_mib"] / o["peak_mib"]
    util = f"{100 * m['mfu']:.1f}%" if m.get("mfu") is not None else (f"{m['tflops']:.3g}TF" if m else "")
    print(f"{name:<24}{rc:>4}{secs:>5}  {r['batch']:>5} {m.get('samples_per_s', float('nan')):>9.1f} {util:>11} "
          f"{o.get('samples_per_s', float('nan')):>9.1f} {r.get('ratio', float('nan')):>7.2f} "
          f"{r.get('memory_ratio', float('nan')):>6.2f}")
PYEOF
$PY - "$OUT" >> "$OUT/summary.txt" <<'PYEOF'
import json, sys
from pathlib import Path
f = Path(sys.argv[1]) / "loaders.json"
if f.is_file():
    d = json.loads(f.read_text())
    for r in d["rows"]:
        print(f"loader {r['modality']:<11} workers {r['workers']:>2}: {r['samples_per_s']:8.1f} samples/s "
              f"({r['per_core']:.1f} per core) vs step {r['step_rate']:.0f}/s: {r['verdict']}")
    for m, err in d["failures"].items():
        print(f"loader {m}: FAILED {err}")
f = Path(sys.argv[1]) / "video_decode.json"
if f.is_file():
    d = json.loads(f.read_text())
    print(f"video decode ({d['decoder']}): " + ", ".join(f"{k} {v:.1f} clips/s" for k, v in d["clips_per_s"].items()))
PYEOF
cat "$OUT/summary.txt"
echo "total $(( $(date +%s) - START )) s; $(sed -n 2p "$OUT/env.txt")"
exit 0
}

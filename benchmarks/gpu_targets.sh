#!/usr/bin/env bash
# The GPU layer benchmark in one go: the standard layers at training batches (ResNet-50, MobileNet
# depthwise and VGG-16 at N=32, pools at N=64), every CUDA algorithm of fastconv and algo="auto"
# beside PyTorch on cuDNN (TF32 off), in float32 and then float16 storage; each run verified against the
# oracle, with the device-to-device copy bandwidth and the device's fp32 FMA peak / memory bandwidth
# (from its properties) in the JSON; then one Markdown file with the per-table summary of both runs, checked
# against the goals in benchmarks/targets.json.
#
#   benchmarks/gpu_targets.sh OUTDIR            (default OUTDIR: benchmarks/results/gpu-<date>)
#   DTYPES="float32" benchmarks/gpu_targets.sh OUTDIR                     one dtype only
#
# The layer tables are the ones shipped with fastconv (FASTCONV_SHAPES=DIR reads others). Run from the
# repository root. Writes OUTDIR/targets-<dtype>.json/.png/.md (raw report, plot, summary), bench-<dtype>.log
# (table), targets.md (both runs) and nvidia-smi.txt. Exit status: non-zero when a fastconv result failed
# verification in either run (both runs still happen).
set -u
OUTDIR=${1:-benchmarks/results/gpu-$(date -u +%F)}
PY=${PYTHON:-python3}
mkdir -p "$OUTDIR"
nvidia-smi > "$OUTDIR/nvidia-smi.txt" 2>&1 || true
rc=0
jsons=()
for dt in ${DTYPES:-float32 float16}; do
    json="$OUTDIR/targets-$dt.json"
    $PY -m fastconv.cli bench --suite layers --table-batch resnet50=32,mobilenet_v1_dw=32,vgg16=32,pools=64 --targets benchmarks/targets.json \
        --device gpu --algo all --dtype "$dt" --json "$json" \
        --plot "$OUTDIR/targets-$dt.png" --markdown "$OUTDIR/targets-$dt.md" > "$OUTDIR/bench-$dt.log" 2>&1 || rc=1
    tail -n 40 "$OUTDIR/bench-$dt.log"
    [ -f "$json" ] && jsons+=("$json")
done
[ ${#jsons[@]} -gt 0 ] && $PY -m fastconv.cli summary "${jsons[@]}" --targets benchmarks/targets.json \
    --markdown "$OUTDIR/targets.md" > /dev/null
exit $rc

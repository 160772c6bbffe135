#!/usr/bin/env bash
# gpu_validate.sh -- validate fastconv's CUDA kernels on a GPU machine, in one command.
#
#   tools/gpu_validate.sh [OUTDIR]        (default OUTDIR: benchmarks/results)
#
# Needs: an NVIDIA GPU, CuPy (fastconv[cuda12] or [cuda13]) and fastconv installed in the Python it runs
# ($PYTHON, else .venv/bin/python, else python); compute-sanitizer on PATH or under $CUDA_HOME/bin
# (the sanitizer steps are reported as skipped without it). Run from anywhere; it cds to the repository.
#
# Steps (raw output of each in OUTDIR/gpu_validate_<step>.txt, a summary in OUTDIR/gpu_validate_summary.txt):
#   env        nvidia-smi, versions, fastconv.backends()
#   tests      the CUDA test files with backend "cuda" required (FASTCONV_REQUIRE_GPU=1: a missing GPU
#              fails instead of skipping), plus the emulator and the all-backend matrix, junit XML too
#   startup    CuPy compile cost: first call in a fresh process with an empty kernel cache, then again
#              in a second process (templated name_expressions have missed CuPy's disk cache before)
#   memcheck   compute-sanitizer memcheck over a small selection, CuPy's memory pool off so every
#              buffer has its own bounds
#   racecheck  compute-sanitizer racecheck over the shared-memory kernels (direct v2, GEMM v2)
#   initcheck  compute-sanitizer initcheck over a small selection
#   *_v2       the same three sanitizers over the implicit-GEMM, depthwise and pool-v2 kernels
# Time limits per step (30+240+70+70+80+50+90+120+60 s) cap the whole run at about 13.5 minutes. Where one
# command may run 10 minutes, split it: STEPS="env tests startup" tools/gpu_validate.sh OUT1, then
# STEPS="memcheck racecheck initcheck memcheck_v2 racecheck_v2 initcheck_v2" tools/gpu_validate.sh OUT2
# (STEPS, a space-separated list of step names, runs only those). Exit status: 0 when every step
# that ran passed.
set -u

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO" || exit 2
OUT="${1:-benchmarks/results}"
mkdir -p "$OUT" || exit 2
OUT="$(cd "$OUT" && pwd)"

if [ -n "${PYTHON:-}" ]; then PY="$PYTHON"
elif [ -x "$REPO/.venv/bin/python" ]; then PY="$REPO/.venv/bin/python"
else PY="$(command -v python3 || command -v python)"; fi

SAN="$(command -v compute-sanitizer || true)"
for d in "${CUDA_HOME:-}" "${CUDA_PATH:-}" /usr/local/cuda; do
  if [ -z "$SAN" ] && [ -n "$d" ] && [ -x "$d/bin/compute-sanitizer" ]; then SAN="$d/bin/compute-sanitizer"; fi
done

SUMMARY="$OUT/gpu_validate_summary.txt"
: > "$SUMMARY"
FAILED=0
note() { echo "$*" | tee -a "$SUMMARY"; }

# step NAME LIMIT_SECONDS COMMAND... : run with a time limit, raw output to OUT/gpu_validate_NAME.txt
step() {
  local name="$1" limit="$2"; shift 2
  if [ -n "${STEPS:-}" ] && [[ " $STEPS " != *" $name "* ]]; then return 0; fi
  local log="$OUT/gpu_validate_${name}.txt" t0 rc
  t0=$(date +%s)
  echo "== $name: $*" > "$log"
  timeout --signal=TERM --kill-after=10 "$limit" "$@" >> "$log" 2>&1
  rc=$?
  [ $rc -ne 0 ] && FAILED=1
  note "$(printf '%-10s rc=%-3s %4ss  %s' "$name" "$rc" "$(( $(date +%s) - t0 ))" "$log")$([ $rc -eq 124 ] && echo '  (TIMED OUT)')"
  tail -n 3 "$log" | sed 's/^/             /' | tee -a "$SUMMARY"
}

note "fastconv gpu_validate $(date -u +%Y-%m-%dT%H:%M:%SZ)  commit $(git rev-parse --short HEAD 2>/dev/null || echo '?')  python $PY"

step env 30 bash -c "nvidia-smi; \"$PY\" - <<'EOF'
import platform, numpy, fastconv
print('python', platform.python_version(), 'numpy', numpy.__version__)
try:
    import cupy; print('cupy', cupy.__version__, 'cuda runtime', cupy.cuda.runtime.runtimeGetVersion(),
                       'device', cupy.cuda.runtime.getDeviceProperties(0)['name'])
except Exception as e: print('cupy: unavailable:', e)
for name, b in fastconv.backends().items(): print(name, b)
EOF"

PYTEST=("$PY" -m pytest -p no:cacheprovider -q -rfEs)

# (tests/test_kernel_compile.py is left to CI: NVRTC for five architectures takes minutes and needs no GPU)
step tests 240 env FASTCONV_REQUIRE_GPU=1 "${PYTEST[@]}" --junitxml="$OUT/gpu_validate_tests.xml" \
  tests/test_cuda_kernels.py tests/test_cuda_kernels_v2.py tests/test_cuda_implicit_gemm.py \
  tests/test_cuda_params.py tests/test_backends.py tests/test_determinism.py tests/test_edges.py

CACHE_PROBE="$(mktemp -d)"
step startup 70 env CUPY_CACHE_DIR="$CACHE_PROBE" bash -c "for run in cold warm; do \"$PY\" - \"\$run\" <<'EOF'
import sys, time
import numpy as np, cupy, fastconv
x = cupy.asarray(np.random.rand(2, 8, 16, 16).astype(np.float32))
w = cupy.asarray(np.random.rand(8, 8, 3, 3).astype(np.float32))
wd = cupy.asarray(np.random.rand(8, 1, 3, 3).astype(np.float32))
for what, fn in [('conv direct', lambda: fastconv.conv2d(x, w, padding=1, algo='direct')),
                 ('conv im2col', lambda: fastconv.conv2d(x, w, padding=1, algo='im2col')),
                 ('conv igemm', lambda: fastconv.conv2d(x, w, padding=1, algo='implicit_gemm')),
                 ('conv auto', lambda: fastconv.conv2d(x, w, padding=1)),
                 ('depthwise', lambda: fastconv.conv2d(x, wd, padding=1, groups=8, algo='depthwise')),
                 ('max_pool2d', lambda: fastconv.max_pool2d(x, 2))]:
    t = time.perf_counter(); fn(); cupy.cuda.Device().synchronize(); first = time.perf_counter() - t
    t = time.perf_counter(); fn(); cupy.cuda.Device().synchronize(); again = time.perf_counter() - t
    print(f'{sys.argv[1]:5s} process: {what:12s} first call {first*1e3:8.1f} ms, second call {again*1e3:6.2f} ms')
EOF
done"
rm -rf "$CACHE_PROBE"

# Small, focused selections for the sanitizers (backend "cuda" only; every kernel family and dtype once).
SEL_ALL='not emu and ((conv_versions and (basic or strided) and float32) or (conv_versions and multi_tile and float16) or (pool_matches and (max_k3s2p1_idx or avg_exclude_pad_ceil or avg_divisor_override or adaptive_max or adaptive_avg_1d or max_1d) and float32) or (int64 and float64 and (direct or im2col or max_ceil)))'
SEL_SHARED='not emu and conv_versions and (direct_v2 or im2col_v2) and (basic or strided or depthwise or (multi_tile and float32))'
# the newer kernels: every implicit-GEMM tile and split-K variant on two edge cases, depthwise, pools v2
SEL_V2='not emu and ((implicit_gemm_matches and (vec_store_k_tail or odd_pq_rs) and float32) or (nonfinite_weight_meeting and inf) or (depthwise_matches and float32) or (pool_v2_matches and float32))'
if [ -z "$SAN" ]; then
  note "memcheck/racecheck/initcheck: SKIPPED (compute-sanitizer not found on PATH, \$CUDA_HOME/bin or /usr/local/cuda/bin)"
  FAILED=1
else
  export FASTCONV_REQUIRE_GPU=1 FASTCONV_CUPY_NO_POOL=1
  step memcheck 70 "$SAN" --tool memcheck --error-exitcode 9 "${PYTEST[@]}" tests/test_cuda_kernels.py -k "$SEL_ALL"
  step racecheck 80 "$SAN" --tool racecheck --error-exitcode 9 "${PYTEST[@]}" tests/test_cuda_kernels.py -k "$SEL_SHARED"
  step initcheck 50 "$SAN" --tool initcheck --error-exitcode 9 "${PYTEST[@]}" tests/test_cuda_kernels.py -k "$SEL_ALL"
  V2_TESTS=(tests/test_cuda_implicit_gemm.py tests/test_cuda_kernels_v2.py)
  step memcheck_v2 90 "$SAN" --tool memcheck --error-exitcode 9 "${PYTEST[@]}" "${V2_TESTS[@]}" -k "$SEL_V2"
  step racecheck_v2 120 "$SAN" --tool racecheck --error-exitcode 9 "${PYTEST[@]}" "${V2_TESTS[@]}" -k "$SEL_V2"
  step initcheck_v2 60 "$SAN" --tool initcheck --error-exitcode 9 "${PYTEST[@]}" "${V2_TESTS[@]}" -k "$SEL_V2"
fi

note "overall: $([ $FAILED -eq 0 ] && echo PASS || echo FAIL)   (raw output under $OUT)"
exit $FAILED

#!/usr/bin/env bash
# gpu_validate.sh -- validate fastconv's CUDA kernels on a GPU machine, in one command of at most 8 minutes.
#
#   tools/gpu_validate.sh [OUTDIR]        (default OUTDIR: benchmarks/results)
#
# Needs: an NVIDIA GPU, CuPy (fastconv[cuda12] or [cuda13]) and fastconv importable by the Python it runs
# ($PYTHON, else .venv/bin/python, else python3); compute-sanitizer on PATH or under $CUDA_HOME/bin (the
# sanitizer steps are reported as skipped, and the run as failed, without it). Run from anywhere; it cds to
# the repository.
#
# Steps (raw output of each in OUTDIR/gpu_validate_<step>.txt, a summary in OUTDIR/gpu_validate_summary.txt):
#   env        nvidia-smi, versions, fastconv.backends()
#   tests      the CUDA family tests (tests/cuda) and the all-backend files on backend "cuda" only, which is
#              required (FASTCONV_REQUIRE_GPU=1: a missing GPU fails instead of skipping); junit XML too.
#              The emulator runs of the same tests, the compile checks and the index-width models need no
#              GPU: CI runs them
#   startup    CuPy compile cost: first call in a fresh process with an empty kernel cache, then again in a
#              second process
#   memcheck   compute-sanitizer memcheck over a small selection of every family (direct, im2col, implicit
#              GEMM tiles and split-K, depthwise, pools v1/v2), CuPy's memory pool off so every buffer has
#              its own bounds
#   racecheck  compute-sanitizer racecheck over the shared-memory kernels (direct v2, GEMM v2, implicit
#              GEMM, depthwise)
#   initcheck  compute-sanitizer initcheck over the memcheck selection
#   memcheck3d compute-sanitizer memcheck over one basic float32 case per 3-D and fold kernel
# The time limits per step (20+180+40+70+80+50+40 s) cap the whole run at 480 s, one 8-minute command;
# on the H100 on 2026-11-22 the same steps over the then smaller suite took 3-118 s each. STEPS (a
# space-separated list of step names) runs only those. Exit status: 0 when every step that ran passed.
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

step env 20 bash -c "nvidia-smi; \"$PY\" - <<'EOF'
import platform, numpy, fastconv
print('python', platform.python_version(), 'numpy', numpy.__version__)
try:
    import cupy; print('cupy', cupy.__version__, 'cuda runtime', cupy.cuda.runtime.runtimeGetVersion(),
                       'device', cupy.cuda.runtime.getDeviceProperties(0)['name'])
except Exception as e: print('cupy: unavailable:', e)
for name, b in fastconv.backends().items(): print(name, b)
EOF"

PYTEST=("$PY" -m pytest -p no:cacheprovider -q -rfEs)
FAMILY_TESTS=(tests/cuda/test_direct.py tests/cuda/test_im2col.py tests/cuda/test_implicit_gemm.py
              tests/cuda/test_depthwise.py tests/cuda/test_pool.py tests/cuda/test_conv_grad.py
              tests/cuda/test_pool_backward.py)

step tests 180 env FASTCONV_REQUIRE_GPU=1 "${PYTEST[@]}" --junitxml="$OUT/gpu_validate_tests.xml" \
  tests/cuda tests/test_backends.py tests/test_grad_backends.py tests/test_nd_backends.py tests/test_determinism.py tests/test_edges.py \
  --ignore=tests/cuda/test_compile.py --ignore=tests/cuda/test_index_width.py -k "not emu"

CACHE_PROBE="$(mktemp -d)"
step startup 40 env CUPY_CACHE_DIR="$CACHE_PROBE" bash -c "for run in cold warm; do \"$PY\" - \"\$run\" <<'EOF'
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

# Small, focused selections for the sanitizers (backend "cuda" only; every family, variant kind and dtype once)
SEL_ALL='not emu and ((versions_match and (basic or strided) and float32) or (versions_match and multi_tile and float16) or (int64 and float64) or (pool_matches and float32 and (max_k3s2p1_idx or avg_exclude_pad_ceil or avg_divisor_override or adaptive_max or adaptive_avg_1d or max_1d)) or (implicit_gemm_matches and (vec_store_k_tail or odd_pq_rs) and float32) or (nonfinite_weight_meeting and inf) or (depthwise_matches and float32) or (pool_v2_matches and float32) or (dgrad_matches_oracle and v2 and float32 and (basic or strided_asym or multi_tile)) or (wgrad_matches_oracle and float32 and (basic or strided_asym or multi_tile) and not k16) or (pool_gradient_matches_oracle and float32 and (max_k3s2p1 or max_ceil_dilated or avg_exclude_pad_ceil or adaptive_max_nondividing or adaptive_avg_nondividing)) or (max_unpool_matches_oracle and float32))'
FAMILY_3D_TESTS=(tests/cuda/test_conv3d.py tests/cuda/test_pool3d.py tests/cuda/test_fold.py)
SEL_3D='not emu and (((conv_matches_oracle or dgrad_matches_oracle or wgrad_matches_oracle) and basic) or (pool3d_matches_oracle and float32) or (pool3d_gradient_matches_oracle and float32) or max_unpool3d_matches_oracle or (kernels_match_oracle and float32))'
SEL_SHARED='not emu and ((versions_match and v2 and (basic or strided or depthwise or (multi_tile and float32))) or (implicit_gemm_matches and (vec_store_k_tail or odd_pq_rs) and float32) or (depthwise_matches and float32) or (dgrad_matches_oracle and v2 and float32 and (basic or multi_tile)) or (wgrad_matches_oracle and float32 and (basic or multi_tile) and not k16))'
if [ -z "$SAN" ]; then
  note "memcheck/racecheck/initcheck: SKIPPED (compute-sanitizer not found on PATH, \$CUDA_HOME/bin or /usr/local/cuda/bin)"
  FAILED=1
else
  export FASTCONV_REQUIRE_GPU=1 FASTCONV_CUPY_NO_POOL=1
  step memcheck 70 "$SAN" --tool memcheck --error-exitcode 9 "${PYTEST[@]}" "${FAMILY_TESTS[@]}" -k "$SEL_ALL"
  step racecheck 80 "$SAN" --tool racecheck --error-exitcode 9 "${PYTEST[@]}" "${FAMILY_TESTS[@]}" -k "$SEL_SHARED"
  step initcheck 50 "$SAN" --tool initcheck --error-exitcode 9 "${PYTEST[@]}" "${FAMILY_TESTS[@]}" -k "$SEL_ALL"
  # the 3-D and fold families (never run on a GPU yet): one basic case per kernel, float32
  step memcheck3d 40 "$SAN" --tool memcheck --error-exitcode 9 "${PYTEST[@]}" "${FAMILY_3D_TESTS[@]}" -k "$SEL_3D"
fi

note "overall: $([ $FAILED -eq 0 ] && echo PASS || echo FAIL)   (raw output under $OUT)"
exit $FAILED

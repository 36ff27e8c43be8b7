#!/usr/bin/env bash
# The one prepared script for a GPU session (a lent machine is minutes long: run this as the single
# command of a device call, e.g. `bash bench/gpu_check.sh` with a 540 s timeout).
#
#   1. the GPU and driver (nvidia-smi), then `pip install --no-build-isolation --no-deps .` into the
#      image's Python (CuPy is there, so CMake's AUTO also builds pyneural._cuda with nvcc);
#   2. every CUDA test with PYNEURAL_REQUIRE_GPU=1 (no emulator, no skip for a missing GPU), the
#      wgmma ones (tests/test_cuda_wgmma.py: a child process) as a step of their own;
#   3. compute-sanitizer memcheck and racecheck over the kernel tests, where the machine supports
#      it (Firecracker yes, gVisor no: see /work/.library/device/KINDS.md);
#   4. the GPU benchmarks (bench/cuda_kernels.py, bench/cuda_tc.py, bench/conv.py --device cuda --dtype bf16:
#      the tensor-core convolutions), each beside cuBLAS / cuDNN.
#
#   usage: bash bench/gpu_check.sh [--emulate] [OUTDIR]
#
# Each step writes OUTDIR/<step>.log (default OUTDIR: $OUT, else ./gpu_check_out) and has its own
# time limit, so one hang cannot eat the session; the last lines printed are the summary, one line
# per step. --emulate rehearses it without a GPU: the CUDA tests on the emulated device and each
# benchmark script once at a small size (no install, no sanitizers; its times are not GPU numbers).
set -u
REPO=$(cd "$(dirname "$0")/.." && pwd)
DRY=0
if [ "${1:-}" = "--emulate" ]; then DRY=1; shift; fi
OUT=${1:-${OUT:-$REPO/gpu_check_out}}
PY=${PYTHON:-python3}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
SUMMARY=()

step() {  # step NAME LIMIT_S command...
  local name=$1 limit=$2
  shift 2
  local t0=$SECONDS
  (cd "$OUT" && timeout "$limit" "$@") > "$OUT/$name.log" 2>&1
  local rc=$?
  local tail_line
  tail_line=$(grep -E "passed|failed|error|ERROR SUMMARY|Error" "$OUT/$name.log" | tail -1 | cut -c1-150)
  SUMMARY+=("$(printf '%-12s rc=%-3s %4ss  %s' "$name" "$rc" "$((SECONDS - t0))" "$tail_line")")
  return $rc
}

PYTEST=("$PY" -m pytest -q -p no:cacheprovider --rootdir "$REPO")
KERNEL_SUBSET="gemm_matches or conv_forward_backward or pooling or softmax_cross or batchnorm or elementwise or embedding or reductions"

if [ "$DRY" = "1" ]; then
  step cuda_tests 600 env PYNEURAL_CUDA_EMULATE="${PYNEURAL_CUDA_EMULATE:-1}" "${PYTEST[@]}" -m cuda "$REPO/tests"
  step bench_fp32 300 env PYNEURAL_CUDA_EMULATE=fast "$PY" "$REPO/bench/cuda_kernels.py" --sizes 256 --batches 2
  step bench_tc 300 env PYNEURAL_CUDA_EMULATE=fast "$PY" "$REPO/bench/cuda_tc.py" --sizes 256 --iters 1
  step bench_conv_tc 300 env PYNEURAL_CUDA_EMULATE=fast "$PY" "$REPO/bench/conv.py" --device cuda --dtype bf16 \
    --set tiny --repeat 1
  step train_bf16 300 env PYNEURAL_CUDA_EMULATE=fast "$PY" "$REPO/bench/train.py" --device cuda --amp bf16 --quick \
    --settle 0 --models mlp --batches 32 --json "$OUT/train_bf16.json"
else
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm --format=csv > "$OUT/gpu.txt" 2>&1
  cat "$OUT/gpu.txt"
  step install 240 "$PY" -m pip install --no-build-isolation --no-deps -q "$REPO"
  "$PY" -c "import pyneural.cuda as c; print('backend', c.backend_name(), 'available', c.available())" \
    >> "$OUT/gpu.txt" 2>&1
  step cuda_tests 300 env PYNEURAL_REQUIRE_GPU=1 "${PYTEST[@]}" -m cuda -x "$REPO/tests" --junitxml "$OUT/cuda_tests.xml" \
    --ignore "$REPO/tests/test_cuda_wgmma.py"
  # the wgmma cases, in a child process of their own (a hang or fault stops only them), even after a failure
  step wgmma_tests 240 env PYNEURAL_REQUIRE_GPU=1 PYNEURAL_CUDA_TEST_TIMEOUT=220 "${PYTEST[@]}" -rA \
    "$REPO/tests/test_cuda_wgmma.py"
  if command -v compute-sanitizer > /dev/null; then
    step memcheck 150 env PYNEURAL_REQUIRE_GPU=1 compute-sanitizer --tool memcheck --error-exitcode 9 \
      "${PYTEST[@]}" -x "$REPO/tests/test_cuda_kernels.py" -k "$KERNEL_SUBSET"
    step racecheck 150 env PYNEURAL_REQUIRE_GPU=1 compute-sanitizer --tool racecheck --error-exitcode 9 \
      "${PYTEST[@]}" -x "$REPO/tests/test_cuda_kernels.py" -k "gemm_matches and 127 or conv_forward_backward and case0"
  fi
  step bench_fp32 150 "$PY" "$REPO/bench/cuda_kernels.py"
  step bench_tc 150 "$PY" "$REPO/bench/cuda_tc.py" --sizes 4096,8192
  step bench_conv_tc 150 "$PY" "$REPO/bench/conv.py" --device cuda --dtype bf16 --json "$OUT/conv_bf16.json"
  # training images/s vs PyTorch on the same GPU (torch in channels_last), fp32 then autocast bf16
  step train_fp32 120 "$PY" "$REPO/bench/train.py" --device cuda --quick --settle 0 --models cnn,resnet \
    --batches 128,512 --json "$OUT/train_fp32.json"
  step train_bf16 120 "$PY" "$REPO/bench/train.py" --device cuda --amp bf16 --quick --settle 0 --models cnn,resnet \
    --batches 128,512 --json "$OUT/train_bf16.json"
fi

echo "---- gpu_check summary ($(date -u +%Y-%m-%dT%H:%MZ), logs in $OUT) ----"
for line in "${SUMMARY[@]}"; do echo "$line"; done
for f in bench_fp32 bench_tc bench_conv_tc train_fp32 train_bf16; do [ -f "$OUT/$f.log" ] && tail -25 "$OUT/$f.log"; done

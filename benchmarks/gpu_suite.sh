#!/usr/bin/env bash
# The one-command GPU suite, sized for one short run (at most 8 minutes on an H200).
# In order:
#   facts      the machine: GPU, driver, compute capability, torch, CUDA runtime, cores
#   configure  cmake for the GPU found only (its compute capability), /usr/bin/g++,
#   build      every core, ptxas registers and spills (ptxas.md)
#   cuda_tests test_cuda.py and test_distributed_nccl.py
#   pytest     the rest of test/python (the CUDA fuzz excepted: next step)
#   ctest      GoogleTest, examples, TorchScript, CMake package, C++ API across ranks
#   fuzz_cuda  the fuzz suite's seeded cases on CUDA (exact reference, torch's CUDA clip)
#   benchmark  bench_gpu.py --write (its RESULTS.md section names this run's summary)
#   memcheck, racecheck   compute-sanitizer on the GoogleTest CUDA tests, where it runs
# Each step's log lands in the output folder as the step ends, with summary.md
# (one row a step) rewritten after each, so a run cut off returns what finished.
#
#   bash benchmarks/gpu_suite.sh [OUT_DIR]         # default $OUT, else build-gpu/out
#   SKIP="pytest racecheck" bash benchmarks/gpu_suite.sh
#   bash benchmarks/gpu_suite.sh --dry-run [OUT_DIR]   # prints and logs each step's command, runs none
#
# Per-step limits (seconds) keep the whole within budget: TOTALNORM_SUITE_LIMIT_<STEP>.
# GoogleTest sources come from /usr/src/googletest, or from .gtest/ in the repo root.
set -uo pipefail
dry_run=0
if [ "${1:-}" = "--dry-run" ]; then
  dry_run=1
  shift
fi
root=$(cd "$(dirname "$0")/.." && pwd)
out=${1:-${OUT:-$root/build-gpu/out}}
build=$root/build-gpu/cmake
python=${PYTHON:-python3}
cores=$(nproc)
mkdir -p "$out"
cd "$root"
suite_start=$SECONDS
summary=$out/summary.md
rows=()
failed=0

write_summary() {
  {
    echo "| step | status | seconds | counts |"
    echo "|---|---|---:|---|"
    printf '%s\n' "${rows[@]}"
    echo
    echo "total: $((SECONDS - suite_start)) s"
  } >"$summary"
}

# counts LOG: pytest's and ctest's closing tallies, if the log has them.
counts() {
  local line
  line=$(grep -E "^=+ .*(passed|failed|error).* in [0-9.]+s" "$1" | tail -n 1 | sed -E 's/^=+ //; s/ in [0-9.]+s.*//')
  [ -n "$line" ] || line=$(grep -E "tests passed, [0-9]+ tests failed out of" "$1" | tail -n 1)
  echo "${line:--}"
}

# step NAME LIMIT COMMAND...: runs it under a time limit, logs to $out/NAME.log.
step() {
  local name=$1 limit=$2
  shift 2
  local var="TOTALNORM_SUITE_LIMIT_${name^^}"
  limit=${!var:-$limit}
  case " ${SKIP:-} " in *" $name "*)
    rows+=("| $name | skipped (SKIP) | 0 | - |")
    write_summary
    return 0
    ;;
  esac
  echo "=== $name (limit ${limit} s): $*"
  if [ $dry_run = 1 ]; then
    echo "$*" >"$out/$name.log"
    rows+=("| $name | dry run | 0 | - |")
    write_summary
    return 0
  fi
  local t0=$SECONDS
  timeout --kill-after=10 "$limit" "$@" >"$out/$name.log" 2>&1
  local rc=$?
  tail -n 15 "$out/$name.log"
  local status=pass
  [ $rc -eq 124 ] && status="TIMEOUT (${limit} s)"
  [ $rc -ne 0 ] && [ $rc -ne 124 ] && status="FAIL ($rc)"
  rows+=("| $name | $status | $((SECONDS - t0)) | $(counts "$out/$name.log") |")
  write_summary
  [ $rc -eq 0 ] || failed=1
  return $rc
}

skip_step() {  # skip_step NAME REASON: a step that cannot run here, logged as such
  echo "=== $1: skipped: $2"
  echo "skipped: $2" >"$out/$1.log"
  rows+=("| $1 | skipped: $2 | 0 | - |")
  write_summary
}

# --- the machine's facts, and the architecture to build for.
arch=${TOTALNORM_SUITE_ARCH:-}
if [ -z "$arch" ] && [ $dry_run = 0 ]; then
  arch=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader 2>/dev/null | head -n 1 | tr -d ' ')
  [ -n "$arch" ] || arch=$("$python" -c "import torch; print('%d.%d' % torch.cuda.get_device_capability())" 2>/dev/null)
fi
arch=${arch:-9.0}
facts() {
  nvidia-smi --query-gpu=name,driver_version,compute_cap,memory.total --format=csv
  "$python" -c "import sys, torch; print('python', sys.version.split()[0]); print('torch', torch.__version__,
'cuda runtime', torch.version.cuda); print('device', torch.cuda.get_device_name(0))"
  command -v nvcc >/dev/null && nvcc --version | tail -n 1
  echo "cores $cores; building for compute capability $arch"
}
step facts 60 facts

cxx=${TOTALNORM_CXX:-/usr/bin/g++}
if [ $dry_run = 0 ] && [ ! -x "$cxx" ]; then
  echo "gpu_suite: no C++ compiler at $cxx; set TOTALNORM_CXX to a g++ that links libstdc++ dynamically" >&2
  exit 2
fi
gtest_src=/usr/src/googletest
[ -f "$gtest_src/CMakeLists.txt" ] || gtest_src=$root/.gtest
[ $dry_run = 1 ] || rm -rf "$build"

# A toolchain that links libstdc++ statically (some lent images' default CXX) makes every
# error raised by the ops crash Python: the system g++ is named on the cmake line.
step configure 120 cmake -S . -B "$build" -GNinja -DCMAKE_BUILD_TYPE=Release -DTOTALNORM_WITH_CUDA=ON \
  -DTOTALNORM_CUDA_ARCHS="$arch" -DTOTALNORM_PTXAS_VERBOSE=ON -DTOTALNORM_BUILD_EXAMPLES=ON \
  -DCMAKE_CXX_COMPILER="$cxx" -DCMAKE_CUDA_HOST_COMPILER="$cxx" \
  -DTOTALNORM_GTEST_SOURCE_DIR="$gtest_src" -DPython3_EXECUTABLE="$(command -v "$python")"
step build 300 cmake --build "$build" -j "$cores" || { echo "gpu_suite: build failed"; exit 1; }
[ $dry_run = 1 ] || "$python" scripts/ptxas_report.py "$out/build.log" --arch "sm_${arch/./}" >"$out/ptxas.md"

if [ $dry_run = 0 ]; then
  # Errors raised by the ops are caught in torch: stop here unless both share the C++ runtime.
  readelf -d "$build/libtotalnorm.so" | grep -q 'NEEDED.*libstdc++' ||
    { echo "gpu_suite: libtotalnorm.so does not link libstdc++ dynamically"; exit 1; }
  # The Python package in place, with the library just built (no second build).
  cp "$build/libtotalnorm.so" totalnorm/libtotalnorm.so
  rm -f totalnorm/_borrowed.*.so
  cp "$build"/_borrowed.*.so totalnorm/ 2>/dev/null || echo "gpu_suite: no totalnorm._borrowed was built"
  "$python" -c "import torch; print(f'TORCH_VERSION = {str(torch.__version__)!r}')" >totalnorm/_build_info.py
fi
export PYTHONPATH=$root${PYTHONPATH:+:$PYTHONPATH}

xdist=$("$python" -c "import xdist" 2>/dev/null && echo "-n 8")
pytest_cmd=("$python" -m pytest -q -p no:cacheprovider)
step cuda_tests 120 "${pytest_cmd[@]}" test/python/test_cuda.py test/python/test_distributed_nccl.py
step pytest 180 "${pytest_cmd[@]}" $xdist test/python --ignore=test/python/test_cuda.py \
  --ignore=test/python/test_distributed_nccl.py --deselect test/python/test_fuzz.py::test_fuzz_cases_on_cuda
step ctest 120 ctest --test-dir "$build" --output-on-failure -j 8
step fuzz_cuda 90 "${pytest_cmd[@]}" test/python/test_fuzz.py -k on_cuda
# --write replaces this GPU's section of benchmarks/RESULTS.md (naming the summary so far)
# and redraws results.png; copies of both land in $out.
step benchmark 150 "$python" benchmarks/bench_gpu.py --write --budget 0.5 --suite-summary "$summary" \
  --out "$out/bench_gpu.md"
[ $dry_run = 1 ] || cp benchmarks/RESULTS.md benchmarks/results.png "$out"/ 2>/dev/null

# compute-sanitizer: a small subset (the GoogleTest CUDA tests), where the tool runs here.
sanitizer=$(command -v compute-sanitizer || ls /usr/local/cuda/bin/compute-sanitizer 2>/dev/null)
cuda_gtests=("$build/test/csrc/totalnorm_tests" --gtest_filter='*Cuda*' --gtest_brief=1)
if [ $dry_run = 0 ] && [ -z "$sanitizer" ]; then
  skip_step memcheck "no compute-sanitizer"
  skip_step racecheck "no compute-sanitizer"
elif [ $dry_run = 0 ] && ! timeout 60 "$sanitizer" --tool memcheck "${cuda_gtests[0]}" --gtest_list_tests \
  >"$out/sanitizer_probe.log" 2>&1; then
  skip_step memcheck "compute-sanitizer does not run on this machine (sanitizer_probe.log)"
  skip_step racecheck "compute-sanitizer does not run on this machine (sanitizer_probe.log)"
else
  step memcheck 90 "${sanitizer:-compute-sanitizer}" --tool memcheck --error-exitcode 1 "${cuda_gtests[@]}"
  step racecheck 90 "${sanitizer:-compute-sanitizer}" --tool racecheck --error-exitcode 1 "${cuda_gtests[@]}"
fi
# The results section again, now with the sanitizer rows of the summary (no re-measurement).
[ $dry_run = 1 ] || [ ! -f "$out/bench_gpu.md" ] ||
  "$python" benchmarks/bench_gpu.py --resummarize "$out/bench_gpu.md" --suite-summary "$summary" --write \
    >>"$out/benchmark.log" 2>&1

echo
cat "$summary"
[ -f "$out/ptxas.md" ] && tail -n 1 "$out/ptxas.md"
exit $failed

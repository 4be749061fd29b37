#!/usr/bin/env bash
# The one-command GPU suite, for a machine with a CUDA GPU and this repository:
# build (library + GoogleTest), GPU tests (ctest: GoogleTest, examples, TorchScript,
# CMake package, the C++ API across ranks; pytest, with the NCCL world-size-1
# tests of test_distributed_nccl.py), compute-sanitizer
# memcheck and racecheck on the GoogleTest binary, then the GPU benchmark (its section
# of benchmarks/RESULTS.md rewritten, results.png redrawn); a short table last. Fits
# one 10-minute call on an H100 machine.
#
#   bash benchmarks/gpu_suite.sh            # logs and the benchmark table go to $OUT or build-gpu/out
#   SKIP="pytest racecheck" bash benchmarks/gpu_suite.sh   # leave steps out
#
# GoogleTest sources come from /usr/src/googletest, or from .gtest/ in the repo
# root (a copy carried to machines without the Debian package).
set -uo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
out=${OUT:-$root/build-gpu/out}
build=$root/build-gpu
python=${PYTHON:-python3}
mkdir -p "$out" "$build"
cd "$root"

# A toolchain that links libstdc++ statically (the lent H100 image's default
# CXX, /opt/gcc/bin/g++) makes every error raised by the ops crash Python; the
# system g++ links it dynamically. It is passed on the cmake line into a fresh
# build directory (a cached configure would keep an older compiler);
# TOTALNORM_CXX picks another one.
cxx=${TOTALNORM_CXX:-/usr/bin/g++}
if [ ! -x "$cxx" ]; then
  echo "gpu_suite: no C++ compiler at $cxx; set TOTALNORM_CXX to a g++ that links libstdc++ dynamically" >&2
  exit 2
fi
rm -rf "$build"
mkdir -p "$out"

gtest_src=/usr/src/googletest
[ -f "$gtest_src/CMakeLists.txt" ] || gtest_src=$root/.gtest

summary=()
failed=0
step() {  # step NAME COMMAND...: runs it, logs to $out/NAME.log, records status and time
  local name=$1
  shift
  case " ${SKIP:-} " in *" $name "*) summary+=("| $name | skipped | - |"); return 0 ;; esac
  local t0=$SECONDS
  echo "=== $name: $*"
  "$@" >"$out/$name.log" 2>&1
  local rc=$?
  tail -n 25 "$out/$name.log"
  summary+=("| $name | $([ $rc -eq 0 ] && echo pass || echo "FAIL ($rc)") | $((SECONDS - t0)) s |")
  [ $rc -eq 0 ] || failed=1
  return $rc
}

nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$out/gpu.txt"

step configure cmake -S . -B "$build" -GNinja -DCMAKE_BUILD_TYPE=Release -DTOTALNORM_WITH_CUDA=ON \
  -DCMAKE_CXX_COMPILER="$cxx" -DCMAKE_CUDA_HOST_COMPILER="$cxx" \
  -DTOTALNORM_GTEST_SOURCE_DIR="$gtest_src" -DPython3_EXECUTABLE="$(command -v "$python")"
step build cmake --build "$build" -j "$(nproc)" || { printf '%s\n' "${summary[@]}"; exit 1; }
# Errors raised by the ops are caught in torch: stop here unless both share the C++ runtime.
step cxx_runtime sh -c "readelf -d '$build/libtotalnorm.so' | grep 'NEEDED.*libstdc++'" ||
  { printf '%s\n' "${summary[@]}"; exit 1; }
# The Python package in place, with the library just built (no second build).
cp "$build/libtotalnorm.so" totalnorm/libtotalnorm.so
# The borrowed-list entry (built where Python's headers are found; without it, torch.ops).
rm -f totalnorm/_borrowed.*.so
cp "$build"/_borrowed.*.so totalnorm/ 2>/dev/null || echo "gpu_suite: no totalnorm._borrowed was built"
# The build record setup.py writes: the package takes the module only for the torch it was built for.
"$python" -c "import torch; print(f'TORCH_VERSION = {str(torch.__version__)!r}')" >totalnorm/_build_info.py
export PYTHONPATH=$root${PYTHONPATH:+:$PYTHONPATH}

step ctest ctest --test-dir "$build" --output-on-failure -j 8
xdist=$("$python" -c "import xdist" 2>/dev/null && echo "-n 8")
step pytest "$python" -m pytest -q -p no:cacheprovider $xdist test/python
cuda_tests='*cuda*:*CUDA*:*Cuda*'
step memcheck compute-sanitizer --tool memcheck --error-exitcode 1 \
  "$build/test/csrc/totalnorm_tests" --gtest_filter="$cuda_tests" --gtest_brief=1
step racecheck compute-sanitizer --tool racecheck --error-exitcode 1 \
  "$build/test/csrc/totalnorm_tests" --gtest_filter="$cuda_tests" --gtest_brief=1
# --write replaces this GPU's section of benchmarks/RESULTS.md and redraws results.png;
# copies of both land in $out, to be brought back from a lent machine.
step benchmark "$python" benchmarks/bench_gpu.py --write --out "$out/bench_gpu.md"
cp benchmarks/RESULTS.md benchmarks/results.png "$out"/ 2>/dev/null

echo
echo "| step | status | time |"
echo "|---|---|---|"
printf '%s\n' "${summary[@]}"
echo
cat "$out/bench_gpu.md" 2>/dev/null
exit $failed

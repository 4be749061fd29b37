#!/usr/bin/env bash
# Runs every test: builds the library and the GoogleTest suite with CMake (the
# CUDA backend too when nvcc is present, compiled for every architecture of
# TOTALNORM_CUDA_ARCHS and linked even without a GPU), installs the Python
# package from the same build tree, builds
# a wheel from it, then runs ctest, pytest and the trainer recipes (scripts/recipes.sh;
# TOTALNORM_RECIPES=0 skips them), and last the sanitizer build
# (scripts/sanitize.sh; TOTALNORM_SANITIZE=0 skips it). Exits non-zero when any
# test fails; prints how long each part took.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
source scripts/setup_env.sh
build=$root/build/cmake
wheel_dir=$root/build/wheel
gtest_dir=${TOTALNORM_GTEST_SOURCE_DIR:-/usr/src/googletest}
start=$SECONDS
part() { echo "test.sh: $1 took $((SECONDS - start)) s"; start=$SECONDS; }

# The Python package first, from the shared build tree (objects are reused below;
# configured with the ptxas report on, as the CMake build below is, so the CUDA
# objects compile once).
export TOTALNORM_PTXAS_VERBOSE=ON
TOTALNORM_CMAKE_BUILD_DIR=$build "$python" -m pip install -q --no-build-isolation --no-deps .
# The wheel a user would install: test_packaging.py checks that it pins this torch.
rm -rf "$wheel_dir"
TOTALNORM_CMAKE_BUILD_DIR=$build "$python" -m pip wheel -q --no-build-isolation --no-deps . -w "$wheel_dir"
part "pip install + pip wheel"
cmake -S . -B "$build" -GNinja -DCMAKE_BUILD_TYPE=Release -DTOTALNORM_BUILD_TESTS=ON -DTOTALNORM_BUILD_EXAMPLES=ON \
  -DCMAKE_LIBRARY_OUTPUT_DIRECTORY= -DTOTALNORM_GTEST_SOURCE_DIR="$gtest_dir" -DTOTALNORM_PTXAS_VERBOSE=ON \
  -DPython3_EXECUTABLE="$(command -v "$python")" >/dev/null
# ptxas's registers and spills of each CUDA kernel (when the CUDA backend is built) go to
# the build log; scripts/ptxas_report.py summarises them.
cmake --build "$build" 2>&1 | tee "$build/build.log"
if grep -q "Compiling entry function" "$build/build.log"; then
  "$python" scripts/ptxas_report.py "$build/build.log" | tail -n 1
fi
part "CMake build"
ctest --test-dir "$build" --output-on-failure
part "ctest"
# From outside the source tree, so `import totalnorm` is the installed package.
(cd "$build" && TOTALNORM_WHEEL=$(ls "$wheel_dir"/totalnorm-*.whl) \
  "$python" -m pytest -q -p no:cacheprovider "$root/test/python")
part "pytest"
# The trainer recipes (Hugging Face Trainer, Lightning), each against the trainer's own clip.
if [ "${TOTALNORM_RECIPES:-1}" != 0 ]; then
  bash scripts/recipes.sh
  part "recipes (install the trainers, run examples/recipes)"
fi
if [ "${TOTALNORM_SANITIZE:-1}" != 0 ]; then
  bash scripts/sanitize.sh
  part "sanitize.sh (ASan + UBSan build, ctest, pytest subset)"
fi

#!/usr/bin/env bash
# Runs every test: builds the library and the GoogleTest suite with CMake (the
# CUDA backend too when nvcc is present, compiled for sm_90 and linked even
# without a GPU), installs the Python package from the same build tree, then
# runs ctest and pytest. Exits non-zero when any test fails.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
source scripts/setup_env.sh
build=$root/build/cmake
gtest_dir=${TOTALNORM_GTEST_SOURCE_DIR:-/usr/src/googletest}

# The Python package first, from the shared build tree (objects are reused below).
TOTALNORM_CMAKE_BUILD_DIR=$build "$python" -m pip install -q --no-build-isolation --no-deps . 
cmake -S . -B "$build" -GNinja -DCMAKE_BUILD_TYPE=Release -DTOTALNORM_BUILD_TESTS=ON -DTOTALNORM_BUILD_EXAMPLES=ON \
  -DCMAKE_LIBRARY_OUTPUT_DIRECTORY= -DTOTALNORM_GTEST_SOURCE_DIR="$gtest_dir" \
  -DPython3_EXECUTABLE="$(command -v "$python")" >/dev/null
cmake --build "$build"
ctest --test-dir "$build" --output-on-failure
# From outside the source tree, so `import totalnorm` is the installed package.
(cd "$build" && "$python" -m pytest -q -p no:cacheprovider "$root/test/python")

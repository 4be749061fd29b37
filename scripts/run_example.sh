#!/usr/bin/env bash
# The main job: builds and installs totalnorm, runs the seed's example (a tiny
# model's gradient norm: totalnorm and torch beside the exact value), then the
# LibTorch training loop that clips with totalnorm every step and checks it against torch.
# The CUDA backend is built only where a GPU can run it (TOTALNORM_WITH_CUDA overrides);
# CI (scripts/test.sh) still compiles it for every architecture. Its own build tree
# (build/example), so its choice never reaches the test build's CMake cache.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
source scripts/setup_env.sh
build=$root/build/example
if [ -z "${TOTALNORM_WITH_CUDA:-}" ]; then
  if "$python" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
    TOTALNORM_WITH_CUDA=AUTO
  else
    TOTALNORM_WITH_CUDA=OFF
  fi
fi
export TOTALNORM_WITH_CUDA
TOTALNORM_CMAKE_BUILD_DIR=$build "$python" -m pip install -q --no-build-isolation --no-deps .
cmake -S . -B "$build" -DTOTALNORM_BUILD_EXAMPLES=ON -DCMAKE_LIBRARY_OUTPUT_DIRECTORY= \
  -DTOTALNORM_WITH_CUDA="$TOTALNORM_WITH_CUDA" -DPython3_EXECUTABLE="$(command -v "$python")" >/dev/null
cmake --build "$build" --target train
(cd "$root/examples" && "$python" seed_example.py)
"$build/examples/train" 300 50

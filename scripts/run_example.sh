#!/usr/bin/env bash
# The main job: builds and installs totalnorm, runs the seed's example (a tiny
# model's gradient norm, totalnorm beside torch), then the LibTorch training
# loop that clips with totalnorm every step and checks it against torch.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
source scripts/setup_env.sh
build=$root/build/cmake
TOTALNORM_CMAKE_BUILD_DIR=$build "$python" -m pip install -q --no-build-isolation --no-deps .
cmake -S . -B "$build" -DTOTALNORM_BUILD_EXAMPLES=ON -DCMAKE_LIBRARY_OUTPUT_DIRECTORY= \
  -DPython3_EXECUTABLE="$(command -v "$python")" >/dev/null
cmake --build "$build" --target train
(cd "$root/examples" && "$python" seed_example.py)
"$build/examples/train" 300 50

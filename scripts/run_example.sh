#!/usr/bin/env bash
# The main job: builds and installs totalnorm, then runs the seed's example
# (a tiny model's gradient norm, totalnorm beside torch).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
source scripts/setup_env.sh
"$python" -m pip install -q --no-build-isolation --no-deps .
cd "$root/examples" && "$python" seed_example.py

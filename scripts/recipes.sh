#!/usr/bin/env bash
# Runs the trainer recipes (examples/recipes/*.py) on the CPU, each against its trainer's own
# clipping. The trainers come from PyPI (examples/recipes/requirements.txt) into their own
# virtual environment, build/recipes-venv, over the running torch (held at its version, so
# no other torch is pulled in), with the totalnorm wheel that scripts/test.sh built.
# Nothing is installed into the interpreter that builds totalnorm.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
source scripts/setup_env.sh
venv=$root/build/recipes-venv
wheel=$(ls "$root"/build/wheel/totalnorm-*.whl)
torch_version=$("$python" -c "import torch; print(torch.__version__.split('+')[0])")
[ -x "$venv/bin/python" ] || "$python" -m venv --system-site-packages "$venv"
echo "torch==$torch_version" > "$venv/constraints.txt"
"$venv/bin/python" -m pip install -q -c "$venv/constraints.txt" -r examples/recipes/requirements.txt
"$venv/bin/python" -m pip install -q --no-deps --force-reinstall "$wheel"
status=0
for recipe in examples/recipes/*.py; do
  name=$(basename "$recipe" .py)
  if (cd "$root/build" && timeout 600 "$venv/bin/python" "$root/$recipe" >"$root/build/recipe-$name.log" 2>&1); then
    tail -n 1 "$root/build/recipe-$name.log"
  else
    echo "recipe $name FAILED:"; tail -n 40 "$root/build/recipe-$name.log"; status=1
  fi
done
exit $status

# Sourced by the scripts in this folder: installs what a fresh machine of this
# kind lacks (torch from PyPI, pytest, wheel, GoogleTest sources from Debian), nothing else.
set -euo pipefail
python=${PYTHON:-python3}
if ! "$python" -c "import torch" 2>/dev/null; then
  "$python" -m pip install -q "torch==2.14.1"
fi
if ! "$python" -c "import pytest" 2>/dev/null; then
  "$python" -m pip install -q pytest
fi
# setuptools builds wheels (pip install and pip wheel without build isolation) with it.
if ! "$python" -c "import wheel" 2>/dev/null; then
  "$python" -m pip install -q wheel
fi
for tool in cmake ninja; do
  command -v "$tool" >/dev/null || "$python" -m pip install -q "$tool"
done
if [ ! -f /usr/src/googletest/CMakeLists.txt ] && [ -z "${TOTALNORM_GTEST_SOURCE_DIR:-}" ]; then
  if command -v apt-get >/dev/null; then
    sudo_cmd=$([ "$(id -u)" = 0 ] || echo sudo)
    $sudo_cmd apt-get install -y -q googletest >/dev/null 2>&1 ||
      { $sudo_cmd apt-get update -q >/dev/null && $sudo_cmd apt-get install -y -q googletest >/dev/null; }
  fi
fi

#!/usr/bin/env bash
# Installs the build tree into a scratch prefix, then configures, builds and
# runs the outside project against it: find_package(totalnorm) must work.
#   check.sh BUILD_DIR
set -euo pipefail
build=$1
here=$(cd "$(dirname "$0")" && pwd)
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
cmake --install "$build" --prefix "$scratch/install" >/dev/null
cmake -S "$here" -B "$scratch/build" -GNinja -DCMAKE_PREFIX_PATH="$scratch/install" >/dev/null
cmake --build "$scratch/build" >/dev/null
"$scratch/build/uses_totalnorm"

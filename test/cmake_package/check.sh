#!/usr/bin/env bash
# Installs the build tree into a scratch prefix, then configures, builds and
# runs the outside project against it: find_package(totalnorm) must work, and the
# project's CMAKE_CXX_STANDARD 17 is raised to the C++20 the target requires.
#   check.sh BUILD_DIR
set -euo pipefail
build=$1
here=$(cd "$(dirname "$0")" && pwd)
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
cmake --install "$build" --prefix "$scratch/install" >/dev/null
# The output only when a step fails: a compiler error must be seen in the CI log.
quiet() { "$@" >"$scratch/log" 2>&1 || { cat "$scratch/log"; return 1; }; }
quiet cmake -S "$here" -B "$scratch/build" -GNinja -DCMAKE_PREFIX_PATH="$scratch/install"
quiet cmake --build "$scratch/build"
"$scratch/build/uses_totalnorm"

#!/usr/bin/env bash
# The CPU library under AddressSanitizer + UndefinedBehaviorSanitizer: builds it
# in its own tree (build/asan, CUDA off), runs its ctest (GoogleTest, the LibTorch
# training example, the TorchScript round trip), then a pytest subset (the fast
# fuzz cases included) against a staged copy of the package holding the
# sanitized library. The installed package is not touched. Any sanitizer report
# stops the process with a non-zero status, which fails this script.
#
# ctest runs all but cmake_package (it checks the outside build, not memory).
#
#   bash scripts/sanitize.sh    (scripts/test.sh runs it last; TOTALNORM_SANITIZE=0 skips it there)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
source scripts/setup_env.sh
build=$root/build/asan
stage=$build/python
gtest_dir=${TOTALNORM_GTEST_SOURCE_DIR:-/usr/src/googletest}
sanitizers="-fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer"

# -O1 -g1: what ASan suggests (reports with file:line), and quicker to compile than -O2 -g.
cmake -S . -B "$build" -GNinja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="-O1 -g1" \
  -DTOTALNORM_WITH_CUDA=OFF \
  -DTOTALNORM_BUILD_TESTS=ON -DTOTALNORM_BUILD_EXAMPLES=ON -DTOTALNORM_GTEST_SOURCE_DIR="$gtest_dir" \
  -DCMAKE_CXX_FLAGS="$sanitizers" -DCMAKE_SHARED_LINKER_FLAGS="$sanitizers" \
  -DCMAKE_EXE_LINKER_FLAGS="$sanitizers" -DPython3_EXECUTABLE="$(command -v "$python")" >/dev/null
cmake --build "$build"

# CPython and torch leak by design at exit: leak checking off. Everything else
# halts at the first report (ASan always; UBSan through -fno-sanitize-recover).
# Reports go to files, printed at the end: pytest's output capture would hide
# them, and a report from any subprocess must fail this script too.
reports=$build/sanitizer-reports
rm -rf "$reports" && mkdir -p "$reports"
export ASAN_OPTIONS=detect_leaks=0:halt_on_error=1:detect_stack_use_after_return=1:strict_string_checks=1:log_path=$reports/asan
export UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1:log_path=$reports/ubsan
finish() {
  local status=$?
  if compgen -G "$reports/*" >/dev/null; then
    echo "sanitize.sh: sanitizer report(s):" >&2
    cat "$reports"/* >&2
    status=1
  elif [ "$status" = 0 ]; then
    echo "sanitize.sh: no AddressSanitizer or UndefinedBehaviorSanitizer report"
  fi
  exit "$status"
}
trap finish EXIT
# The ASan runtime must come first; libstdc++ is preloaded with it because Python
# itself does not link it, and ASan's exception interceptor needs it at start-up.
preload="$(g++ -print-file-name=libasan.so) $(g++ -print-file-name=libstdc++.so.6)"

# The outside-project check builds with the compiler, not with the sanitizers: left to test.sh.
LD_PRELOAD="$preload" ctest --test-dir "$build" --output-on-failure -E '^cmake_package$'

# The package as the install would lay it out, with the sanitized library.
rm -rf "$stage" && mkdir -p "$stage/totalnorm"
cp totalnorm/*.py "$stage/totalnorm/"
rm -f "$stage/totalnorm/_build_info.py"
cp "$build/libtotalnorm.so" "$build"/_borrowed.*.so "$stage/totalnorm/"
"$python" -c "import torch; print(f'TORCH_VERSION = {str(torch.__version__)!r}')" >"$stage/totalnorm/_build_info.py"

# From the build tree, outside the source tree: `import totalnorm` is the staged copy.
cd "$build"
sanitized() {
  LD_PRELOAD="$preload" PYTHONPATH="$stage" TOTALNORM_UNDER_SANITIZERS=1 \
    TOTALNORM_FUZZ_CASES="${TOTALNORM_SANITIZE_FUZZ_CASES:-3200}" "$python" "$@"
}
sanitized -c "import totalnorm; assert totalnorm.__file__.startswith('$stage/'), totalnorm.__file__; assert totalnorm._borrowed is not None"
tests=(test_fuzz.py test_concurrency.py test_total_norm.py test_clip.py test_errors.py test_get_total_norm.py test_borrowed.py
  test_per_tensor.py)
sanitized -m pytest -q -p no:cacheprovider "${tests[@]/#/$root/test/python/}"

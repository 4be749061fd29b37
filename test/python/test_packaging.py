"""Import- and install-time failures that say what to do, and the torch pin of a build.

* Importing the unbuilt source tree names the build command.
* The build records the torch it was built against (totalnorm/_build_info.py); a
  different running torch is named next to it, as a warning when the library still
  loads and in the ImportError when it does not.
* The package version carries that torch in its local label and its metadata pins
  it; scripts/test.sh also builds a wheel and points TOTALNORM_WHEEL at it.

Each import runs in a fresh interpreter, on a copy of the package where the test
needs to break it.
"""
from __future__ import annotations

import importlib.metadata
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch

import totalnorm

SOURCE_PACKAGE = Path(__file__).resolve().parents[2] / "totalnorm"
INSTALLED_PACKAGE = Path(totalnorm.__file__).resolve().parent
TORCH = str(torch.__version__)
TORCH_PUBLIC = TORCH.split("+")[0]


def python(code: str, *, path: Path, cwd: Path) -> subprocess.CompletedProcess:
    """Runs `code` in a fresh interpreter that finds totalnorm in `path` first."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(path)] + os.environ.get("PYTHONPATH", "").split(os.pathsep)))
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True, text=True, timeout=120)


def stage(tmp_path: Path, library: bytes | None, built_with: str | None) -> Path:
    """A copy of the package's Python files, with a library and a build record of our choosing."""
    package = tmp_path / "totalnorm"
    package.mkdir()
    for source in SOURCE_PACKAGE.glob("*.py"):
        if source.name != "_build_info.py":
            shutil.copy(source, package / source.name)
    if library is not None:
        (package / "libtotalnorm.so").write_bytes(library)
    if built_with is not None:
        (package / "_build_info.py").write_text(f"TORCH_VERSION = {built_with!r}\n")
    return tmp_path


def test_importing_the_unbuilt_source_tree_says_how_to_build(tmp_path):
    root = stage(tmp_path, library=None, built_with=None)
    done = python("import totalnorm", path=root, cwd=root)
    assert done.returncode != 0
    assert "ImportError: totalnorm is not built" in done.stderr, done.stderr
    assert "pip install --no-build-isolation ." in done.stderr
    assert "Could not load this library" not in done.stderr


def test_a_library_built_for_another_torch_that_does_not_load_names_both_versions(tmp_path):
    root = stage(tmp_path, library=b"not a shared object", built_with="2.3.0+cu121")
    done = python("import totalnorm", path=root, cwd=root)
    assert done.returncode != 0
    message = done.stderr.strip().splitlines()[-1]
    assert message.startswith("ImportError: totalnorm was built against torch 2.3.0+cu121"), done.stderr
    assert f"but torch {TORCH} is running" in message
    assert "pip install --no-build-isolation ." in message


def test_a_library_that_does_not_load_says_why(tmp_path):
    root = stage(tmp_path, library=b"not a shared object", built_with=TORCH)
    done = python("import totalnorm", path=root, cwd=root)
    assert done.returncode != 0
    assert "ImportError: totalnorm: cannot load" in done.stderr, done.stderr


def _recorded_version() -> str:
    if not (INSTALLED_PACKAGE / "_build_info.py").exists():
        pytest.skip("an in-place build without setup.py's build record")
    from totalnorm import _build_info

    return _build_info.TORCH_VERSION


def test_the_build_records_the_running_torch():
    assert _recorded_version() == TORCH


def test_a_different_running_torch_is_named_beside_the_built_one(tmp_path):
    built = _recorded_version()
    code = (
        "import warnings, torch\n"
        "torch.__version__ = '2.99.0+fake'\n"
        "with warnings.catch_warnings(record=True) as caught:\n"
        "    warnings.simplefilter('always')\n"
        "    import totalnorm\n"
        "print('\\n'.join(str(w.message) for w in caught if w.category is RuntimeWarning))\n"
        "print(totalnorm.total_norm([torch.ones(4)]).item())\n"
    )
    done = python(code, path=INSTALLED_PACKAGE.parent, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert f"totalnorm was built against torch {built}, but torch 2.99.0+fake is running" in done.stdout
    assert done.stdout.strip().splitlines()[-1] == "2.0"  # it still works: a warning, not an error


@pytest.mark.parametrize("record", ["running torch", "another torch", "none"])
def test_the_borrowed_list_entry_is_used_only_for_the_torch_it_was_built_for(tmp_path, record):
    # It links torch's Python bindings: with another torch (or no record) every call takes torch.ops.
    modules = list(INSTALLED_PACKAGE.glob("_borrowed.*.so"))
    assert modules, "the installed package has no totalnorm._borrowed"
    built_with = {"running torch": TORCH, "another torch": "2.3.0+cu121", "none": None}[record]
    root = stage(tmp_path, (INSTALLED_PACKAGE / "libtotalnorm.so").read_bytes(), built_with)
    shutil.copy(modules[0], root / "totalnorm" / modules[0].name)
    code = (
        "import warnings\nwarnings.simplefilter('ignore')\nimport torch, totalnorm\n"
        "print(totalnorm._borrowed is not None, totalnorm.total_norm([torch.ones(4)]).item())\n"
    )
    done = python(code, path=root, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == [str(record == "running torch"), "2.0"]


def test_the_same_torch_imports_without_a_warning(tmp_path):
    _recorded_version()
    code = "import warnings\nwarnings.simplefilter('error')\nimport totalnorm\n"
    done = python(code, path=INSTALLED_PACKAGE.parent, cwd=tmp_path)
    assert done.returncode == 0, done.stderr


def _installed_metadata():
    try:
        dist = importlib.metadata.distribution("totalnorm")
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("totalnorm is not installed by pip (an in-place build)")
    return dist


def test_the_installed_version_and_requirement_pin_the_torch_built_against():
    dist = _installed_metadata()
    label = "torch" + TORCH.replace("+", ".")
    assert dist.version.endswith("+" + label), dist.version
    assert f"torch=={TORCH_PUBLIC}" in (dist.requires or []), dist.requires


def test_the_wheel_pins_the_torch_built_against():
    wheel = os.environ.get("TOTALNORM_WHEEL")
    if not wheel:
        pytest.skip("TOTALNORM_WHEEL is not set (scripts/test.sh builds a wheel and sets it)")
    label = "torch" + TORCH.replace("+", ".")
    assert Path(wheel).name.startswith(f"totalnorm-0.1.0+{label}-"), wheel
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
        metadata = next(n for n in names if n.endswith(".dist-info/METADATA"))
        text = zf.read(metadata).decode()
        build_info = zf.read("totalnorm/_build_info.py").decode()
    assert f"Version: 0.1.0+{label}\n" in text
    assert f"Requires-Dist: torch=={TORCH_PUBLIC}\n" in text
    assert "totalnorm/libtotalnorm.so" in names
    assert any(n.startswith("totalnorm/_borrowed.") and n.endswith(".so") for n in names), names
    assert f"TORCH_VERSION = {TORCH!r}" in build_info


def test_the_version_is_the_installed_distributions():
    public = importlib.metadata.version("totalnorm").split("+")[0]
    assert totalnorm.__version__ == public and public.count(".") == 2


@pytest.mark.parametrize("running, supported", [
    ("2.10.2", False), ("2.11.0+cu128", True), ("2.14.1+cu130", True), ("2.15.0", False), ("3.0.0", False),
    ("2.16.0.dev20270101", False),
])
def test_a_torch_outside_the_supported_releases_is_named_beside_them(running, supported):
    import warnings

    from totalnorm import _loader
    from totalnorm._version import TORCH_SUPPORTED

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert _loader.check_supported(running) is supported
    if supported:
        assert not caught
    else:
        (w,) = caught
        lo, hi = (f"{a}.{b}" for a, b in TORCH_SUPPORTED)
        assert issubclass(w.category, RuntimeWarning)
        assert f"torch {lo} to {hi}" in str(w.message) and f"torch {running} is running" in str(w.message)


def test_the_running_torch_is_supported():  # CI's torch, and the GPU machines' 2.11
    from totalnorm import _loader

    assert _loader.check_supported(str(torch.__version__))

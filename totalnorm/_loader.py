"""Loads libtotalnorm.so into the running torch, with errors a user can act on.

Two mistakes produce torch's bare ``OSError: Could not load this library``:

* importing the source tree, which holds no built library (the repository root
  on ``sys.path``, e.g. ``python`` started there);
* a library built against another torch than the one running (a torch upgrade
  after the build): C++ symbols differ, or worse, resolve and disagree.

The build (setup.py) records the torch it built against in ``_build_info.py``
next to the library; this module compares it with the running torch.
"""
from __future__ import annotations

import importlib
import warnings
from pathlib import Path
from typing import Optional

import torch

BUILD_COMMAND = "pip install --no-build-isolation ."


def built_torch_version(package_dir: Path) -> Optional[str]:
    """The torch version the library was built against, or None when not recorded."""
    if not (package_dir / "_build_info.py").exists():
        return None
    try:
        return importlib.import_module(f"{__package__}._build_info").TORCH_VERSION
    except (ImportError, AttributeError):
        return None


def check_supported(running: str, stacklevel: int = 2) -> bool:
    """Warns, naming both, when the running torch is outside the releases this version
    supports (``_version.TORCH_SUPPORTED``); returns whether it is inside."""
    from ._version import TORCH_SUPPORTED, __version__

    try:
        minor = tuple(int(part) for part in running.split("+")[0].split(".")[:2])
    except ValueError:
        minor = None
    (lo_major, lo_minor), (hi_major, hi_minor) = TORCH_SUPPORTED
    if minor is not None and TORCH_SUPPORTED[0] <= minor <= TORCH_SUPPORTED[1]:
        return True
    warnings.warn(
        f"totalnorm {__version__} supports torch {lo_major}.{lo_minor} to {hi_major}.{hi_minor}, but "
        f"torch {running} is running; it is untested there (see CHANGELOG.md for the supported "
        f"releases of each version)",
        RuntimeWarning,
        stacklevel=stacklevel + 1,
    )
    return False


def load(library: Path) -> bool:
    """Loads the library; returns whether it is known to be built against the running
    torch (a build record naming it)."""
    package_dir = library.parent
    if not library.exists():
        raise ImportError(
            f"totalnorm is not built: {library} does not exist. This is the source tree "
            f"({package_dir.parent}); build and install the package with "
            f"`{BUILD_COMMAND}` run in that directory, then import totalnorm from any other "
            f"directory (the source tree on sys.path, e.g. `python` started in it, shadows the "
            f"installed package)."
        )
    built = built_torch_version(package_dir)
    running = str(torch.__version__)
    check_supported(running, stacklevel=3)
    mismatch = built is not None and built != running
    rebuild = (f"rebuild totalnorm against the running torch (`{BUILD_COMMAND}` in its source "
               f"tree), or install torch=={built}")
    try:
        torch.ops.load_library(str(library))
    except OSError as err:
        cause = err.__cause__ or err
        if mismatch:
            raise ImportError(
                f"totalnorm was built against torch {built}, but torch {running} is running, "
                f"and its library does not load into it ({cause}); {rebuild}."
            ) from err
        raise ImportError(f"totalnorm: cannot load {library}: {cause}") from err
    if mismatch:
        warnings.warn(
            f"totalnorm was built against torch {built}, but torch {running} is running; "
            f"torch's C++ ABI is not stable across versions, so it may crash or compute wrong "
            f"results: {rebuild}.",
            RuntimeWarning,
            stacklevel=2,
        )
    return built is not None and not mismatch

"""Shared setup for the Python test suite of totalnorm.

How to run
----------
The tests exercise the *installed* package (``pip install --no-build-isolation .``),
whose ``totalnorm/`` holds the built ``libtotalnorm.so``. The source package in the
repository root has no ``.so``, and it shadows the installed one whenever the
repository root is on ``sys.path`` (``python3 -m pytest`` run from the root puts the
current directory there). Any of these work:

    cd /tmp && python3 -m pytest /work/main/test/python -q
    cd /work/main && python3 -m pytest -q            # this file drops the root from sys.path
    cd /work/main && pytest -q --import-mode=importlib

When the source package does hold a built ``libtotalnorm.so`` (an in-place build),
the repository root is left alone and that build is what gets tested.

Everything device-dependent is parametrized over ``DEVICES``: ``cpu``, plus ``cuda``
when a GPU is present. CUDA-only tests live in test_cuda.py.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

_HERE = Path(__file__).resolve().parent
_REPO = _HERE.parents[1]


def _drop_unbuilt_source_tree() -> None:
    if (_REPO / "totalnorm" / "libtotalnorm.so").exists():
        return
    keep = []
    for entry in sys.path:
        try:
            resolved = Path(entry or os.getcwd()).resolve()
        except OSError:
            resolved = None
        if resolved != _REPO:
            keep.append(entry)
    sys.path[:] = keep
    stale = sys.modules.get("totalnorm")
    if stale is not None and not Path(stale.__file__).with_name("libtotalnorm.so").exists():
        del sys.modules["totalnorm"]


_drop_unbuilt_source_tree()
# The helpers in reference.py are imported by name from the test modules, whatever
# --import-mode is in use.
if str(_HERE) not in sys.path:
    sys.path.insert(0, str(_HERE))

import torch  # noqa: E402

import totalnorm  # noqa: E402,F401  (fails loudly here when the package is not built)
from reference import DEVICES  # noqa: E402


@pytest.fixture(params=DEVICES)
def device(request) -> str:
    return request.param


@pytest.fixture(autouse=True)
def _restore_global_torch_state():
    """Tests change the thread count and default dtype; put them back."""
    threads = torch.get_num_threads()
    default_dtype = torch.get_default_dtype()
    yield
    torch.set_num_threads(threads)
    torch.set_default_dtype(default_dtype)

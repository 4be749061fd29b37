"""Shared setup for the Python test suite of totalnorm.

How to run
----------
The tests exercise the *installed* package (``pip install --no-build-isolation .``),
whose ``totalnorm/`` holds the built ``libtotalnorm.so``. pyproject.toml puts this
folder on the path for the shared helpers and uses ``--import-mode=importlib``, so
``pytest`` run from the repository root or anywhere else imports the installed
package. (``python3 -m pytest`` from the root would put the unbuilt source package
first on the path; its import error says how to build it.)

Everything device-dependent is parametrized over ``DEVICES``: ``cpu``, plus ``cuda``
when a GPU is present. CUDA-only tests live in test_cuda.py.
"""
from __future__ import annotations

import pytest
import torch

import totalnorm  # noqa: F401  (fails loudly here when the package is not built)
from reference import DEVICES


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

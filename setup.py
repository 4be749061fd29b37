"""Builds the Python package from the one CMake build definition.

`pip install --no-build-isolation .` configures CMakeLists.txt against the
installed torch and builds its `totalnorm_python` target: the Python-free
libtotalnorm.so, which ships inside the package and is loaded with
torch.ops.load_library, and the small extension module totalnorm._borrowed
(the list entry that skips torch.ops' per-tensor list cost).
"""
import os
import re
import subprocess
import sys
from pathlib import Path

from setuptools import Extension, find_packages, setup
from setuptools.command.build_ext import build_ext

ROOT = Path(__file__).resolve().parent
# One version, in the package (totalnorm/_version.py), read here without importing it.
VERSION = re.search(r'__version__ = "([^"]+)"', (ROOT / "totalnorm" / "_version.py").read_text()).group(1)


def torch_build_pins() -> tuple[str, list[str]]:
    """The package version and torch requirement for the torch this build compiles against.

    The library links that torch's C++ libraries, whose ABI changes between releases, so
    the version carries it in its local label (0.1.0+torch2.14.1.cu130, as torchvision
    and pyg-lib wheels do) and the metadata pins it (torch==2.14.1, any local variant).
    """
    try:
        import torch
    except ImportError:  # metadata only (an sdist): no torch to pin yet
        return VERSION, ["torch>=2.11"]
    full = str(torch.__version__)
    public, _, variant = full.partition("+")
    label = "torch" + public + (f".{variant}" if variant else "")
    return f"{VERSION}+{label}", [f"torch=={public}"]


class CMakeExtension(Extension):
    def __init__(self, name: str) -> None:
        super().__init__(name, sources=[])


class CMakeBuild(build_ext):
    def build_extension(self, ext: Extension) -> None:
        import torch.utils

        lib_dir = Path(self.get_ext_fullpath(ext.name)).resolve().parent
        # TOTALNORM_CMAKE_BUILD_DIR shares one CMake build tree with the C++ tests.
        build_dir = Path(os.environ.get("TOTALNORM_CMAKE_BUILD_DIR", Path(self.build_temp) / "cmake")).resolve()
        build_dir.mkdir(parents=True, exist_ok=True)
        configure = [
            "cmake", str(ROOT), "-GNinja",
            f"-DCMAKE_BUILD_TYPE={os.environ.get('TOTALNORM_BUILD_TYPE', 'Release')}",
            f"-DCMAKE_PREFIX_PATH={torch.utils.cmake_prefix_path}",
            f"-DCMAKE_LIBRARY_OUTPUT_DIRECTORY={lib_dir}",
            f"-DPython3_EXECUTABLE={sys.executable}",
            "-DTOTALNORM_BUILD_TESTS=OFF",
            "-DTOTALNORM_BUILD_EXAMPLES=OFF",
        ]
        for option in ("TOTALNORM_WITH_CUDA", "TOTALNORM_CUDA_ARCHS", "TOTALNORM_PTXAS_VERBOSE"):
            if option in os.environ:
                configure.append(f"-D{option}={os.environ[option]}")
        subprocess.check_call(configure, cwd=build_dir)
        subprocess.check_call(["cmake", "--build", ".", "--target", "totalnorm_python"], cwd=build_dir)
        # Read at import (totalnorm/_loader.py) to name both versions when torch changed since.
        (lib_dir / "_build_info.py").write_text(
            '"""Written by setup.py when the library was built."""\n'
            f"TORCH_VERSION = {str(torch.__version__)!r}\n"
        )


PACKAGE_VERSION, TORCH_REQUIREMENT = torch_build_pins()

setup(
    name="totalnorm",
    version=PACKAGE_VERSION,
    description="The global gradient p-norm of a list of tensors as a PyTorch operator",
    packages=find_packages(include=["totalnorm", "totalnorm.*"]),
    ext_modules=[CMakeExtension("totalnorm.libtotalnorm")],
    cmdclass={"build_ext": CMakeBuild},
    python_requires=">=3.10",
    install_requires=TORCH_REQUIREMENT,
    zip_safe=False,
)

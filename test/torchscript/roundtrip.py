"""Scripts a model that calls torch.ops.totalnorm with torch.jit.script, saves
it, runs the saved model in Python and in the C++ program `run_scripted`
(linked against libtotalnorm, no Python); the outputs must be bitwise equal.

    roundtrip.py LIBTOTALNORM RUN_SCRIPTED
"""
import math
import subprocess
import sys
import tempfile
from pathlib import Path

import torch


class NormsOfAStep(torch.nn.Module):
    """Norms of several orders over a list mixing parameters and activations."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.linspace(-2.0, 3.0, 1000))
        self.bias = torch.nn.Parameter(torch.arange(7, dtype=torch.float64) - 3.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tensors = [self.weight * x, self.bias, x.reshape(10, 100).t()]
        norms = [torch.ops.totalnorm.total_norm(tensors, p, False, None) for p in [2.0, 1.0, math.inf, 0.0, 3.0]]
        return torch.stack(norms)


def main() -> int:
    library, runner = sys.argv[1], sys.argv[2]
    torch.ops.load_library(library)
    x = torch.arange(1000, dtype=torch.float32).sin()
    scripted = torch.jit.script(NormsOfAStep())
    with tempfile.TemporaryDirectory() as tmp:
        path = str(Path(tmp) / "norms.pt")
        scripted.save(path)
        in_python = torch.jit.load(path)(x).double()
        printed = subprocess.run([runner, path], check=True, capture_output=True, text=True).stdout.split()
    in_cpp = torch.tensor([float.fromhex(v) for v in printed], dtype=torch.float64)
    eager = NormsOfAStep()(x).double()
    print("python:", in_python.tolist())
    print("c++:   ", in_cpp.tolist())
    if not (torch.equal(in_python, in_cpp) and torch.equal(in_python, eager)):
        print("MISMATCH between eager, scripted-in-Python and scripted-in-C++ results")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

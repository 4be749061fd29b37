"""Registers and spills of every CUDA kernel, from a build log compiled with
-Xptxas -v (CMake option TOTALNORM_PTXAS_VERBOSE=ON): one row per kernel and
architecture, demangled, spilling kernels first.

    python3 scripts/ptxas_report.py BUILD_LOG [--arch sm_90] [--fail-on-spills]

--fail-on-spills exits 1 when a reduce or scale kernel spills (bytes stored to or
loaded from local memory for lack of registers).
"""
from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
from pathlib import Path

ENTRY = re.compile(r"Compiling entry function '(\S+)' for '(sm_\d+a?)'")
SPILLS = re.compile(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads")
REGISTERS = re.compile(r"Used (\d+) registers")


def parse(text: str) -> list[dict]:
    """One dict per kernel compile: name (mangled), arch, registers, stack, spill stores and loads."""
    rows, current = [], None
    for line in text.splitlines():
        if m := ENTRY.search(line):
            current = {"name": m.group(1), "arch": m.group(2), "stack": 0, "stores": 0, "loads": 0}
        elif current is not None and (m := SPILLS.search(line)):
            current.update(stack=int(m.group(1)), stores=int(m.group(2)), loads=int(m.group(3)))
        elif current is not None and (m := REGISTERS.search(line)):
            current["registers"] = int(m.group(1))
            rows.append(current)
            current = None
    return rows


def demangle(names: list[str]) -> list[str]:
    if not names or shutil.which("c++filt") is None:
        return names
    out = subprocess.run(["c++filt"], input="\n".join(names), capture_output=True, text=True).stdout.splitlines()
    short = [re.sub(r"totalnorm::(cuda::)?(\(anonymous namespace\)::)?", "", n) for n in out]
    return [re.sub(r"\(Order\)(\d)", lambda m: "Order::" + "Zero One Two Inf NegInf General".split()[int(m.group(1))],
                   n) for n in short]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("log", type=Path)
    parser.add_argument("--arch", help="only this architecture, e.g. sm_90")
    parser.add_argument("--fail-on-spills", action="store_true")
    args = parser.parse_args()
    rows = [r for r in parse(args.log.read_text(errors="replace")) if args.arch in (None, r["arch"])]
    if not rows:
        print(f"no ptxas -v output in {args.log} (build with -DTOTALNORM_PTXAS_VERBOSE=ON)")
        return 1
    for r, name in zip(rows, demangle([r["name"] for r in rows])):
        r["kernel"] = name
    rows.sort(key=lambda r: (-(r["stores"] + r["loads"]), r["arch"], r["kernel"]))
    print("| arch | registers | spill stores B | spill loads B | stack B | kernel |")
    print("|---|---:|---:|---:|---:|---|")
    for r in rows:
        print(f"| {r['arch']} | {r['registers']} | {r['stores']} | {r['loads']} | {r['stack']} | {r['kernel'][:120]} |")
    spilling = [r for r in rows if r["stores"] + r["loads"] and re.search(r"reduce_kernel|scale_kernel", r["kernel"])]
    print(f"\n{len(rows)} kernel compiles, {len(spilling)} reduce/scale kernels spill")
    return 1 if args.fail_on_spills and spilling else 0


if __name__ == "__main__":
    sys.exit(main())

"""The benchmark scripts' shared code (benchmarks/toolkit.py), and bench_gpu.py's logic
through its --smoke mode, which runs without a GPU."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))
import toolkit  # noqa: E402


def section(heading: str, gbps: str) -> str:
    table = toolkit.markdown_table(
        ["machine", "workload", "totalnorm GB/s", "read loop GB/s"], [["m", "(a) x", gbps, "20.0"]]
    )
    return f"{heading}\n\n{table}\n"


def test_write_section_replaces_the_section_with_the_heading_prefix_and_keeps_the_others(tmp_path):
    results = tmp_path / "RESULTS.md"
    toolkit.write_section(section("## CPU: one", "1.0"), results)
    toolkit.write_section(section("## GPU: X (lent, 8 CPU cores)", "2.0"), results)
    toolkit.write_section(section("## GPU: X (16 CPU cores)", "3.0"), results, heading_prefix="## GPU: X (")
    toolkit.write_section(section("## CPU: one", "4.0"), results)
    text = results.read_text()
    assert text.count("## CPU: one") == 1 and text.count("## GPU: X") == 1
    assert "(lent" not in text
    series = {heading: s for heading, _, s in toolkit.results_series(results)}
    assert series == {
        "GPU: X (16 CPU cores)": {"totalnorm GB/s": [3.0], "read loop GB/s": [20.0]},
        "CPU: one": {"totalnorm GB/s": [4.0], "read loop GB/s": [20.0]},
    }


def test_a_limit_given_as_a_fraction_is_plotted_in_gb_per_s(tmp_path):
    results = tmp_path / "RESULTS.md"
    table = toolkit.markdown_table(
        ["workload", "totalnorm GB/s", "of copy BW"], [["(a)", "2800", "0.93"], ["(c) host-bound", "87", "-"]]
    )
    results.write_text(f"# Benchmark results\n\n## GPU: old\n\n{table}\n")
    [(_, labels, series)] = toolkit.results_series(results)
    assert labels == ["(a)"]
    assert series["copy BW GB/s (from the ratio)"] == [pytest.approx(2800 / 0.93)]


def test_bench_gpu_smoke_run_writes_its_section(tmp_path):
    results = tmp_path / "RESULTS.md"
    for _ in range(2):  # the second run replaces the first one's section
        subprocess.run([sys.executable, str(BENCHMARKS / "bench_gpu.py"), "--smoke", "--write", str(results)],
                       check=True, cwd=tmp_path, capture_output=True, timeout=300)
    text = results.read_text()
    assert text.count("## GPU: smoke run on the CPU") == 1
    [(heading, labels, series)] = toolkit.results_series(results)
    assert heading.startswith("GPU: smoke run")
    assert len(labels) == 2 and {"totalnorm GB/s", "torch GB/s", "_foreach_norm GB/s", "copy GB/s"} <= set(series)


def test_bench_gpu_refuses_to_write_smoke_numbers_into_results_md():
    run = subprocess.run([sys.executable, str(BENCHMARKS / "bench_gpu.py"), "--smoke", "--write"],
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 2 and "not results" in run.stderr


def test_gpu_suite_dry_run_lists_its_steps_in_order(tmp_path):
    # Runs nothing: each step's command goes to its log and the summary, in the suite's order.
    suite = BENCHMARKS / "gpu_suite.sh"
    run = subprocess.run(["bash", str(suite), "--dry-run", str(tmp_path)], capture_output=True, text=True,
                         timeout=60, env={"PATH": "/usr/bin:/bin", "TOTALNORM_SUITE_ARCH": "9.0",
                                          "SKIP": "racecheck"})
    assert run.returncode == 0, run.stderr
    summary = (tmp_path / "summary.md").read_text()
    steps = [line.split("|")[1].strip() for line in summary.splitlines()[2:] if line.startswith("| ")]
    assert steps == ["facts", "configure", "build", "cuda_tests", "pytest", "ctest", "fuzz_cuda", "benchmark",
                     "memcheck", "racecheck"]
    assert "skipped (SKIP)" in summary.splitlines()[-3]
    configure = (tmp_path / "configure.log").read_text()
    assert "-DTOTALNORM_CUDA_ARCHS=9.0" in configure and "-DCMAKE_CXX_COMPILER=/usr/bin/g++" in configure
    assert "-DTOTALNORM_PTXAS_VERBOSE=ON" in configure
    assert f"-j {os.cpu_count()}" in (tmp_path / "build.log").read_text()
    assert "test_cuda.py test/python/test_distributed_nccl.py" in (tmp_path / "cuda_tests.log").read_text()
    assert "-k on_cuda" in (tmp_path / "fuzz_cuda.log").read_text()


def test_bench_gpu_section_quotes_the_suite_summary_and_can_be_resummarized(tmp_path):
    sys.path.insert(0, str(BENCHMARKS))
    import bench_gpu

    summary = tmp_path / "summary.md"
    summary.write_text("| step | status |\n|---|---|\n| pytest | pass |\n")
    section = "## GPU: X (16 CPU cores)\n\nabout\n\n| table |\n"
    quoted = bench_gpu.with_suite(section, summary)
    assert quoted.startswith("## GPU: X (16 CPU cores)\n\n") and "| pytest | pass |" in quoted
    summary.write_text("| step | status |\n|---|---|\n| pytest | pass |\n| memcheck | pass |\n")
    again = bench_gpu.with_suite(quoted, summary)
    assert again.count(bench_gpu.SUITE_START) == 1 and "| memcheck | pass |" in again
    assert again.endswith("| table |\n")

"""``make bench``: every pytest-benchmark suite, then the HTTP harness, with a table of ratios.

Results go to ``bench/results/``: pytest-benchmark's JSON (with the machine's description) in
``bench/results/pytest/`` and the harness' JSON beside it. Each figure is printed next to the reference
measured in the same run and the ratio between them; ``--benchmark-compare`` against the previous saved
run flags a median more than 25% slower as a regression (exit status 1).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
STORAGE = RESULTS / "pytest"


def machine() -> dict[str, Any]:
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
    }


def run_pytest_benchmarks(extra: list[str]) -> tuple[int, Path | None]:
    STORAGE.mkdir(parents=True, exist_ok=True)
    before = set(STORAGE.rglob("*.json"))
    cmd = [
        sys.executable, "-m", "pytest", str(HERE), "-p", "no:cacheprovider", "-q",
        "--benchmark-enable", "--benchmark-autosave", f"--benchmark-storage=file://{STORAGE}",
        "--benchmark-columns=min,median,max,rounds", "--benchmark-sort=name",
    ]  # fmt: skip
    if before:
        cmd += ["--benchmark-compare", "--benchmark-compare-fail=median:25%"]
    code = subprocess.call([*cmd, *extra])
    after = sorted(set(STORAGE.rglob("*.json")) - before)
    return code, after[-1] if after else None


def ratio_rows(saved: Path) -> list[tuple[str, str, str, str]]:
    """(benchmark, figure, reference, ratio) from each benchmark's extra_info."""
    data = json.loads(saved.read_text())
    rows: list[tuple[str, str, str, str]] = []
    for bench in data.get("benchmarks", []):
        info: dict[str, Any] = bench.get("extra_info", {})
        # Figures, references and ratios by naming convention: per_op_us / *_per_s; ref_* / reference_*;
        # x_* / ratio_*.
        figure = ", ".join(f"{k}={v}" for k, v in info.items() if k == "per_op_us" or (k.endswith("_per_s")
                           and not k.startswith("reference")))  # fmt: skip
        reference = ", ".join(f"{k}={v}" for k, v in info.items() if k.startswith(("ref_", "reference_")))
        ratio = ", ".join(f"{k}={v}" for k, v in info.items() if k.startswith(("x_", "ratio_")))
        median_us = bench["stats"]["median"] * 1e6
        rows.append((bench["name"], figure or f"median {median_us:,.1f} µs", reference, ratio))
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--skip-http", action="store_true", help="Only the pytest-benchmark suites.")
    args, extra = parser.parse_known_args()
    code, saved = run_pytest_benchmarks(extra)
    http_code = 0
    if not args.skip_http:
        http_code = subprocess.call([sys.executable, "-m", "bench.http"])
    print()
    print(f"machine: {machine()}")
    if saved is not None:
        print(f"{'benchmark':<38} {'figure':<26} {'reference':<52} ratio")
        for name, figure, reference, ratio in ratio_rows(saved):
            print(f"{name:<38} {figure:<26} {reference:<52} {ratio}")
        print(f"saved: {saved}")
    if code == 1:
        print("regression against the previous run (median more than 25% slower), or a failing benchmark")
    return code or http_code


if __name__ == "__main__":
    sys.exit(main())

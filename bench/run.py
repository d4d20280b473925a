"""``make bench``: every pytest-benchmark suite, a regression check against this machine's baseline, then
the HTTP harness, with a table of ratios.

Each pytest-benchmark figure is printed next to the reference measured in the same run and the ratio
between them. The run's JSON goes to ``bench/results/`` (ignored by git; ``$ADP_BENCH_RESULTS_DIR`` instead
when set: the tests' runs write to their own temporary directory); the regression baseline lives
outside the tree, one file per machine (``bench.compare.machine_key``) under ``$ADP_BENCH_BASELINE_DIR``,
else ``$XDG_CACHE_HOME/adplatform/bench``, else ``~/.cache/adplatform/bench``. The first run on a machine
saves the baseline and says so; later runs compare with it (``bench.compare``) and exit 1 naming every
benchmark whose median, as a ratio to its same-run reference where it has one, is more than the threshold
(25%) slower. The baseline stays as saved (new benchmarks are added to it); ``--save-baseline`` replaces
it with this run. Figures worth keeping go into ``BENCHMARKS.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from adplatform.cli.common import script_main
from adplatform.sandbox import sandbox_environment
from bench import compare

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"


def baseline_dir() -> Path:
    explicit = os.environ.get("ADP_BENCH_BASELINE_DIR")
    if explicit:
        return Path(explicit)
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "adplatform" / "bench"


def results_dir() -> Path:
    explicit = os.environ.get("ADP_BENCH_RESULTS_DIR")
    return Path(explicit) if explicit else RESULTS


def run_pytest_benchmarks(extra: list[str]) -> tuple[int, Path]:
    results = results_dir()
    results.mkdir(parents=True, exist_ok=True)
    out = results / f"pytest-{time.strftime('%Y%m%dT%H%M%S')}.json"
    # No --benchmark-storage/--benchmark-compare: pytest-benchmark's own compare warns about a foreign
    # machine_info, and the suite's filterwarnings=error makes that an internal error (issue 20).
    cmd = [
        sys.executable, "-m", "pytest", str(HERE), "-p", "no:cacheprovider", "-q",
        "--benchmark-enable", f"--benchmark-json={out}",
        "--benchmark-columns=min,median,max,rounds", "--benchmark-sort=name",
    ]  # fmt: skip
    # Its own session even when started from a test on a pytest-xdist worker: pytest-benchmark reads
    # PYTEST_XDIST_WORKER and would disable every benchmark (and write no JSON).
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_XDIST_")}
    return subprocess.call([*cmd, *extra], env=env), out


def check_regressions(run: dict[str, Any], directory: Path, threshold: float, *, save: bool) -> list[str]:
    """Compare ``run`` with this machine's baseline in ``directory`` (saving one when there is none or
    ``save``); print the verdicts; the names of the benchmarks that regressed."""
    key = compare.machine_key(run.get("machine_info", {}))
    path = directory / f"{key}.json"
    if save or not path.is_file():
        directory.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(run, indent=1))
        why = "replaced as asked" if save else f"first run on this machine ({key})"
        print(f"baseline: {why}: saved {len(run.get('benchmarks', []))} benchmarks to {path}")
        return []
    baseline = compare.load(path)
    result = compare.compare(run, baseline, threshold)
    print(f"baseline: {path} (saved {baseline.get('datetime', '?')}), threshold {threshold:.0%}")
    print("\n".join(compare.format_comparison(result, threshold)))
    if result.new:
        path.write_text(json.dumps(compare.merge_baseline(baseline, run), indent=1))
    return [v.name for v in result.regressions]


def ratio_rows(data: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    """(benchmark, figure, reference, ratio) from each benchmark's extra_info."""
    rows: list[tuple[str, str, str, str]] = []
    for bench in data.get("benchmarks", []):
        info: dict[str, Any] = bench.get("extra_info", {})
        # Figures, references and ratios by naming convention: per_op_us / *_per_s; ref_* / reference_*;
        # x_* / ratio_*.
        figure = ", ".join(f"{k}={v}" for k, v in info.items() if k == "per_op_us" or (k.endswith("_per_s")
                           and not k.startswith("reference")))  # fmt: skip
        reference = ", ".join(
            f"{k}={v}"
            for k, v in info.items()
            if k.startswith(("ref_", "reference_")) and k != compare.REFERENCE_KEY
        )
        ratio = ", ".join(f"{k}={v}" for k, v in info.items() if k.startswith(("x_", "ratio_")))
        median_us = bench["stats"]["median"] * 1e6
        rows.append((bench["name"], figure or f"median {median_us:,.1f} µs", reference, ratio))
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--skip-http", action="store_true", help="Only the pytest-benchmark suites.")
    parser.add_argument(
        "--threshold", type=float, default=compare.DEFAULT_THRESHOLD,
        help="Regression when a cost grew by more than this fraction (default 0.25).",
    )  # fmt: skip
    parser.add_argument("--save-baseline", action="store_true", help="Replace this machine's baseline.")
    args, extra = parser.parse_known_args()
    # Every suite and harness below (and what they start) works in its own stores, never the user's.
    with sandbox_environment("bench"):
        return _run(args, extra)


def _run(args: argparse.Namespace, extra: list[str]) -> int:
    code, out = run_pytest_benchmarks(extra)
    if code != 0 or not out.is_file():
        print(f"pytest-benchmark exited {code}: a benchmark failed, no regression check")
        return code or 1
    run = compare.load(out)
    regressed = check_regressions(run, baseline_dir(), args.threshold, save=args.save_baseline)
    http_code = 0
    if not args.skip_http:
        http_code = subprocess.call([sys.executable, "-m", "bench.http"])
    print()
    print(f"{'benchmark':<38} {'figure':<26} {'reference':<52} ratio")
    for name, figure, reference, ratio in ratio_rows(run):
        print(f"{name:<38} {figure:<26} {reference:<52} {ratio}")
    print(f"saved: {out}")
    if regressed:
        print(f"REGRESSION: more than {args.threshold:.0%} slower than this machine's baseline: "
              + ", ".join(regressed))  # fmt: skip
        return 1
    return http_code


if __name__ == "__main__":
    sys.exit(script_main(main))

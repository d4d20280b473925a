"""The regression check of ``make bench``: this run's pytest-benchmark JSON against the same machine's
baseline.

Each benchmark's cost is its median; where the benchmark records a reference measured in the same run
(``extra_info["reference_s"]``, seconds of the reference operation), the cost is the median divided by it,
so a machine that is busier or slower today moves both and the ratio holds. A benchmark regresses when its
cost exceeds the baseline's by more than the threshold (``cost / baseline_cost > 1 + threshold``).

Baselines are keyed by machine (host name, CPU, core count, Python): a run on another machine, or in
another Python, finds no baseline and saves its own; it is never compared with foreign figures.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DEFAULT_THRESHOLD = 0.25
REFERENCE_KEY = "reference_s"


@dataclass(frozen=True)
class Cost:
    """One benchmark's figure for comparison: the median, and the same-run reference when it has one."""

    name: str
    median_s: float
    reference_s: float | None

    @property
    def value(self) -> float:
        """Median in units of the reference when there is one, else in seconds."""
        return self.median_s / self.reference_s if self.reference_s else self.median_s


@dataclass(frozen=True)
class Verdict:
    """One benchmark compared: ``slowdown`` is ``cost / baseline_cost`` (1.0 = as fast as the baseline)."""

    name: str
    slowdown: float
    relative_to_reference: bool
    regressed: bool


@dataclass(frozen=True)
class Comparison:
    """Every benchmark present in both runs, plus those the baseline does not have yet."""

    verdicts: list[Verdict]
    new: list[str]

    @property
    def regressions(self) -> list[Verdict]:
        return [v for v in self.verdicts if v.regressed]


def machine_key(machine_info: Mapping[str, Any]) -> str:
    """A file-name-safe key for pytest-benchmark's ``machine_info``: readable host name, then a hash of
    what makes timings comparable (host, architecture, CPU model and count, Python)."""
    cpu: Mapping[str, Any] = machine_info.get("cpu", {}) or {}
    parts = [
        machine_info.get("node", ""),
        machine_info.get("machine", ""),
        machine_info.get("system", ""),
        machine_info.get("python_implementation", ""),
        machine_info.get("python_version", ""),
        cpu.get("brand_raw", ""),
        cpu.get("count", ""),
    ]
    digest = hashlib.sha256(json.dumps(parts).encode()).hexdigest()[:12]
    node = re.sub(r"[^A-Za-z0-9_.-]", "_", str(machine_info.get("node", "") or "host"))[:40]
    return f"{node}-{digest}"


def costs(run: Mapping[str, Any]) -> dict[str, Cost]:
    """The costs of a pytest-benchmark JSON document (``--benchmark-json``), by benchmark full name."""
    out: dict[str, Cost] = {}
    for bench in run.get("benchmarks", []):
        info: Mapping[str, Any] = bench.get("extra_info", {}) or {}
        reference = info.get(REFERENCE_KEY)
        name = str(bench.get("fullname") or bench["name"])
        out[name] = Cost(
            name=name,
            median_s=float(bench["stats"]["median"]),
            reference_s=float(reference) if isinstance(reference, int | float) and reference > 0 else None,
        )
    return out


def compare(
    run: Mapping[str, Any], baseline: Mapping[str, Any], threshold: float = DEFAULT_THRESHOLD
) -> Comparison:
    """This run against the baseline; a benchmark regresses when its cost grew by more than ``threshold``.

    A benchmark that records a reference in only one of the two runs is compared by its median alone.
    """
    now, before = costs(run), costs(baseline)
    verdicts: list[Verdict] = []
    for name, cost in now.items():
        base = before.get(name)
        if base is None:
            continue
        relative = cost.reference_s is not None and base.reference_s is not None
        slowdown = cost.value / base.value if relative else cost.median_s / base.median_s
        verdicts.append(Verdict(name, slowdown, relative, slowdown > 1 + threshold))
    return Comparison(verdicts, [name for name in now if name not in before])


def merge_baseline(baseline: Mapping[str, Any], run: Mapping[str, Any]) -> dict[str, Any]:
    """The baseline with this run's figures for the benchmarks it did not have (kept ones are not moved:
    a baseline that followed every run would let a slow drift through)."""
    known = {str(b.get("fullname") or b["name"]) for b in baseline.get("benchmarks", [])}
    added = [b for b in run.get("benchmarks", []) if str(b.get("fullname") or b["name"]) not in known]
    return {**baseline, "benchmarks": [*baseline.get("benchmarks", []), *added]}


def format_comparison(comparison: Comparison, threshold: float) -> list[str]:
    width = max([len("benchmark"), *(len(v.name) for v in comparison.verdicts), *map(len, comparison.new)])
    lines = [f"{'benchmark':<{width}} {'vs baseline':>11}  basis"]
    for v in sorted(comparison.verdicts, key=lambda v: v.name):
        basis = "ratio to same-run reference" if v.relative_to_reference else "median"
        flag = f"  REGRESSION (> {1 + threshold:.2f}x)" if v.regressed else ""
        lines.append(f"{v.name:<{width}} {v.slowdown:>10.2f}x  {basis}{flag}")
    lines += [f"{name:<{width}} {'new':>11}  added to the baseline" for name in comparison.new]
    return lines


def load(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text())
    return data

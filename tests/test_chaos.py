"""The fault scenarios of ``make chaos``, shortened (``--fast`` timings), each as a test.

Each one injects its fault under load on the real stack and checks the invariants: nothing
acknowledged is lost, nothing duplicated, no overspend, and Redis = PostgreSQL = archive.
"""

from __future__ import annotations

import pytest

from loadtest.chaos import FAST, STACK_FAULTS, format_table, run_scenario, scenarios

pytestmark = [
    pytest.mark.kafka,
    pytest.mark.postgres,
    pytest.mark.redis,
    pytest.mark.spark,
    pytest.mark.slow,
    pytest.mark.single_node(
        reason="kills and restarts the single-node stack's processes; the cluster's faults: "
        "tests/devstack/test_cluster_chaos.py"
    ),
]


@pytest.mark.timeout(600)
@pytest.mark.parametrize(
    "name",
    [pytest.param(n, marks=pytest.mark.exclusive) if n in STACK_FAULTS else n for n in scenarios(FAST)],
)
async def test_scenario_keeps_the_invariants(name: str) -> None:
    result = await run_scenario(name, FAST, fast=True)
    print("\n" + format_table([result]))
    assert result.requests_per_s > 0
    assert result.lost == 0, result
    assert result.duplicated == 0, result
    assert result.overspend == 0, result
    assert result.conserved, result

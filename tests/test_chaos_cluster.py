"""The cluster scenarios of ``make chaos TOPOLOGY=cluster``, shortened (``--fast`` timings), each as a test
(marker ``cluster``: needs ``adplatform stack up --topology cluster``; minutes each, not in CI).

The same rig, checks and table as the single-node scenarios (``tests/test_chaos.py``): under load on two
ad-server hosts, nothing acknowledged is lost, nothing duplicated, no overspend, Redis = PostgreSQL =
archive (the archive runs on the Spark standalone master in every scenario), and the load held while the
fault lasted.
"""

from __future__ import annotations

import pytest

from loadtest.chaos import FAST, format_table
from loadtest.chaos_cluster import run_scenario, scenarios

pytestmark = [pytest.mark.cluster, pytest.mark.postgres, pytest.mark.slow]


@pytest.mark.timeout(900)
@pytest.mark.parametrize("name", list(scenarios(FAST)))
async def test_cluster_scenario_keeps_the_invariants(name: str) -> None:
    result = await run_scenario(name, FAST)
    print("\n" + format_table([result]))
    assert result.fault_requests_per_s > 0, result  # the load held while the fault lasted
    assert result.archive_micros is not None, result
    assert result.ok, result  # 0 lost, 0 duplicated, 0 overspend, conservation exact
